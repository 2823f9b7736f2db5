"""A poll seen twice is harmless, and a poll cut short is redone: the watermark and the lines
acted on move only with the poll's stock writes, so a restart neither skips nor repeats work."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.services import sales
from app.services.orders import poll_orders
from tests.orders.support import (
    ORDERS_READ,
    another_process,
    calls,
    follow,
    history_count,
    listed_stock,
    order_sync_history,
    polled,
    seen_lines,
    watermark,
)


async def test_a_poll_repeated_over_the_same_orders_makes_one_call_and_writes_nothing(
    service: Any,
) -> None:
    sim = service.simulator
    followed = await follow(service, 0, quantity=8)
    sim.place_order(followed.listing_id, 3)
    await polled(service)
    history_before = await history_count(service.engine)
    watermark_before = await watermark(service)
    sim.reset_stats()

    outcome = await polled(service)

    # The overlap read the same order again, and nothing came of it but the one page.
    assert outcome.orders == 1
    assert sim.stats()["total_requests"] == calls(sim, ORDERS_READ) == 1
    assert (outcome.calls, outcome.new_lines, outcome.listings_refreshed) == (1, 0, 0)
    assert await history_count(service.engine) == history_before
    assert await listed_stock(service.engine, followed.variation_id) == (5, 5)
    status = (await service.http.get("/sync/orders")).json()
    assert status["last_poll"]["calls"] == 1
    assert await watermark(service) == watermark_before


async def test_a_poll_with_no_orders_at_all_costs_one_call(service: Any) -> None:
    await follow(service, 0)

    outcome = await polled(service)

    assert service.simulator.stats()["total_requests"] == 1
    assert (outcome.calls, outcome.orders, outcome.error) == (1, 0, None)


async def test_a_poll_failing_on_a_listing_read_is_redone_whole_after_a_restart(
    service: Any, simulator_app: FastAPI
) -> None:
    sim = service.simulator
    one, other = await follow(service, 0, quantity=10), await follow(service, 1, quantity=10)
    earlier = sim.place_order(one.listing_id, 1)
    await polled(service)
    watermark_before = await watermark(service)
    sold = sim.place_order(one.listing_id, 2)
    sold_other = sim.place_order(other.listing_id, 1)
    sim.fail_next("/ws/listings/", count=10, kind="500", method="GET")

    failed = await polled(service)
    sim.clear_faults()

    assert failed.error is not None
    assert await watermark(service) == watermark_before
    assert await seen_lines(service.engine) == {earlier.line_id: 1}
    assert await listed_stock(service.engine, one.variation_id) == (9, 9)
    assert await listed_stock(service.engine, other.variation_id) == (10, 10)

    async with another_process(service.settings, simulator_app) as restarted:
        outcome = await polled(restarted)

    assert (outcome.new_lines, outcome.listings_refreshed, outcome.error) == (2, 2, None)
    assert await listed_stock(service.engine, one.variation_id) == (7, 7)
    assert await listed_stock(service.engine, other.variation_id) == (9, 9)
    assert [
        (row["quantity_change"], row["order_item_id"])
        for row in await order_sync_history(service.engine, one.variation_id)
    ] == [(-1, earlier.line_id), (-2, sold.line_id)]
    assert [
        (row["quantity_change"], row["order_item_id"])
        for row in await order_sync_history(service.engine, other.variation_id)
    ] == [(-1, sold_other.line_id)]
    assert set(await seen_lines(service.engine)) == {
        earlier.line_id,
        sold.line_id,
        sold_other.line_id,
    }
    moved = await watermark(service)
    assert moved is not None and watermark_before is not None and moved > watermark_before


async def test_a_poll_whose_write_fails_keeps_nothing_and_the_next_process_applies_it_once(
    service: Any, simulator_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = service.simulator
    followed = await follow(service, 2, quantity=6)
    placed = sim.place_order(followed.listing_id, 2)
    history_before = await history_count(service.engine)

    async def database_gone(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the database went away in the middle of the poll's transaction")

    with monkeypatch.context() as patched:
        # After the stock write, in the same transaction: the write must go with it.
        patched.setattr(sales, "record_lines", database_gone)
        with pytest.raises(RuntimeError):
            await service.app.state.container.watcher.poll()

    assert await history_count(service.engine) == history_before
    assert await listed_stock(service.engine, followed.variation_id) == (6, 6)
    assert await seen_lines(service.engine) == {}
    assert await watermark(service) is None

    async with another_process(service.settings, simulator_app) as restarted:
        outcome = await polled(restarted)
        again = await polled(restarted)

    assert (outcome.listings_refreshed, again.listings_refreshed) == (1, 0)
    assert await listed_stock(service.engine, followed.variation_id) == (4, 4)
    assert [
        (row["quantity_change"], row["order_item_id"])
        for row in await order_sync_history(service.engine, followed.variation_id)
    ] == [(-2, placed.line_id)]
    assert await seen_lines(service.engine) == {placed.line_id: 1}


async def test_orders_placed_after_a_quiet_first_poll_are_read_however_long_the_gap(
    service: Any,
) -> None:
    """Before the first order there is no order date to keep; the next poll (here with no
    overlap at all, as after a downtime longer than the overlap) still starts no later than
    where the quiet poll read from."""
    sim = service.simulator
    ctx = service.app.state.container.ctx
    followed = await follow(service, 0, quantity=5)
    marketplace = ctx.marketplaces.get(1)
    quiet = await poll_orders(ctx, marketplace, overlap=timedelta(0))
    assert quiet is not None and quiet.orders == 0

    placed = sim.place_order(followed.listing_id, 1)
    outcome = await poll_orders(ctx, marketplace, overlap=timedelta(0))

    assert outcome is not None and outcome.listings_refreshed == 1
    assert await seen_lines(service.engine) == {placed.line_id: 1}
    assert await listed_stock(service.engine, followed.variation_id) == (4, 4)


async def test_a_poll_forgets_additions_windows_older_than_two_days_and_keeps_recent_ones(
    service: Any,
) -> None:
    followed = await follow(service, 0)
    now = datetime.now(UTC).replace(tzinfo=None)
    async with service.engine.begin() as conn:
        for started in (now - sales.KEEP_ADDITIONS_FOR - timedelta(hours=1), now):
            await sales.record_addition(
                conn,
                variation_id=followed.variation_id,
                marketplace_id=1,
                listing_ref=followed.id,
                read_sent_at=started,
                answered_at=started + timedelta(seconds=1),
                added=1,
                idempotency_key=None,
            )

    await polled(service)

    async with service.engine.connect() as conn:
        kept = (await conn.execute(sa.select(sales.addition_table.c.window_start))).scalars().all()
    assert [moment > now - timedelta(minutes=1) for moment in kept] == [True]
