"""A server SIGKILLed in the middle of a bulk sync: after a restart nothing is half-written, the
dead run is closed `failed`, and the next run brings the database in line with Back Market.

The run is paced (a small request budget) and the last page is held in the simulator, so the
kill lands while batches are being written, after at least one was committed, before the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

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

LISTINGS = 600  # 12 pages of 50
PAGES = LISTINGS // 50


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Simulator]:
    simulator = Simulator(tmp_path, listings=LISTINGS, latency_ms=10).start()
    yield simulator
    simulator.stop()


async def test_a_bulk_sync_killed_mid_run_leaves_whole_batches_and_the_next_run_completes(
    proc_db_url: str, proc_engine: AsyncEngine, simulator: Simulator, tmp_path: Path
) -> None:
    linked = await link_catalogue(proc_engine, await simulator.pages())
    server = Server(
        tmp_path,
        proc_db_url,
        simulator.base_url,
        settings=PACED_SYNC,
    ).start()
    try:
        async with server.client() as http:
            run_id, last_page = await start_sync_holding_last_page(http, simulator, pages=PAGES)
            # A few batches are committed, the writer is busy with the next pages when the
            # kill comes.
            await wait_for(lambda: pages_saved(http, run_id, at_least=3), what="batches written")
        server.kill()

        # The dead process's run is as it was left: still `running`, some pages written.
        [dead] = await _run_rows(proc_engine, run_id)
        assert dead["status"] == "running"
        assert 3 <= dead["pages_fetched"] < PAGES
        await simulator.release(last_page)
        pages_written = await assert_whole_pages(proc_engine, linked, run_id=run_id)
        await assert_stock_invariants(proc_engine)
        # The run's progress record is saved in each batch's transaction: it counts exactly
        # the pages and rows that were committed.
        assert len(pages_written) == dead["pages_fetched"]
        assert len(await _history_of(proc_engine, run_id)) == dead["updated"]

        server.start()
        async with server.client() as http:
            closed = await run_of(http, run_id)
            assert closed["status"] == "failed"
            assert closed["finished_at"] is not None
            assert any("ended before the run finished" in e["message"] for e in closed["errors"])

            again = await http.post("/sync/bulk", params={"wait": "true"})
            assert again.status_code == 200, again.text
            run = again.json()["run"]
        assert run["status"] == "completed", run
        assert run["pages_fetched"] == PAGES
        written_before = sum(1 for item in linked if item.page in pages_written)
        assert run["updated"] == len(linked) - written_before
        assert run["unchanged"] == written_before
        await assert_matches_simulator(proc_engine, linked)
        await assert_stock_invariants(proc_engine)
        assert await _run_statuses(proc_engine) == {run_id: "failed", run["id"]: "completed"}
    finally:
        server.stop()


async def _run_rows(engine: AsyncEngine, run_id: int) -> list[dict[str, Any]]:
    return await rows(engine, "SELECT * FROM stock_sync_logs WHERE id = :id", id=run_id)


async def _history_of(engine: AsyncEngine, run_id: int) -> list[dict[str, Any]]:
    return await rows(
        engine, "SELECT * FROM marketplace_stock_history WHERE sync_run_id = :id", id=run_id
    )


async def _run_statuses(engine: AsyncEngine) -> dict[int, str]:
    found = await rows(engine, "SELECT id, status FROM stock_sync_logs")
    return {row["id"]: row["status"] for row in found}
