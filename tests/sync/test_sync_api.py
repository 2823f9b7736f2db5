"""The sync endpoints, one run at a time, start-up and shutdown, and the CLI's entry point."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from app.cli import sync_once
from app.config import Settings
from app.db import create_engine
from app.main import create_app
from app.models import RunTrigger, utcnow
from app.services.locks import NamedLocks
from app.services.sync import BulkSyncRunner, Run, SyncOptions, bulk_lock_name, run_scheduled_sync
from tests.sync.support import link, scalar, stock_row, sync, wait_for_run


async def insert_run(
    engine: Any, *, marketplace_id: int = 1, status: str = "completed", owner: str | None = None
) -> int:
    async with engine.begin() as conn:
        result = await conn.execute(
            sa.text(
                "INSERT INTO stock_sync_logs (marketplace_id, status, started_at, `trigger`, owner, "
                "markets) VALUES (:m, :status, :started, 'api', :owner, :markets)"
            ),
            {
                "m": marketplace_id,
                "status": status,
                "started": utcnow(),
                "owner": owner,
                "markets": '{"fr-fr": {"status": "running", "pages": 1, "listings": 50, "count": 120}}',
            },
        )
        return int(result.lastrowid)


# -- POST /sync/bulk -----------------------------------------------------------------------------


async def test_post_without_wait_answers_202_with_the_started_run_which_then_completes(
    service: Any,
) -> None:
    linked = await link(service.engine, service.simulator, 0, listed_stock=999)

    response = await service.http.post("/sync/bulk")

    assert response.status_code == 202
    started = response.json()["run"]
    assert (started["status"], started["trigger"], started["marketplace_id"]) == (
        "running",
        "api",
        1,
    )
    assert started["dry_run"] is False
    finished = await wait_for_run(service, started["id"])
    assert finished["status"] == "completed"
    assert finished["updated"] == 1
    assert (await stock_row(service.engine, linked.variation_id))["listed_stock"] != 999


async def test_post_with_wait_answers_200_with_the_finished_run(service: Any) -> None:
    response = await service.http.post(
        "/sync/bulk", params={"wait": "true"}, json={"marketplace_id": 1, "dry_run": True}
    )

    assert response.status_code == 200
    run = response.json()["run"]
    assert run["status"] == "completed"
    assert run["dry_run"] is True
    assert run["finished_at"] is not None
    assert set(run) >= {
        "id", "marketplace_id", "trigger", "status", "dry_run", "started_at", "finished_at",
        "duration_seconds", "api_calls", "pages_fetched", "pages_expected", "listings_seen",
        "matched", "updated", "unchanged", "skipped_newer", "not_found", "unknown_listings",
        "imported", "errors", "markets",
    }  # fmt: skip


async def test_second_trigger_while_a_run_is_going_gets_409_with_its_run_id(
    service: Any, runner: BulkSyncRunner
) -> None:
    hold = service.simulator.hold("/ws/listings", page=1)
    first = await service.http.post("/sync/bulk")
    run_id = first.json()["run"]["id"]

    # Answered before the first run has read anything: the lock and the row came before 202.
    again = await service.http.post("/sync/bulk")
    # Checked before the `wait=true` trigger, which would hang on the hold if it ran a sync.
    assert first.status_code == 202
    assert again.status_code == 409
    assert again.json() == {
        "detail": f"a bulk sync of marketplace 1 is already running (run {run_id})",
        "run_id": run_id,
    }
    waiting = await service.http.post("/sync/bulk", params={"wait": "true"})
    scheduled = await run_scheduled_sync(runner=runner)

    assert waiting.status_code == 409
    assert waiting.json()["run_id"] == run_id
    assert scheduled is None
    assert await scalar(service.engine, "SELECT COUNT(*) FROM stock_sync_logs") == 1

    service.simulator.release(hold)
    assert (await wait_for_run(service, run_id))["status"] == "completed"
    assert (await service.http.post("/sync/bulk", params={"wait": "true"})).status_code == 200


async def test_a_trigger_is_not_refused_by_a_run_that_has_finished_but_not_yet_let_go_of_its_lock(
    service: Any, runner: BulkSyncRunner
) -> None:
    """The gap between a run recording its end and its lock's release, held open: the run
    reads `completed`, the lock is still taken. A trigger then waits for the lock."""
    finished = await sync(service)
    releasing = asyncio.Event()

    async def hold_as_a_finishing_run() -> None:
        async with NamedLocks(service.engine).hold(bulk_lock_name(1), timeout=0):
            holding.set()
            await releasing.wait()

    holding = asyncio.Event()
    holder = asyncio.create_task(hold_as_a_finishing_run())
    await holding.wait()
    api = asyncio.create_task(service.http.post("/sync/bulk", params={"wait": "true"}))
    await asyncio.sleep(0.3)
    releasing.set()
    await holder
    answered = await api

    assert finished["status"] == "completed"
    assert answered.status_code == 200, answered.text
    assert answered.json()["run"]["status"] == "completed"
    assert answered.json()["run"]["id"] != finished["id"]


async def test_a_lock_held_with_no_run_going_on_is_waited_for_briefly_then_409_without_a_run_id(
    service: Any,
) -> None:
    async with NamedLocks(service.engine).hold(bulk_lock_name(1), timeout=0):
        response = await service.http.post("/sync/bulk")

    assert response.status_code == 409
    assert response.json()["run_id"] is None
    assert await scalar(service.engine, "SELECT COUNT(*) FROM stock_sync_logs") == 0


async def test_a_marketplace_not_configured_is_rejected_with_422(service: Any) -> None:
    refurbed = await service.http.post("/sync/bulk", json={"marketplace_id": 4})
    unknown = await service.http.post("/sync/bulk", json={"marketplace_id": 999})

    assert refurbed.status_code == 422
    assert refurbed.json()["detail"].startswith(
        "marketplace 4 is not configured on this service (configured: 1); set MARKETPLACE_4_KIND"
    )
    assert unknown.status_code == 422
    assert "marketplace 999 does not exist" in unknown.json()["detail"]
    assert await scalar(service.engine, "SELECT COUNT(*) FROM stock_sync_logs") == 0


@pytest.mark.parametrize(
    "body",
    [{"dry_run": "perhaps"}, {"marketplace_id": "one"}, {"import_everything": True}, [1]],
)
async def test_bad_body_is_rejected_with_422(service: Any, body: Any) -> None:
    response = await service.http.post("/sync/bulk", json=body)

    assert response.status_code == 422
    assert await scalar(service.engine, "SELECT COUNT(*) FROM stock_sync_logs") == 0


# -- GET /sync/runs ------------------------------------------------------------------------------


async def test_runs_are_listed_newest_first_and_filtered_by_marketplace(service: Any) -> None:
    older = await insert_run(service.engine, marketplace_id=4)
    first = await sync(service)
    second = await sync(service, dry_run=True)

    everything = (await service.http.get("/sync/runs")).json()["runs"]
    only_4 = (await service.http.get("/sync/runs", params={"marketplace_id": 4})).json()["runs"]
    newest = (await service.http.get("/sync/runs", params={"limit": 1})).json()["runs"]

    assert [run["id"] for run in everything] == [second["id"], first["id"], older]
    assert [run["id"] for run in only_4] == [older]
    assert newest == [second]


async def test_one_run_is_read_by_id_and_an_unknown_id_is_404(service: Any) -> None:
    run = await sync(service)

    found = await service.http.get(f"/sync/runs/{run['id']}")
    missing = await service.http.get(f"/sync/runs/{run['id'] + 1000}")

    assert found.status_code == 200
    assert found.json()["run"] == run
    assert missing.status_code == 404
    assert missing.json() == {"detail": f"sync run {run['id'] + 1000} not found"}


# -- start-up and shutdown -----------------------------------------------------------------------


def build_app(settings: Settings, simulator_app: FastAPI) -> tuple[FastAPI, httpx.AsyncClient]:
    backmarket_http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=simulator_app), base_url=settings.backmarket_base_url
    )
    return create_app(settings, backmarket_http=backmarket_http), backmarket_http


async def test_shutdown_during_a_run_leaves_it_failed_not_running(
    engine: Any,
    make_settings: Callable[..., Settings],
    settings_overrides: dict[str, Any],
    simulator_app: FastAPI,
) -> None:
    simulator = simulator_app.state.sim
    hold = simulator.hold("/ws/listings", page=2)
    app, backmarket_http = build_app(make_settings(**settings_overrides), simulator_app)
    async with LifespanManager(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://stock-sync.test"
        ) as http:
            run_id = (await http.post("/sync/bulk")).json()["run"]["id"]
            await simulator.wait_held(hold)
    simulator.release(hold)
    await backmarket_http.aclose()

    async with engine.connect() as conn:
        row = (
            (
                await conn.execute(
                    sa.text("SELECT * FROM stock_sync_logs WHERE id = :id"), {"id": run_id}
                )
            )
            .mappings()
            .one()
        )
    assert row["status"] == "failed"
    assert row["completed_at"] is not None
    assert "interrupted" in row["error_details"]
    # Pages are fetched concurrently: page 1, and page 3 when it arrived before the shutdown,
    # are recorded; page 2, held, never is.
    assert 1 <= row["pages_fetched"] < row["pages_expected"]


async def test_run_left_running_by_a_dead_process_is_closed_at_start_up(
    engine: Any,
    make_settings: Callable[..., Settings],
    simulator_app: FastAPI,
) -> None:
    dead = await insert_run(engine, status="running", owner="a-host-long-gone:4242")
    app, backmarket_http = build_app(make_settings(), simulator_app)
    async with LifespanManager(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://stock-sync.test"
        ) as http:
            closed = (await http.get(f"/sync/runs/{dead}")).json()["run"]
    await backmarket_http.aclose()

    assert closed["status"] == "failed"
    assert closed["finished_at"] is not None
    assert closed["errors"][-1]["kind"] == "abandoned"
    assert closed["markets"]["fr-fr"]["status"] == "failed"


async def test_running_row_written_by_the_seed_application_is_left_alone_at_start_up(
    engine: Any,
    make_settings: Callable[..., Settings],
    simulator_app: FastAPI,
) -> None:
    # The seed application's own rows name no owner process: not ours to close.
    seed_row = await insert_run(engine, status="running", owner=None)
    app, backmarket_http = build_app(make_settings(), simulator_app)
    async with LifespanManager(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://stock-sync.test"
        ) as http:
            left = (await http.get(f"/sync/runs/{seed_row}")).json()["run"]
            started = await http.post("/sync/bulk?wait=true")
    await backmarket_http.aclose()

    assert left["status"] == "running"
    assert started.status_code == 200


async def test_run_of_a_live_process_is_left_running_at_start_up(
    engine: Any,
    make_settings: Callable[..., Settings],
    simulator_app: FastAPI,
) -> None:
    async with AsyncExitStack() as stack:
        if engine.dialect.name in ("mysql", "mariadb"):
            # Another server runs it and holds the database lock, so start-up cannot take it.
            other = create_engine(engine.url.render_as_string(hide_password=False))
            stack.push_async_callback(other.dispose)
            await stack.enter_async_context(NamedLocks(other).hold(bulk_lock_name(1), timeout=0))
            owner = "another-server:1"
        else:
            # SQLite's lock is per process: a live process on this host (the CLI) runs it.
            owner = f"{socket.gethostname()}:{os.getppid()}"
        alive = await insert_run(engine, status="running", owner=owner)
        app, backmarket_http = build_app(make_settings(), simulator_app)
        stack.push_async_callback(backmarket_http.aclose)
        async with LifespanManager(app):
            pass

    status = await scalar(engine, "SELECT status FROM stock_sync_logs WHERE id = :id", id=alive)
    assert status == "running"


# -- the CLI's entry point -----------------------------------------------------------------------


async def test_cli_entry_runs_one_sync_with_the_cli_trigger_and_reports_progress(
    engine: Any,
    make_settings: Callable[..., Settings],
    settings_overrides: dict[str, Any],
    simulator_app: FastAPI,
) -> None:
    linked = await link(engine, simulator_app.state.sim, 0, listed_stock=999)
    settings = make_settings(**settings_overrides)
    seen: list[Run] = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=simulator_app), base_url=settings.backmarket_base_url
    ) as backmarket_http:
        run = await sync_once(
            settings,
            SyncOptions(trigger=RunTrigger.CLI, dry_run=False, import_unknown=False),
            progress=seen.append,
            backmarket_http=backmarket_http,
        )

    assert run.trigger == "cli"
    assert run.status == "completed"
    assert run.updated == 1
    # A report after each batch written (how pages group into batches depends on arrival).
    pages = [progress.pages_fetched for progress in seen]
    assert pages == sorted(pages)
    assert pages[0] >= 1
    assert seen[0].status == "running"
    assert seen[-1] == run
    assert (await stock_row(engine, linked.variation_id))["listed_stock"] != 999


async def test_finished_runs_are_counted_in_the_metrics_by_trigger_and_status(service: Any) -> None:
    def completed_api_runs(text: str) -> float:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "stock_sync_bulk_runs_total" and sample.labels == {
                    "marketplace_id": "1",
                    "trigger": "api",
                    "status": "completed",
                }:
                    return sample.value
        return 0.0

    before = completed_api_runs((await service.http.get("/metrics")).text)
    await sync(service)
    after = completed_api_runs((await service.http.get("/metrics")).text)

    assert after == before + 1
    assert (
        "stock_sync_bulk_run_duration_seconds_bucket" in (await service.http.get("/metrics")).text
    )
