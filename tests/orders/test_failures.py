"""A failing orders call loses nothing: the error is shown, the watermark stays, and the next
poll reads the same orders and applies the sale."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.orders.support import follow, listed_stock, order_sync_history, polled, watermark


@pytest.mark.parametrize("kind", ["500", "timeout"])
async def test_a_failing_orders_call_is_shown_keeps_the_watermark_and_is_retried_next_poll(
    service: Any, kind: str
) -> None:
    sim = service.simulator
    followed = await follow(service, 0, quantity=10)
    sim.place_order(followed.listing_id, 1)
    await polled(service)
    watermark_before = await watermark(service)
    assert watermark_before is not None
    placed = sim.place_order(followed.listing_id, 2)
    sim.fail_next("/ws/orders", count=10, kind=kind)  # more than the client's attempts

    failed = await polled(service)
    sim.clear_faults()
    status = (await service.http.get("/sync/orders")).json()

    assert failed.error is not None
    assert status["last_poll"]["error"] == failed.error
    assert status["last_poll"]["calls"] == service.settings.backmarket_max_attempts
    assert status["last_poll"]["listings_refreshed"] == 0
    assert await watermark(service) == watermark_before
    assert await listed_stock(service.engine, followed.variation_id) == (9, 9)

    outcome = await polled(service)
    status = (await service.http.get("/sync/orders")).json()

    assert (outcome.error, outcome.listings_refreshed) == (None, 1)
    assert status["last_poll"]["error"] is None
    moved = await watermark(service)
    assert moved is not None and watermark_before is not None and moved > watermark_before
    assert await listed_stock(service.engine, followed.variation_id) == (7, 7)
    assert [
        (row["quantity_change"], row["order_item_id"])
        for row in await order_sync_history(service.engine, followed.variation_id)
    ][-1] == (-2, placed.line_id)


async def test_a_failing_first_poll_keeps_where_it_read_from_so_nothing_before_is_skipped(
    service: Any,
) -> None:
    sim = service.simulator
    followed = await follow(service, 0, quantity=10)
    sim.fail_next("/ws/orders", count=10, kind="503")

    failed = await polled(service)
    sim.clear_faults()
    placed = sim.place_order(followed.listing_id, 1)

    assert failed.error is not None
    status = (await service.http.get("/sync/orders")).json()
    kept = await watermark(service)
    assert kept is not None and kept < datetime.fromisoformat(status["last_poll"]["at"])
    outcome = await polled(service)
    assert outcome.listings_refreshed == 1
    assert [
        row["order_item_id"]
        for row in await order_sync_history(service.engine, followed.variation_id)
    ] == [placed.line_id]
