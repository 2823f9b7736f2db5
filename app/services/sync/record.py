"""A run's end: its status, summary and final record, its metrics and its progress reports.

Status: `completed` when every market was read completely; `partial` when some page or market
still failed after the client's retries (what was read is applied, `not_found` is not computed,
nothing is inferred from what was not read); `failed` when nothing could be read, the run
crashed, lost its lock or was interrupted by shutdown.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import FIRST_MARKETPLACE_ID
from app.db import transaction
from app.models import RunStatus
from app.services.stock import stock_table
from app.services.sync import runs
from app.services.sync.matching import VariationIdSet, variation_table
from app.services.sync.runs import Run

log = logging.getLogger(__name__)

RUNS_TOTAL = Counter(
    "stock_sync_bulk_runs_total",
    "Bulk stock sync runs finished, by marketplace, trigger and final status.",
    ["marketplace_id", "trigger", "status"],
)
RUN_DURATION = Histogram(
    "stock_sync_bulk_run_duration_seconds",
    "Duration of finished bulk stock sync runs, by marketplace and final status.",
    ["marketplace_id", "status"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
DRIFT_ROWS = Gauge(
    "stock_sync_drift_rows",
    "Stock rows the last completed bulk sync found at another value than the marketplace showed.",
    ["marketplace_id"],
)

ProgressCallback = Callable[[Run], None]


@dataclass(slots=True)
class RunState:
    """What the parts of one run share: the run as it stands and what it has matched so far."""

    run: Run
    markets: list[str]
    import_unknown: bool
    matched_variations: VariationIdSet = field(default_factory=VariationIdSet)
    # The SKUs found on several variations so far: each is counted and reported once a run.
    ambiguous_skus: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)


class RunRecorder:
    """Reports progress, and records the run's end once, whichever way it ends."""

    def __init__(
        self, state: RunState, *, engine: AsyncEngine, progress: ProgressCallback | None
    ) -> None:
        self.state = state
        self.engine = engine
        self.progress = progress

    async def finish(self) -> None:
        run = self.state.run
        statuses = [run.markets[market]["status"] for market in self.state.markets]
        if all(status == "completed" for status in statuses):
            run.status = RunStatus.COMPLETED.value
            run.not_found = await self._count_not_found()
        elif run.pages_fetched > 0:
            run.status = RunStatus.PARTIAL.value
        else:
            run.status = RunStatus.FAILED.value
        run.summary = self._summary()
        await self._save_final()

    async def fail(self, error: dict[str, Any], *, summary: str) -> None:
        run = self.state.run
        run.status = RunStatus.FAILED.value
        run.add_error(error)
        for market in self.state.markets:
            if run.markets[market]["status"] in ("pending", "running"):
                run.markets[market]["status"] = "failed"
        run.summary = f"failed: {summary}"
        try:
            await self._take_committed_counts()
            await self._save_final()
        except Exception:
            # The row stays `running`; the next start closes it once the lock is free.
            log.exception("could not record the end of bulk sync run %d", run.id)

    async def _take_committed_counts(self) -> None:
        """Each batch saves the run's counts in its own transaction. A batch whose COMMIT
        reached the database but whose answer was lost (the connection killed meanwhile) is
        written although this process saw an error: its counts are in the row, not in memory."""
        run = self.state.run
        stored = await runs.get_run(self.engine, run_id=run.id)
        for name in runs.BATCH_COUNTERS:
            setattr(run, name, max(getattr(run, name), getattr(stored, name)))
        if stored.drift.rows > run.drift.rows:
            run.drift = stored.drift

    def report(self) -> None:
        if self.progress is None:
            return
        try:
            self.progress(self.state.run.model_copy(deep=True))
        except Exception:
            # A broken progress display must not break the sync.
            log.exception("bulk sync progress callback failed")

    async def _count_not_found(self) -> int:
        """Variations with a reference on the marketplace that no listing of the complete feed
        matched: marketplace 1's `reference_id`/`reference_uuid`, another marketplace's stored
        listing reference (a variation it never matched has none, and is not counted); soft-deleted
        variations aside.

        Counted, never changed: absence from a feed is not evidence of zero stock. Every
        variation a run matches has its reference stored by the run itself (a dry run stores
        nothing: there the count leaves out the variations matched for the first time).
        """
        marketplace_id = self.state.run.marketplace_id
        if marketplace_id == FIRST_MARKETPLACE_ID:
            referenced_query = (
                sa.select(sa.func.count())
                .select_from(variation_table)
                .where(
                    variation_table.c.deleted_at.is_(None),
                    sa.or_(
                        sa.and_(
                            variation_table.c.reference_id.is_not(None),
                            variation_table.c.reference_id != "",
                        ),
                        sa.and_(
                            variation_table.c.reference_uuid.is_not(None),
                            variation_table.c.reference_uuid != "",
                        ),
                    ),
                )
            )
        else:
            referenced_query = (
                sa.select(sa.func.count())
                .select_from(
                    stock_table.join(
                        variation_table, variation_table.c.id == stock_table.c.variation_id
                    )
                )
                .where(
                    stock_table.c.marketplace_id == marketplace_id,
                    stock_table.c.listing_reference.is_not(None),
                    stock_table.c.listing_reference != "",
                    variation_table.c.deleted_at.is_(None),
                )
            )
        async with self.engine.connect() as conn:
            referenced = (await conn.execute(referenced_query)).scalar_one()
            await conn.rollback()
        return max(0, int(referenced) - len(self.state.matched_variations))

    def _summary(self) -> str:
        run = self.state.run
        text = (
            f"{run.status}: {run.listings_seen} listings read in {run.pages_fetched} of "
            f"{run.pages_expected} pages ({run.api_calls} calls); {run.matched} matched, "
            f"{run.updated} updated, {run.unchanged} unchanged, {run.skipped_newer} skipped as "
            f"newer, {run.unknown_listings} unknown; {run.drift.rows} drifted "
            f"({run.drift.higher} higher, {run.drift.lower} lower, {run.drift.units} units), "
            f"{run.variations_resummed} totals corrected"
        )
        if self.state.import_unknown:
            text += f", {run.imported} {'to import' if run.dry_run else 'imported'}"
        if run.status == RunStatus.COMPLETED.value:
            text += f", {run.not_found} variations not in the feed (left untouched)"
        else:
            unread = [m for m in self.state.markets if run.markets[m]["status"] != "completed"]
            text += f"; not read completely: {', '.join(unread)} (not_found not computed)"
        if run.dry_run:
            text += " [dry run: no stock written]"
        return text

    async def _save_final(self) -> None:
        run = self.state.run
        run.finished_at = datetime.now(UTC)
        run.duration_seconds = round(time.monotonic() - self.state.started, 3)
        async with transaction(self.engine) as conn:
            await runs.save_run(conn, run=run)
        RUNS_TOTAL.labels(str(run.marketplace_id), run.trigger, run.status).inc()
        RUN_DURATION.labels(str(run.marketplace_id), run.status).observe(run.duration_seconds)
        if run.status == RunStatus.COMPLETED.value:
            DRIFT_ROWS.labels(str(run.marketplace_id)).set(run.drift.rows)
        log.info(
            "bulk sync run %d %s",
            run.id,
            run.summary,
            extra={
                "event": "bulk_sync_finished",
                "status": run.status,
                "dry_run": run.dry_run,
                "pages": run.pages_fetched,
                "pages_expected": run.pages_expected,
                "api_calls": run.api_calls,
                "listings": run.listings_seen,
                "matched": run.matched,
                "updated": run.updated,
                "unchanged": run.unchanged,
                "skipped_newer": run.skipped_newer,
                "unknown_listings": run.unknown_listings,
                "variations_resummed": run.variations_resummed,
                "drift_rows": run.drift.rows,
                "drift_higher": run.drift.higher,
                "drift_lower": run.drift.lower,
                "drift_units": run.drift.units,
                "drift_oldest_confirmed_at": (
                    run.drift.oldest_confirmed_at.isoformat()
                    if run.drift.oldest_confirmed_at is not None
                    else None
                ),
                "errors": len(run.errors),
                "duration_seconds": run.duration_seconds,
            },
        )
        self.report()
