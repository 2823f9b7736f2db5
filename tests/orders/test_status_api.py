"""GET /sync/orders: enabled, interval, watermark and the last poll, as CONTRACT.md lists them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tests.orders.support import follow, polled


async def test_sync_orders_before_any_poll_says_off_with_no_watermark_and_no_last_poll(
    service: Any,
) -> None:
    response = await service.http.get("/sync/orders")

    assert response.status_code == 200
    body = response.json()
    assert {"enabled", "interval_seconds", "watermark", "last_poll"} <= body.keys()
    assert (body["enabled"], body["interval_seconds"]) == (False, 0)
    assert (body["watermark"], body["last_poll"]) == (None, None)


async def test_sync_orders_after_a_poll_shows_its_calls_orders_listings_and_the_watermark(
    service: Any,
) -> None:
    sim = service.simulator
    followed = await follow(service, 0)
    placed = sim.place_order(followed.listing_id, 1)
    outcome = await polled(service)

    body = (await service.http.get("/sync/orders")).json()

    last_poll = body["last_poll"]
    assert set(last_poll) == {"at", "calls", "orders", "listings_refreshed", "error"}
    assert (
        last_poll["calls"],
        last_poll["orders"],
        last_poll["listings_refreshed"],
        last_poll["error"],
    ) == (2, 1, 1, None)
    assert datetime.fromisoformat(last_poll["at"]) == datetime.fromisoformat(
        outcome.at.isoformat() + "+00:00"
    )
    # The newest date_modification read, in UTC.
    modified = sim.order(placed.order_id)["date_modification"]
    assert datetime.fromisoformat(body["watermark"]) == datetime.fromisoformat(modified)
