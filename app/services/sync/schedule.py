"""The scheduled bulk sync: one named APScheduler job, every `SYNC_INTERVAL_MINUTES`.

Explicit and visible (the seed's `everySixHours()->at('00:00')` silently ran once a day): the
slots are whole multiples of the interval counted from 2000-01-01 00:00 UTC (360 minutes:
00:00, 06:00, 12:00 and 18:00 UTC), the same in every process, and the next one is reported
by `GET /sync/schedule` and `/readyz`. Missed runs coalesce into one and a job never overlaps
itself. With several workers or replicas every scheduler fires at the same slot: the
marketplace lock lets one of them run, and a scheduler that fires a little later (a busy loop,
clock skew) sees that this slot's run has already started and skips too, so each slot gets
exactly one run.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from app.config import FIRST_MARKETPLACE_ID
from app.errors import Conflict
from app.models import RunTrigger, utcnow
from app.services.sync import runs
from app.services.sync.options import SyncOptions
from app.services.sync.runner import BulkSyncRunner
from app.services.sync.runs import Run

log = logging.getLogger(__name__)

JOB_ID = "stock_sync:bulk:schedule"
# Slots are counted from here, so every process computes the same ones.
SCHEDULE_ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)


async def run_scheduled_sync(
    *,
    runner: BulkSyncRunner,
    marketplace_id: int = FIRST_MARKETPLACE_ID,
    interval_minutes: int | None = None,
) -> Run | None:
    """The job: one run with trigger `schedule`; None when this slot is already covered.

    Covered: another run holds the lock, or (with `interval_minutes`) a scheduled run started
    less than half an interval ago — another replica's run of this same slot.
    """
    covered_since = None
    if interval_minutes:
        covered_since = utcnow() - timedelta(minutes=interval_minutes) / 2
        latest = await runs.latest_start(
            runner.ctx.engine, marketplace_id=marketplace_id, trigger=RunTrigger.SCHEDULE
        )
        if latest is not None and latest >= covered_since:
            log.info(
                "scheduled bulk sync skipped: this slot's run already started at %s UTC", latest
            )
            return None
    try:
        # Checked again once the lock is held: a scheduler that waited for the lock of this
        # slot's run, finishing, must not run the slot a second time.
        run = await runner.run(
            SyncOptions(
                marketplace_id=marketplace_id,
                trigger=RunTrigger.SCHEDULE,
                unless_started_since=covered_since,
            )
        )
    except Conflict as busy:
        # Another worker, replica, the CLI or an API call is syncing: that run covers this slot.
        log.info("scheduled bulk sync skipped: %s", busy.detail)
        return None
    except asyncio.CancelledError:
        # Shutdown: the runner records the interrupted run as failed; nothing to report here.
        log.info("scheduled bulk sync interrupted by shutdown")
        return None
    log.info("scheduled bulk sync run %d ended %s", run.id, run.status)
    return run


class SyncScheduler:
    """Owns the AsyncIOScheduler of the process; `start`/`shutdown` run in the app's lifespan."""

    def __init__(
        self,
        *,
        runner: BulkSyncRunner,
        interval_minutes: int,
        marketplace_id: int = FIRST_MARKETPLACE_ID,
    ) -> None:
        self.runner = runner
        self.interval_minutes = interval_minutes
        self.marketplace_id = marketplace_id
        self.scheduler = AsyncIOScheduler(timezone=UTC)

    @property
    def enabled(self) -> bool:
        return self.interval_minutes > 0

    def start(self) -> None:
        """Add the job (none when the interval is 0) and start; needs the running event loop."""
        if self.enabled:
            interval = timedelta(minutes=self.interval_minutes)
            self.scheduler.add_job(
                run_scheduled_sync,
                IntervalTrigger(
                    minutes=self.interval_minutes, start_date=SCHEDULE_ANCHOR, timezone=UTC
                ),
                kwargs={
                    "runner": self.runner,
                    "marketplace_id": self.marketplace_id,
                    "interval_minutes": self.interval_minutes,
                },
                id=JOB_ID,
                name="bulk stock sync",
                coalesce=True,
                max_instances=1,
                # A run late by up to one period (a blocked loop, a suspended host) still
                # happens, once; later than that the next regular slot is soon anyway.
                misfire_grace_time=int(interval.total_seconds()),
                replace_existing=True,
            )
        self.scheduler.start()
        log.info("sync schedule: %s", self.describe())

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def info(self) -> dict[str, Any]:
        """What `GET /sync/schedule` and `/readyz` show."""
        job = self.scheduler.get_job(JOB_ID) if self.enabled else None
        next_run = getattr(job, "next_run_time", None) if job is not None else None
        return {
            "enabled": self.enabled,
            "interval_minutes": self.interval_minutes,
            "marketplace_id": self.marketplace_id,
            "job_id": JOB_ID if self.enabled else None,
            "next_run_at": next_run.astimezone(UTC).isoformat() if next_run else None,
            "running": self.scheduler.running,
        }

    def describe(self) -> str:
        info = self.info()
        if not info["enabled"]:
            return "off (SYNC_INTERVAL_MINUTES=0)"
        return f"every {self.interval_minutes} min, next at {info['next_run_at']}"
