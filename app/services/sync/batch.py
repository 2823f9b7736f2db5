"""Applying one batch: match its listings, write their stock and the run's progress, at once.

One short transaction per batch, never across an HTTP call. A batch that lost a lock conflict
(deadlock, lock wait timeout) is repeated from scratch by `app.db.in_transaction`.

No lost update: each listing carries the moment its page was requested, in the database clock
and moved back by a safety margin; the stock writer leaves a row alone when it changed after
that moment (`skipped_newer`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import sqlalchemy as sa
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.config import FIRST_MARKETPLACE_ID
from app.db import in_transaction, is_mysql
from app.models import ChangeType
from app.services.locks import HeldLock, LockLost
from app.services.stock import StockObservation, StockWriteResult, write_observations
from app.services.sync import runs
from app.services.sync.matching import Observed, import_variations, match_listings, reference_of
from app.services.sync.record import RunRecorder, RunState
from app.services.sync.runs import Drift, Run

log = logging.getLogger(__name__)

LISTINGS_APPLIED = Counter(
    "stock_sync_bulk_listings_total",
    "Stock rows written (updated, unchanged, skipped_newer) and unknown listings of bulk sync runs.",
    ["outcome"],
)


@dataclass
class BatchOutcome:
    matched: int = 0
    unknown: int = 0
    imported: int = 0
    written: StockWriteResult = field(default_factory=StockWriteResult)
    drift: Drift = field(default_factory=Drift)
    matched_variation_ids: list[int] = field(default_factory=list)
    # SKU -> variations carrying it, for the SKUs this run had not yet found ambiguous.
    new_ambiguous: dict[str, int] = field(default_factory=dict)

    def add_to(self, run: Run) -> None:
        """Count the batch in `run`: the fields of `runs.BATCH_COUNTERS`, and one error entry
        per SKU first found ambiguous."""
        for sku, carriers in sorted(self.new_ambiguous.items()):
            run.add_error(
                {
                    "kind": "ambiguous_sku",
                    "sku": sku,
                    "variations": carriers,
                    "message": (
                        f"SKU {sku!r} is carried by {carriers} variations: none of them "
                        "follows the listing"
                    ),
                }
            )
        run.ambiguous_sku += len(self.new_ambiguous)
        run.matched += self.matched
        run.unknown_listings += self.unknown
        run.imported += self.imported
        run.updated += self.written.updated
        run.unchanged += self.written.unchanged
        run.skipped_newer += self.written.skipped_newer
        run.variations_resummed += self.written.resummed
        run.drift.merge(self.drift)


class BatchWriter:
    """The run's one writer: applies each batch and counts it only once it is committed."""

    def __init__(
        self,
        state: RunState,
        *,
        engine: AsyncEngine,
        held: HeldLock,
        recorder: RunRecorder,
    ) -> None:
        self.state = state
        self.engine = engine
        self.held = held
        self.recorder = recorder
        self.check_lock = is_mysql(engine)

    async def write(self, batch: list[Observed]) -> None:
        """Apply one batch and save the run's progress, in one short transaction.

        Raises LockLost when the connection holding the run's lock is gone: another run could
        have started, so this one must not write on.
        """
        if self.check_lock and not await self.held.still_held():
            raise LockLost()
        run = self.state.run

        async def apply_and_save(conn: AsyncConnection) -> BatchOutcome:
            outcome = await self._apply(conn, batch)
            saved = run.model_copy(deep=True)
            outcome.add_to(saved)
            await runs.save_run(conn, run=saved)
            return outcome

        def repeating(exc: sa.exc.DBAPIError) -> None:
            log.warning("bulk sync run %d: batch hit %s, repeating it", run.id, exc.orig)

        outcome = await in_transaction(self.engine, apply_and_save, on_conflict=repeating)
        # Only a committed batch counts: a repeated one must not find its own marks.
        outcome.add_to(run)
        for variation_id in outcome.matched_variation_ids:
            self.state.matched_variations.add(variation_id)
        self.state.ambiguous_skus.update(outcome.new_ambiguous)
        LISTINGS_APPLIED.labels("updated").inc(outcome.written.updated)
        LISTINGS_APPLIED.labels("unchanged").inc(outcome.written.unchanged)
        LISTINGS_APPLIED.labels("skipped_newer").inc(outcome.written.skipped_newer)
        LISTINGS_APPLIED.labels("unknown").inc(outcome.unknown)
        self.recorder.report()

    async def _apply(self, conn: AsyncConnection, batch: list[Observed]) -> BatchOutcome:
        outcome = BatchOutcome()
        if not batch:
            return outcome
        run = self.state.run
        matches = await match_listings(
            conn, batch, by_sku=run.marketplace_id != FIRST_MARKETPLACE_ID
        )
        outcome.matched = len({observed.listing.id for observed in matches.assigned.values()})
        outcome.unknown = len(matches.unknown)
        outcome.new_ambiguous = {
            sku: carriers
            for sku, carriers in matches.ambiguous.items()
            if sku not in self.state.ambiguous_skus
        }

        # A variation already written by an earlier batch of this run keeps that value.
        targets = {
            variation_id: observed
            for variation_id, observed in matches.assigned.items()
            if variation_id not in self.state.matched_variations
        }
        if matches.unknown and self.state.import_unknown:
            outcome.imported = len(matches.unknown)
            if not run.dry_run:
                targets.update(await import_variations(conn, matches.unknown))
        outcome.matched_variation_ids = list(targets)

        observations = [
            StockObservation(
                variation_id=variation_id,
                quantity=observed.listing.quantity,
                sku=observed.listing.sku,
                publication_state=observed.listing.state,
                not_changed_since=observed.cutoff,
                reference_id=reference_of(observed.listing),
                listing_reference=observed.listing.id,
            )
            for variation_id, observed in sorted(targets.items())
        ]
        result = await write_observations(
            conn,
            marketplace_id=run.marketplace_id,
            observations=observations,
            change_type=ChangeType.BULK_SYNC,
            sync_run_id=run.id,
            dry_run=run.dry_run,
        )
        outcome.written.updated += result.updated
        outcome.written.unchanged += result.unchanged
        outcome.written.skipped_newer += result.skipped_newer
        outcome.written.created += result.created
        outcome.written.resummed += result.resummed
        outcome.drift.add(result.differences)
        return outcome
