"""Shutdown while a scheduled poll waits inside a SQLite statement: the poll is cancelled once,
by the watcher's shutdown, and nothing is left pending on the loop.

Cancelling an aiosqlite statement a second time while SQLAlchemy closes its connection leaves
that close waiting forever, and `asyncio.run` then never returns. The steps run in the order
the lifespan runs them: the scheduler's shutdown cancels the job, the watcher's shutdown
waits its grace then cancels, the engine is disposed.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from app.services.orders import watcher as watcher_module

# Bounds of a shutdown that ends, not speed claims.
LEFTOVER_WAIT_S = 10.0
WRITER_HOLDS_S = 1.5


def hold_write_lock(database: str, *, holding: threading.Event, release: threading.Event) -> None:
    """Another writer: holds SQLite's write lock until `release`, so the poll's first write
    waits in the busy handler (a statement the poll's task awaits)."""
    other = sqlite3.connect(database, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        holding.set()
        release.wait()
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_shutdown_during_a_poll_waiting_in_a_sqlite_statement_leaves_nothing_pending(
    service: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url = make_url(service.settings.database_url)
    if not url.drivername.startswith("sqlite"):
        pytest.skip("SQLite's busy handler; MariaDB's cancelled queries end with the connection")
    monkeypatch.setattr(watcher_module, "SHUTDOWN_GRACE_SECONDS", 0.2)
    watcher = service.app.state.container.watcher
    holding, release = threading.Event(), threading.Event()
    writer = threading.Thread(
        target=hold_write_lock,
        args=(url.database,),
        kwargs={"holding": holding, "release": release},
    )
    writer.start()
    tasks_before = asyncio.all_tasks()
    try:
        assert await asyncio.to_thread(holding.wait, 5.0)
        job = asyncio.create_task(watcher._scheduled_poll(), name="the scheduler's job")
        await asyncio.sleep(0.5)  # the poll reaches its first write and waits for the lock
        assert watcher._scheduled is not None and not watcher._scheduled.done()

        caplog.set_level(logging.INFO, logger=watcher_module.__name__)
        threading.Timer(WRITER_HOLDS_S, release.set).start()
        # What AsyncIOScheduler.shutdown does to a running job (without waiting for it), then
        # the lifespan's next step.
        job.cancel()
        await asyncio.wait_for(watcher.shutdown(), timeout=LEFTOVER_WAIT_S)
        await asyncio.wait([job], timeout=LEFTOVER_WAIT_S)
        await service.engine.dispose()

        leftover = asyncio.all_tasks() - tasks_before - {asyncio.current_task()}
        if leftover:
            await asyncio.wait(leftover, timeout=LEFTOVER_WAIT_S)
        pending = [task for task in leftover if not task.done()]
        for task in pending:
            task.cancel()  # so that the test's own loop can close
        assert pending == [], f"left pending after shutdown: {pending}"
        assert "orders poll interrupted by shutdown" in caplog.messages
    finally:
        release.set()
        await asyncio.to_thread(writer.join)
