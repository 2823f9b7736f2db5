"""The scheduled bulk sync: its next run time, its job options, what a run of it does."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from app.services.locks import NamedLocks
from app.services.sync import (
    JOB_ID,
    BulkSyncRunner,
    SyncScheduler,
    bulk_lock_name,
    run_scheduled_sync,
)
from tests.sync.support import scalar, wait_for_run

SIX_HOURS = {"backmarket_requests_per_10s": 10_000, "sync_interval_minutes": 360}


def scheduler_of(service: Any) -> SyncScheduler:
    scheduler: SyncScheduler = service.app.state.container.scheduler
    return scheduler


def is_six_hour_slot(moment: datetime) -> bool:
    return moment.hour % 6 == 0 and (moment.minute, moment.second, moment.microsecond) == (0, 0, 0)


@pytest.mark.parametrize("settings_overrides", [SIX_HOURS])
async def test_next_scheduled_run_is_the_next_aligned_slot_and_visible(service: Any) -> None:
    now = datetime.now(UTC)

    schedule = (await service.http.get("/sync/schedule")).json()
    ready = (await service.http.get("/readyz")).json()

    next_run = datetime.fromisoformat(schedule["next_run_at"]).astimezone(UTC)
    # Every process computes the same slots: 00:00, 06:00, 12:00 and 18:00 UTC for 360 min.
    assert is_six_hour_slot(next_run)
    assert now < next_run <= now + timedelta(hours=6)
    assert schedule["enabled"] is True
    assert schedule["interval_minutes"] == 360
    assert schedule["job_id"] == JOB_ID
    assert ready["schedule"]["next_run_at"] == schedule["next_run_at"]


async def test_interval_zero_turns_the_schedule_off(service: Any) -> None:
    schedule = (await service.http.get("/sync/schedule")).json()

    assert schedule["enabled"] is False
    assert schedule["next_run_at"] is None
    assert scheduler_of(service).scheduler.get_job(JOB_ID) is None


@pytest.mark.parametrize("settings_overrides", [SIX_HOURS])
async def test_scheduled_job_coalesces_missed_runs_and_never_overlaps_itself(service: Any) -> None:
    job = scheduler_of(service).scheduler.get_job(JOB_ID)

    assert job.coalesce is True
    assert job.max_instances == 1
    assert job.misfire_grace_time == 6 * 3600
    assert job.trigger.interval == timedelta(hours=6)


@pytest.mark.parametrize("settings_overrides", [SIX_HOURS])
async def test_due_scheduled_job_runs_a_sync_with_the_schedule_trigger_then_waits_an_interval(
    service: Any,
) -> None:
    scheduler = scheduler_of(service).scheduler
    scheduler.modify_job(JOB_ID, next_run_time=datetime.now(UTC))
    scheduler.wakeup()

    async def first_run() -> dict[str, Any]:
        for _ in range(2000):
            runs = (await service.http.get("/sync/runs")).json()["runs"]
            if runs:
                return runs[0]
            await asyncio.sleep(0.005)
        raise AssertionError("the scheduled job never started a run")

    run = await wait_for_run(service, (await first_run())["id"])

    assert run["trigger"] == "schedule"
    assert run["status"] == "completed"
    next_run = datetime.fromisoformat(
        (await service.http.get("/sync/schedule")).json()["next_run_at"]
    ).astimezone(UTC)
    # The next run is one interval after this (forced) one.
    assert (
        datetime.now(UTC) + timedelta(hours=5) < next_run <= datetime.now(UTC) + timedelta(hours=6)
    )


async def test_scheduled_run_is_skipped_not_failed_while_another_run_holds_the_lock(
    service: Any, runner: BulkSyncRunner, caplog: pytest.LogCaptureFixture
) -> None:
    locks = service.app.state.container.ctx.locks
    async with locks.hold(bulk_lock_name(1), timeout=0):
        with caplog.at_level("INFO", logger="app.services.sync.schedule"):
            run = await run_scheduled_sync(runner=runner)

    assert run is None
    assert "scheduled bulk sync skipped" in caplog.text
    assert await scalar(service.engine, "SELECT COUNT(*) FROM stock_sync_logs") == 0


async def test_scheduled_run_is_skipped_when_another_replica_already_ran_this_slot(
    service: Any, runner: BulkSyncRunner, caplog: pytest.LogCaptureFixture
) -> None:
    first = await run_scheduled_sync(runner=runner, interval_minutes=360)
    # A second replica's scheduler fires for the same slot a moment later, after the first
    # run has already finished and released the lock.
    with caplog.at_level("INFO", logger="app.services.sync.schedule"):
        second = await run_scheduled_sync(runner=runner, interval_minutes=360)

    assert first is not None and first.status == "completed"
    assert second is None
    assert "already started" in caplog.text
    assert await scalar(service.engine, "SELECT COUNT(*) FROM stock_sync_logs") == 1


async def test_a_scheduler_that_waited_for_the_lock_of_its_slots_finishing_run_does_not_run_again(
    service: Any, runner: BulkSyncRunner, locks: NamedLocks
) -> None:
    """Four workers fire at one slot: one runs; another found the lock taken before the run's
    row existed, so it waits for the lock (a finished run never refuses a trigger) — and must
    then see that the slot's run has started, not run the slot a second time."""
    holding, releasing = asyncio.Event(), asyncio.Event()

    async def hold_as_the_slots_run() -> None:
        async with locks.hold(bulk_lock_name(1), timeout=0):
            holding.set()
            await releasing.wait()

    holder = asyncio.create_task(hold_as_the_slots_run())
    await holding.wait()
    waiting = asyncio.create_task(run_scheduled_sync(runner=runner, interval_minutes=360))
    await asyncio.sleep(0.3)
    # The slot's run, in the meantime, recorded its start and its end.
    async with service.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO stock_sync_logs (marketplace_id, status, started_at, `trigger`, "
                "markets) VALUES (1, 'completed', :started, 'schedule', '{}')"
            ),
            {"started": datetime.now(UTC).replace(tzinfo=None)},
        )
    releasing.set()
    await holder

    assert await waiting is None
    assert await scalar(service.engine, "SELECT COUNT(*) FROM stock_sync_logs") == 1


async def test_scheduled_run_of_the_next_slot_is_not_skipped(
    service: Any, runner: BulkSyncRunner
) -> None:
    first = await run_scheduled_sync(runner=runner, interval_minutes=360)
    # The previous slot's run started more than half an interval ago.
    async with service.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE stock_sync_logs SET started_at = :earlier"),
            {"earlier": (datetime.now(UTC) - timedelta(hours=4)).replace(tzinfo=None)},
        )
    second = await run_scheduled_sync(runner=runner, interval_minutes=360)

    assert first is not None
    assert second is not None and second.status == "completed"
    assert await scalar(service.engine, "SELECT COUNT(*) FROM stock_sync_logs") == 2
