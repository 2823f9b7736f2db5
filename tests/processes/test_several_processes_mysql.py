"""Two servers of two uvicorn workers each on one MariaDB/MySQL database, the schedule and the
orders watcher on in all four: each schedule slot gets exactly one bulk sync, additions spread
over both servers all land once, and one orders poll runs at a time.

One deployment for the three checks, because the schedule fires at whole minutes: the
additions and the watcher are checked while the test waits for the next slot (up to a minute).
SQLite's locks are per process by design, so this needs TEST_MYSQL_URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.processes.support import (
    Linked,
    Server,
    Simulator,
    assert_stock_invariants,
    link_catalogue,
    parse_time,
    rows,
    wait_for,
)

pytestmark = pytest.mark.processes

ADDITIONS = 20
SOLD = 3  # listings with an order each
WATCH_INTERVAL_S = 1


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Simulator]:
    simulator = Simulator(tmp_path, listings=100, latency_ms=20).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def two_servers(
    proc_mysql_only: str, simulator: Simulator, tmp_path: Path
) -> Iterator[list[Server]]:
    settings = {
        "SYNC_INTERVAL_MINUTES": "1",
        "ORDER_SYNC_INTERVAL_SECONDS": str(WATCH_INTERVAL_S),
    }
    servers = [
        Server(tmp_path, proc_mysql_only, simulator.base_url, workers=2, settings=settings)
        for _ in range(2)
    ]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


async def test_two_servers_of_two_workers_run_each_slot_once_add_once_and_poll_one_at_a_time(
    mysql_engine: AsyncEngine, simulator: Simulator, two_servers: list[Server]
) -> None:
    linked = await link_catalogue(mysql_engine, await simulator.pages(), skip_every=0)
    await wait_for(lambda: _schedulers_started(two_servers), what="four schedulers started")
    # The first slot every scheduler was armed for.
    slot = _next_minute(datetime.now(UTC))

    await _additions_spread_over_both_servers_land_once(simulator, two_servers, linked[0])
    await _one_orders_poll_at_a_time_and_each_line_acted_on_once(
        mysql_engine, simulator, [item for item in linked[1:] if item.quantity > 0][:SOLD]
    )
    await _each_scheduler_fires_and_one_run_covers_the_slot(mysql_engine, two_servers, slot)
    await assert_stock_invariants(mysql_engine)


async def _additions_spread_over_both_servers_land_once(
    simulator: Simulator, servers: list[Server], target: Linked
) -> None:
    start = await simulator.quantity(target.uuid)
    async with httpx.AsyncClient(timeout=60) as http:
        answers = await asyncio.gather(
            *(
                http.post(
                    f"{servers[n % 2].url}/variations/{target.variation_id}/add-quantity",
                    json={"quantity": 1},
                    headers={"Idempotency-Key": f"several-processes-{n}"},
                )
                for n in range(ADDITIONS)
            )
        )
    assert [a.status_code for a in answers] == [200] * ADDITIONS, [
        a.text for a in answers if a.status_code != 200
    ]
    assert sorted(a.json()["previous_quantity"] for a in answers) == list(
        range(start, start + ADDITIONS)
    )
    assert await simulator.quantity(target.uuid) == start + ADDITIONS
    assert len(await simulator.updates_of(target.uuid)) == ADDITIONS


async def _one_orders_poll_at_a_time_and_each_line_acted_on_once(
    engine: AsyncEngine, simulator: Simulator, sold: list[Linked]
) -> None:
    # A poll parked on its orders read holds the watcher's lock; the other workers' polls
    # (four schedulers, one a second each) must skip their turns, never read alongside it.
    hold = await simulator.hold("/ws/orders", method="GET")
    await simulator.wait_held(hold)
    await asyncio.sleep(3 * WATCH_INTERVAL_S)
    parked = await simulator.control("GET", f"/holds/{hold}")
    assert (parked["held"], parked["caught"]) == (1, 1), parked

    lines = [
        (
            await simulator.control(
                "POST", f"/listings/{item.uuid}/orders", json={"units": 1, "hidden": False}
            )
        )["line_id"]
        for item in sold
    ]
    await simulator.release(hold)

    async def all_lines_seen() -> bool:
        seen = await rows(engine, "SELECT line_id FROM backmarket_order_lines")
        return {row["line_id"] for row in seen} >= set(lines)

    await wait_for(all_lines_seen, what="the order lines acted on")
    await asyncio.sleep(2 * WATCH_INTERVAL_S)  # a few more polls read the same orders again
    acted = await rows(
        engine,
        "SELECT order_item_id, variation_id FROM marketplace_stock_history "
        "WHERE change_type = 'order_sync'",
    )
    assert sorted((row["order_item_id"], row["variation_id"]) for row in acted) == sorted(
        zip(lines, [item.variation_id for item in sold], strict=True)
    )
    for item in sold:
        [stock] = await rows(
            engine, "SELECT * FROM marketplace_stock WHERE variation_id = :v", v=item.variation_id
        )
        assert stock["listed_stock"] == await simulator.quantity(item.uuid) == item.quantity - 1


async def _each_scheduler_fires_and_one_run_covers_the_slot(
    engine: AsyncEngine, servers: list[Server], slot: datetime
) -> None:
    window_end = slot + timedelta(seconds=30)

    async def slot_run_finished() -> list[dict[str, Any]] | None:
        found = await rows(
            engine,
            "SELECT * FROM stock_sync_logs WHERE `trigger` = 'schedule' "
            "AND started_at >= :start AND started_at < :end",
            start=slot.replace(tzinfo=None),
            end=window_end.replace(tzinfo=None),
        )
        done = found and all(run["status"] != "running" for run in found)
        return found if done and _fired(servers, slot, window_end) >= 4 else None

    wait = (slot - datetime.now(UTC)).total_seconds()
    scheduled = await wait_for(slot_run_finished, timeout_s=wait + 30, what="the slot's run")
    assert [run["status"] for run in scheduled] == ["completed"], scheduled
    assert _fired(servers, slot, window_end) == 4


def _fired(servers: list[Server], start: datetime, end: datetime) -> int:
    """Scheduled-sync log lines of the slot: one per worker, whether it ran or skipped."""
    return sum(
        1
        for server in servers
        for event in server.log_events()
        if event["message"].startswith("scheduled bulk sync")
        and start <= parse_time(event["time"]) < end
    )


async def _schedulers_started(servers: list[Server]) -> bool:
    started = [
        sum(1 for e in server.log_events() if e["message"].startswith("sync schedule: every"))
        for server in servers
    ]
    return started == [2, 2]


def _next_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
