"""Replicas share the feed: a scheduled poll skips its turn when another process's poll
succeeded less than 0.8 of an interval ago, so N replicas read the feed about once per
interval. A poll asked for directly, a failed last poll or an old one never make it skip."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from prometheus_client import REGISTRY

from app.models import utcnow
from app.services.locks import NamedLocks
from app.services.orders import ORDERS_LOCK
from tests.orders.support import (
    ORDERS_READ,
    another_process,
    calls,
    follow,
    listed_stock,
    polled,
)

INTERVAL_S = 60


def skipped_recent() -> float:
    labels = {"marketplace_id": "1", "outcome": "skipped_recent"}
    value = REGISTRY.get_sample_value("stock_sync_order_polls_total", labels)
    return value or 0.0


def replica_settings(service: Any) -> Any:
    return service.settings.model_copy(update={"order_sync_interval_seconds": INTERVAL_S})


async def test_a_scheduled_poll_just_after_another_replicas_poll_sends_nothing(
    service: Any, simulator_app: FastAPI
) -> None:
    sim = service.simulator
    followed = await follow(service, 0, quantity=8)
    await polled(service)
    sim.reset_stats()
    sim.place_order(followed.listing_id, 3)

    skipped_before = skipped_recent()

    async with another_process(replica_settings(service), simulator_app) as replica:
        await replica.watcher._scheduled_poll()
        skipped_calls = sim.stats()["total_requests"]
        skipped = skipped_recent() - skipped_before
        # Asked for directly (a person, a test), the poll runs whatever the last one was.
        asked = await polled(replica)

    assert (skipped, skipped_calls) == (1, 0)
    assert asked.new_lines == 1
    assert await listed_stock(service.engine, followed.variation_id) == (5, 5)


async def test_a_scheduled_poll_after_a_failed_poll_reads_the_feed(
    service: Any, simulator_app: FastAPI
) -> None:
    sim = service.simulator
    followed = await follow(service, 0, quantity=8)
    sim.place_order(followed.listing_id, 2)
    sim.fail_next("/ws/orders", count=10, kind="503")
    failed = await polled(service)
    sim.clear_faults()
    sim.reset_stats()

    async with another_process(replica_settings(service), simulator_app) as replica:
        await replica.watcher._scheduled_poll()

    assert failed.error is not None
    assert calls(sim, ORDERS_READ) == 1
    assert await listed_stock(service.engine, followed.variation_id) == (6, 6)


async def test_a_scheduled_poll_reads_the_feed_once_the_last_poll_is_most_of_an_interval_old(
    service: Any, simulator_app: FastAPI
) -> None:
    sim = service.simulator
    await follow(service, 0, quantity=8)
    await polled(service)
    async with service.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE backmarket_order_watch SET last_poll_at = :at"),
            {"at": utcnow() - timedelta(seconds=INTERVAL_S * 0.8 + 1)},
        )
    sim.reset_stats()

    async with another_process(replica_settings(service), simulator_app) as replica:
        await replica.watcher._scheduled_poll()

    assert calls(sim, ORDERS_READ) == 1


async def test_a_scheduled_poll_waits_for_the_lock_of_a_failed_poll_that_has_not_yet_let_go(
    service: Any, simulator_app: FastAPI
) -> None:
    """The gap between a poll saving its (failed) outcome and releasing the orders lock, held
    open: the watch row says the poll is over, the lock is still taken."""
    sim = service.simulator
    followed = await follow(service, 0, quantity=8)
    sim.place_order(followed.listing_id, 2)
    sim.fail_next("/ws/orders", count=10, kind="503")
    failed = await polled(service)
    sim.clear_faults()
    sim.reset_stats()
    holding, releasing = asyncio.Event(), asyncio.Event()

    async def hold_as_a_finishing_poll() -> None:
        async with NamedLocks(service.engine).hold(ORDERS_LOCK, timeout=0):
            holding.set()
            await releasing.wait()

    holder = asyncio.create_task(hold_as_a_finishing_poll())
    await holding.wait()
    async with another_process(replica_settings(service), simulator_app) as replica:
        scheduled = asyncio.create_task(replica.watcher._scheduled_poll())
        await asyncio.sleep(0.3)
        releasing.set()
        await holder
        await scheduled

    assert failed.error is not None
    assert calls(sim, ORDERS_READ) == 1
    assert await listed_stock(service.engine, followed.variation_id) == (6, 6)
