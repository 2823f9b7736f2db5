"""One poll at a time across processes: two containers (engines, clients, locks of their own)
on the same MariaDB/MySQL database poll at once. SQLite's lock is per process by design (the
embedded default runs one process), so this needs TEST_MYSQL_URL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI

from tests.orders.support import (
    another_process,
    follow,
    listed_stock,
    order_sync_history,
    poll,
    seen_lines,
)


@pytest.fixture
def mysql_url(db_url: str) -> str:
    if not db_url.startswith("mysql"):
        pytest.skip("one poll across processes is a database lock on MySQL/MariaDB only")
    return db_url


async def test_two_processes_polling_at_once_run_one_poll_and_apply_the_sale_once(
    mysql_url: str, service: Any, simulator_app: FastAPI
) -> None:
    sim = service.simulator
    followed = await follow(service, 0, quantity=5)
    placed = sim.place_order(followed.listing_id, 2)
    # The orders read is held, so whichever poll got the lock is still polling when the
    # other one asks for it.
    hold = sim.hold("/ws/orders")

    async with (
        another_process(service.settings, simulator_app) as one,
        another_process(service.settings, simulator_app) as other,
    ):
        polls = [asyncio.create_task(poll(one)), asyncio.create_task(poll(other))]
        await sim.wait_held(hold)
        done, _ = await asyncio.wait(polls, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        sim.release(hold)
        outcomes = await asyncio.gather(*polls)

    assert len(done) == 1, "neither poll gave way while the other was polling"
    assert [outcome is None for outcome in outcomes].count(True) == 1
    [ran] = [outcome for outcome in outcomes if outcome is not None]
    assert (ran.listings_refreshed, ran.error) == (1, None)
    assert hold.caught == 1
    assert await listed_stock(service.engine, followed.variation_id) == (3, 3)
    assert [
        (row["quantity_change"], row["order_item_id"])
        for row in await order_sync_history(service.engine, followed.variation_id)
    ] == [(-2, placed.line_id)]
    assert await seen_lines(service.engine) == {placed.line_id: 1}
