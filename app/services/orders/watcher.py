"""The orders watcher: `poll_orders` every ORDER_SYNC_INTERVAL_SECONDS, in-process (APScheduler)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from app.services.context import ServiceContext
from app.services.orders import status
from app.services.orders.poll import PollOutcome, poll_orders

log = logging.getLogger(__name__)

JOB_ID = "stock_sync:orders:watch"
SHUTDOWN_GRACE_SECONDS = 5.0


class OrdersWatcher:
    """Schedules the polls on the process's scheduler and reports the watcher's state."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.interval_seconds = ctx.settings.order_sync_interval_seconds
        self.overlap = timedelta(seconds=ctx.settings.order_sync_overlap_seconds)
        self._scheduled: asyncio.Task[PollOutcome | None] | None = None
        self._stopping = False

    @property
    def enabled(self) -> bool:
        return self.interval_seconds > 0

    async def poll(self) -> PollOutcome | None:
        """One poll now; None when another process is polling."""
        return await poll_orders(self.ctx, overlap=self.overlap)

    async def _scheduled_poll(self) -> None:
        if self._stopping:
            return
        # Kept until the poll itself has ended, even when this job is cancelled first (the
        # scheduler's shutdown cancels it): `shutdown` waits for the poll, not for the job.
        self._scheduled = polling = asyncio.create_task(self.poll(), name="orders watcher poll")
        try:
            await polling
        except Exception:
            # The job must keep its schedule; the next poll reads the same orders again.
            log.exception("orders poll crashed")

    async def shutdown(self) -> None:
        """Stop a scheduled poll in flight and wait until it has let go of its connections and
        lock, before the engine and the client close (a poll cut short keeps nothing; the next
        one reads the same orders). Call after the scheduler's shutdown."""
        self._stopping = True
        running = self._scheduled
        if running is not None and not running.done():
            # A poll is a few calls long: let it finish first. Cancelling one in the middle of a
            # query can leave aiosqlite's worker thread waiting on a result nobody reads.
            await asyncio.wait([running], timeout=SHUTDOWN_GRACE_SECONDS)
            if not running.done():
                running.cancel()
                await asyncio.wait([running])
        self._scheduled = None

    def schedule(self, scheduler: AsyncIOScheduler) -> None:
        if not self.enabled:
            log.info("orders watcher: off (ORDER_SYNC_INTERVAL_SECONDS=0)")
            return
        scheduler.add_job(
            self._scheduled_poll,
            IntervalTrigger(seconds=self.interval_seconds, timezone=UTC),
            id=JOB_ID,
            name="orders watcher",
            coalesce=True,
            max_instances=1,
            next_run_time=datetime.now(UTC),
            misfire_grace_time=self.interval_seconds,
            replace_existing=True,
        )
        log.info("orders watcher: every %d s", self.interval_seconds)

    async def status(self) -> status.WatcherStatus:
        row = await status.read_watch(self.ctx.engine)
        last_poll = status.last_poll_of(row)
        lag = None
        if last_poll is not None and last_poll.at is not None:
            lag = round((datetime.now(UTC) - last_poll.at).total_seconds(), 3)
        return status.WatcherStatus(
            enabled=self.enabled,
            interval_seconds=self.interval_seconds,
            overlap_seconds=int(self.overlap.total_seconds()),
            watermark=None
            if row is None or row.watermark is None
            else row.watermark.replace(tzinfo=UTC),
            last_poll=last_poll,
            lag_seconds=lag,
        )
