"""SIGTERM while the orders watcher polls or a bulk sync runs: the server ends within a few
seconds on both databases, and what it was doing is left for the next start to finish.

The bound (10 s) is a correctness bound, a shutdown that ends, not a speed claim.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.processes.support import (
    PACED_SYNC,
    Server,
    Simulator,
    link_catalogue,
    pages_saved,
    run_of,
    start_sync_holding_last_page,
    wait_for,
)

pytestmark = pytest.mark.processes

LISTINGS = 300  # 6 pages of 50
PAGES = LISTINGS // 50
EXIT_BOUND_S = 10.0


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Simulator]:
    simulator = Simulator(tmp_path, listings=LISTINGS, latency_ms=5).start()
    yield simulator
    simulator.stop()


def terminate_and_time_exit(server: Server) -> float:
    """SIGTERM to the server's process group; seconds until it exited (fails past the bound)."""
    assert server.process is not None and server.process.popen is not None
    popen = server.process.popen
    sent = time.monotonic()
    server.process._signal_group(signal.SIGTERM)
    try:
        popen.wait(timeout=EXIT_BOUND_S)
    except subprocess.TimeoutExpired:
        server.kill()
        raise AssertionError(
            f"still running {EXIT_BOUND_S} s after SIGTERM:\n{server.process.log()[-4000:]}"
        ) from None
    return time.monotonic() - sent


async def test_sigterm_during_an_orders_poll_ends_the_server(
    proc_db_url: str, proc_engine: AsyncEngine, simulator: Simulator, tmp_path: Path
) -> None:
    await link_catalogue(proc_engine, await simulator.pages())
    # The watcher at its default: its first poll starts with the server, and its read of the
    # feed is held in the simulator.
    feed = await simulator.hold("/ws/orders", method="GET")
    server = Server(tmp_path, proc_db_url, simulator.base_url, settings={}).start()
    try:
        await simulator.wait_held(feed)

        terminate_and_time_exit(server)

        # A graceful stop: the lifespan's shutdown ran to its end (uvicorn then re-raises the
        # signal, so the exit status is -SIGTERM).
        assert server.process is not None
        assert "Application shutdown complete" in server.process.log()
    finally:
        await simulator.release(feed)
        server.stop()


async def test_sigterm_during_a_bulk_sync_ends_the_server_and_the_run_is_closed(
    proc_db_url: str, proc_engine: AsyncEngine, simulator: Simulator, tmp_path: Path
) -> None:
    await link_catalogue(proc_engine, await simulator.pages())
    server = Server(tmp_path, proc_db_url, simulator.base_url, settings=PACED_SYNC).start()
    try:
        async with server.client() as http:
            run_id, last_page = await start_sync_holding_last_page(http, simulator, pages=PAGES)
            await wait_for(lambda: pages_saved(http, run_id, at_least=2), what="batches written")

        terminate_and_time_exit(server)

        assert server.process is not None
        assert "Application shutdown complete" in server.process.log()
        await simulator.release(last_page)
        server.start()
        async with server.client() as http:
            closed = await run_of(http, run_id)
        assert closed["status"] == "failed"
    finally:
        server.stop()
