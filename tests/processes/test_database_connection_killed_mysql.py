"""The database kills the service's connections in the middle of a bulk sync (`KILL CONNECTION`,
as a failover, a DBA or `wait_timeout` would): the run ends `failed` with the reason, its lock
is free, no batch is half-written, and the next run completes. MariaDB/MySQL only: SQLite has
no connections to kill."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import create_engine
from app.services.locks.named import server_lock_name
from app.services.sync.stale import bulk_lock_name
from tests.conftest import TEST_MYSQL_URL
from tests.processes.support import (
    PACED_SYNC,
    Server,
    Simulator,
    assert_matches_simulator,
    assert_stock_invariants,
    assert_whole_pages,
    link_catalogue,
    pages_saved,
    rows,
    run_of,
    start_sync_holding_last_page,
    wait_for,
)

pytestmark = pytest.mark.processes

LISTINGS = 600
PAGES = LISTINGS // 50


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Simulator]:
    simulator = Simulator(tmp_path, listings=LISTINGS, latency_ms=10).start()
    yield simulator
    simulator.stop()


@pytest.mark.parametrize("killed", ["lock_connection", "every_connection"])
async def test_a_bulk_sync_whose_database_connections_are_killed_fails_cleanly(
    killed: str,
    proc_mysql_only: str,
    mysql_engine: AsyncEngine,
    simulator: Simulator,
    tmp_path: Path,
) -> None:
    database = make_url(proc_mysql_only).database
    lock = server_lock_name(bulk_lock_name(1), database=database)
    linked = await link_catalogue(mysql_engine, await simulator.pages())
    server = Server(
        tmp_path,
        proc_mysql_only,
        simulator.base_url,
        settings=PACED_SYNC,
    ).start()
    try:
        async with server.client() as http:
            run_id, last_page = await start_sync_holding_last_page(http, simulator, pages=PAGES)
            await wait_for(lambda: pages_saved(http, run_id, at_least=2), what="batches written")
            victims = await _kill_connections(killed, database=database, lock=lock)
            assert victims, "no connection of the service found"

            run = await wait_for(lambda: _finished(http, run_id), what="the run's end")
            assert run["status"] == "failed", run
            assert run["errors"], run
            # The driver's error and the statement's start, not kilobytes of SQL and parameters.
            assert all(len(error["message"]) < 400 for error in run["errors"]), run["errors"]
            assert await _lock_holder(lock) is None
            await simulator.release(last_page)

            pages_written = await assert_whole_pages(mysql_engine, linked, run_id=run_id)
            assert pages_written
            history = await rows(
                mysql_engine,
                "SELECT id FROM marketplace_stock_history WHERE sync_run_id = :id",
                id=run_id,
            )
            assert len(history) == run["updated"]
            await assert_stock_invariants(mysql_engine)

            again = await http.post("/sync/bulk", params={"wait": "true"})
            assert again.status_code == 200, again.text
            assert again.json()["run"]["status"] == "completed", again.json()
        await assert_matches_simulator(mysql_engine, linked)
        await assert_stock_invariants(mysql_engine)
    finally:
        server.stop()


async def _finished(http: httpx.AsyncClient, run_id: int) -> dict[str, Any] | None:
    run = await run_of(http, run_id)
    return run if run["status"] != "running" else None


async def _on_server(sql: str, **params: Any) -> list[Any]:
    """A statement on a connection of its own, to TEST_MYSQL_URL's database (not the service's,
    so that it is never among the connections it kills)."""
    assert TEST_MYSQL_URL is not None
    engine = create_engine(TEST_MYSQL_URL)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(sa.text(sql), params)
            return list(result) if result.returns_rows else []
    finally:
        await engine.dispose()


async def _lock_holder(lock: str) -> int | None:
    [(holder,)] = await _on_server("SELECT IS_USED_LOCK(:name)", name=lock)
    return None if holder is None else int(holder)


async def _kill_connections(killed: str, *, database: str | None, lock: str) -> list[int]:
    if killed == "lock_connection":
        holder = await _lock_holder(lock)
        victims = [] if holder is None else [holder]
    else:
        found = await _on_server(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = :db AND ID <> CONNECTION_ID()",
            db=database,
        )
        victims = [int(row[0]) for row in found]
    killed_ids = []
    for victim in victims:
        try:
            await _on_server(f"KILL CONNECTION {victim}")
        except sa.exc.OperationalError as exc:
            # 1094 Unknown thread id: the connection ended by itself since it was listed (the
            # orders watcher's, between two polls).
            if "1094" not in str(exc.orig):
                raise
            continue
        killed_ids.append(victim)
    return killed_ids
