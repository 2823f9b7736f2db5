"""The watcher writes through the one stock writer with the newer-value guard: a value written
by someone else after the watcher's reads were sent is not overwritten by them."""

from __future__ import annotations

import asyncio
from typing import Any

from app.models import ChangeType
from app.services.stock import StockObservation, write_observations
from tests.orders.support import follow, listed_stock, order_sync_history, polled, seen_lines


async def test_a_stock_value_written_while_the_watcher_reads_the_listing_is_kept(
    service: Any,
) -> None:
    sim = service.simulator
    followed = await follow(service, 0, quantity=5)
    placed = sim.place_order(followed.listing_id, 1)
    hold = sim.hold("/ws/listings/", method="GET")
    poll = asyncio.create_task(polled(service))
    await sim.wait_held(hold)

    # A refresh answered meanwhile: newer than whatever the held read will bring.
    async with service.engine.begin() as conn:
        await write_observations(
            conn,
            marketplace_id=1,
            observations=[StockObservation(variation_id=followed.variation_id, quantity=7)],
            change_type=ChangeType.REFRESH,
        )
    sim.release(hold)
    outcome = await poll

    assert outcome.error is None
    assert await listed_stock(service.engine, followed.variation_id) == (7, 7)
    assert await order_sync_history(service.engine, followed.variation_id) == []
    # The line is acted on all the same: the next poll does not read the listing again.
    assert await seen_lines(service.engine) == {placed.line_id: 1}
