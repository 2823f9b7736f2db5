"""The orders watcher: `poll_orders` every ORDER_SYNC_INTERVAL_SECONDS, in-process (APScheduler)."""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import Gauge

from app.config import FIRST_MARKETPLACE_ID
from app.services.context import ServiceContext
from app.services.marketplace import Marketplace
from app.services.marketplaces import read_sync_enabled
from app.services.orders import status
from app.services.orders.poll import PollOutcome, poll_orders

log = logging.getLogger(__name__)

JOB_ID = "stock_sync:orders:watch"


def job_id(marketplace_id: int) -> str:
    return JOB_ID if marketplace_id == FIRST_MARKETPLACE_ID else f"{JOB_ID}:{marketplace_id}"


SHUTDOWN_GRACE_SECONDS = 5.0
# A scheduled poll is skipped when some process's poll succeeded within this share of the
# interval: the gap between two reads of the feed stays between 0.8 and 1 interval.
RECENT_POLL_SHARE = 0.8

LAG_SECONDS = Gauge(
    "orders_watcher_lag_seconds",
    "Seconds since the start of the orders watcher's last successful poll (NaN until one is "
    "seen), by marketplace; failed polls do not reset it. Set when /metrics is scraped.",
    ["marketplace_id"],
)


class OrdersWatcher:
    """Schedules the polls on the process's scheduler and reports the watcher's state."""

    def __init__(self, ctx: ServiceContext, marketplace: Marketplace) -> None:
        self.ctx = ctx
        self.marketplace = marketplace
        self.interval_seconds = ctx.settings.order_sync_interval_seconds
        self.overlap = timedelta(seconds=ctx.settings.order_sync_overlap_seconds)
        self._scheduled: asyncio.Task[PollOutcome | None] | None = None
        self._stopping = False
        # The start of the newest successful poll seen, this process's or (in the database)
        # another's: the database keeps only the last poll, which may have failed.
        self._last_success_at: datetime | None = None
        # Until a successful poll is seen, the lag counts from here: a watcher that never
        # succeeds (Back Market down since the start, a bad token) shows a growing lag to alert
        # on, not a NaN that no alert rule fires on.
        self._started_at = datetime.now(UTC)

    @property
    def enabled(self) -> bool:
        return self.interval_seconds > 0

    async def poll(self, *, unless_polled_within: timedelta | None = None) -> PollOutcome | None:
        """One poll now; None when another process is polling, or (`unless_polled_within`) when
        a poll succeeded less than that long ago."""
        outcome = await poll_orders(
            self.ctx,
            self.marketplace,
            overlap=self.overlap,
            unless_polled_within=unless_polled_within,
        )
        if outcome is not None and outcome.error is None:
            self._saw_success(outcome.at)
        return outcome

    async def _poll_unless_disabled(self, *, unless_polled_within: timedelta) -> PollOutcome | None:
        # Read at every due poll, so turning the marketplace off or on needs no restart.
        if not await read_sync_enabled(self.ctx.engine, self.marketplace.id):
            log.debug("orders poll of marketplace %d skipped: sync disabled", self.marketplace.id)
            return None
        return await self.poll(unless_polled_within=unless_polled_within)

    async def _scheduled_poll(self) -> None:
        if self._stopping:
            return
        # Kept until the poll itself has ended, even when this job is cancelled first (the
        # scheduler's shutdown cancels it): `shutdown` waits for the poll, not for the job.
        # Another replica's recent poll stands for this one: every process's schedule fires, the
        # feed is read about once per interval.
        recent = timedelta(seconds=self.interval_seconds * RECENT_POLL_SHARE)
        self._scheduled = polling = asyncio.create_task(
            self._poll_unless_disabled(unless_polled_within=recent), name="orders watcher poll"
        )
        try:
            # Shielded: only `shutdown` cancels a poll, once. A poll cancelled by the job too
            # would be cancelled twice, and on SQLite a second cancel while SQLAlchemy closes the
            # connection of the first leaves that close waiting forever: the process never ends.
            await asyncio.shield(polling)
        except asyncio.CancelledError:
            log.info("orders poll interrupted by shutdown")
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
                log.info(
                    "orders poll still running %.0f s into shutdown: cancelled",
                    SHUTDOWN_GRACE_SECONDS,
                )
                running.cancel()
                # Awaited to its end, never cancelled again (`asyncio.wait` does not pass a
                # cancellation of this shutdown on to the poll).
                await asyncio.wait([running])
        self._scheduled = None

    def schedule(self, scheduler: AsyncIOScheduler) -> None:
        if not self.enabled:
            log.info("orders watcher: off (ORDER_SYNC_INTERVAL_SECONDS=0)")
            return
        scheduler.add_job(
            self._scheduled_poll,
            IntervalTrigger(seconds=self.interval_seconds, timezone=UTC),
            id=job_id(self.marketplace.id),
            name=f"orders watcher of marketplace {self.marketplace.id}",
            coalesce=True,
            max_instances=1,
            next_run_time=datetime.now(UTC),
            misfire_grace_time=self.interval_seconds,
            replace_existing=True,
        )
        log.info("orders watcher: every %d s", self.interval_seconds)

    async def status(self) -> status.WatcherStatus:
        row = await status.read_watch(self.ctx.engine, marketplace_id=self.marketplace.id)
        sync_enabled = await read_sync_enabled(self.ctx.engine, self.marketplace.id)
        last_poll = status.last_poll_of(row)
        if last_poll is not None and last_poll.at is not None and last_poll.error is None:
            self._saw_success(last_poll.at)
        lag = self._lag_seconds()
        return status.WatcherStatus(
            enabled=self.enabled and sync_enabled,
            sync_enabled=sync_enabled,
            interval_seconds=self.interval_seconds,
            overlap_seconds=int(self.overlap.total_seconds()),
            watermark=None
            if row is None or row.watermark is None
            else row.watermark.replace(tzinfo=UTC),
            last_poll=last_poll,
            lag_seconds=lag,
        )

    async def update_lag_metric(self) -> None:
        """Set `orders_watcher_lag_seconds` for a scrape, from the database when it answers
        (another process may be the one polling), else from this process's own polls."""
        try:
            lag = (await self.status()).lag_seconds
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            log.debug("orders watcher lag from this process's polls only: %s", exc)
            lag = self._lag_seconds()
        LAG_SECONDS.labels(str(self.marketplace.id)).set(math.nan if lag is None else lag)

    def _saw_success(self, at: datetime) -> None:
        # Polls stamp naive UTC (the columns' form); the status answers aware UTC.
        at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        if self._last_success_at is None or at > self._last_success_at:
            self._last_success_at = at

    def _lag_seconds(self) -> float | None:
        """Seconds since the start of the last successful poll seen; before one, since this
        watcher started (None when it is off: nothing is being watched)."""
        since = self._last_success_at
        if since is None:
            if not self.enabled:
                return None
            since = self._started_at
        return round((datetime.now(UTC) - since).total_seconds(), 3)
