"""The bulk stock sync: read every listing of each configured market, write the stock it holds.

How a run goes:

* One lock per marketplace (`stock_sync:bulk:<id>`: a `GET_LOCK` scoped to the database on
  MySQL/MariaDB, an in-process lock on SQLite) is held for the whole run and shared by the API,
  the schedule and the CLI of every process. A second trigger gets `Conflict` (409) naming the
  running run.
* Each market's pages are fetched concurrently by the client (within its shared request
  budget), markets concurrently too. Pages go through a bounded queue to one writer that
  applies them in batches of `settings.sync_batch_size` listings (or whatever has arrived when
  the queue runs dry), one short transaction per batch, never across an HTTP call. Memory
  holds a batch, a few queued pages and one bit per variation id (plus, with several markets,
  one entry per listing to apply each listing once).
* Matching is set-based per batch: `variation.reference_uuid = listing.id` (preferred) or
  `variation.reference_id = listing.listing_id`.
* No lost update: each listing carries the moment its page was requested, converted to the
  database clock and moved back by a safety margin; the stock writer leaves a row alone when it
  changed after that moment (`skipped_newer`).
* Status: `completed` when every market was read completely; `partial` when some page or market
  still failed after the client's retries (what was read is applied, `not_found` is not computed,
  nothing is inferred from what was not read); `failed` when nothing could be read, the run
  crashed, lost its lock or was interrupted by shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import sqlalchemy as sa
from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.config import Settings
from app.db import database_now, is_mysql, is_retryable_conflict, transaction
from app.errors import Conflict, InvalidRequest
from app.models import ChangeType, Marketplace, RunStatus, RunTrigger, Variation, table_of, utcnow
from app.services import runs
from app.services.backmarket import (
    BackMarketClient,
    BackMarketError,
    IncompleteFeed,
    Listing,
    ListingPage,
)
from app.services.container import open_services
from app.services.locks import HeldLock, LockBusy, NamedLocks
from app.services.runs import Run
from app.services.stock import StockObservation, StockWriteResult, write_observations

log = logging.getLogger(__name__)

# The only marketplace with a Back Market client.
BACKMARKET_MARKETPLACE_ID = 1
PAGE_SIZE = 50
# Values per IN list when matching listings to variations.
MATCH_CHUNK = 1000
# Pages waiting for the writer; fetches pause beyond this, so memory stays bounded.
QUEUE_PAGES = 16
# Subtracted from each page's fetch time (on top of the clock-offset uncertainty): a row changed
# this close before the page was requested is treated as newer than the page. Skipping is safe
# (the next run picks the row up); overwriting a newer value is not. It also absorbs clock drift
# between this host and the database during a long run.
SNAPSHOT_SAFETY_MARGIN = timedelta(milliseconds=500)
# A batch that lost a lock conflict (deadlock, lock wait timeout) is repeated from scratch.
BATCH_ATTEMPTS = 3

RUNS_TOTAL = Counter(
    "stock_sync_bulk_runs_total",
    "Bulk stock sync runs finished, by trigger and final status.",
    ["trigger", "status"],
)
RUN_DURATION = Histogram(
    "stock_sync_bulk_run_duration_seconds",
    "Duration of finished bulk stock sync runs, by final status.",
    ["status"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
LISTINGS_APPLIED = Counter(
    "stock_sync_bulk_listings_total",
    "Stock rows written (updated, unchanged, skipped_newer) and unknown listings of bulk sync runs.",
    ["outcome"],
)

variation_table = table_of(Variation)
marketplace_table = table_of(Marketplace)

ProgressCallback = Callable[[Run], None]


def bulk_lock_name(marketplace_id: int) -> str:
    """`stock_sync:bulk:<marketplace>`; NamedLocks scopes it to the database on the server."""
    return f"stock_sync:bulk:{marketplace_id}"


# -- the database clock ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SnapshotClock:
    """Turns a page's local fetch time into a "not changed since" cutoff in the database clock."""

    offset: timedelta
    margin: timedelta

    def cutoff(self, fetched_at: datetime) -> datetime:
        local = fetched_at.astimezone(UTC).replace(tzinfo=None) if fetched_at.tzinfo else fetched_at
        return local + self.offset - self.margin


async def measure_snapshot_clock(
    engine: AsyncEngine, *, margin: timedelta = SNAPSHOT_SAFETY_MARGIN, samples: int = 3
) -> SnapshotClock:
    """database clock - local clock, from the quickest of a few round trips.

    The offset is known to within half a round trip; the whole round trip is added to the
    margin, so the cutoff only ever errs early (towards skipping).
    """
    best: tuple[timedelta, timedelta] | None = None
    async with engine.connect() as conn:
        for _ in range(samples):
            before = datetime.now(UTC).replace(tzinfo=None)
            database = await database_now(conn)
            after = datetime.now(UTC).replace(tzinfo=None)
            round_trip = after - before
            offset = database - (before + round_trip / 2)
            if best is None or round_trip < best[1]:
                best = (offset, round_trip)
        await conn.rollback()
    assert best is not None
    return SnapshotClock(offset=best[0], margin=margin + best[1])


# -- matched variations --------------------------------------------------------------------------


class VariationIdSet:
    """Ids of the variations a run has matched: one bit per id, so a million cost 125 kB."""

    def __init__(self) -> None:
        self._bits = bytearray()
        self._count = 0

    def add(self, variation_id: int) -> None:
        index, bit = divmod(variation_id, 8)
        if index >= len(self._bits):
            self._bits.extend(bytes(index + 1 - len(self._bits) + len(self._bits) // 2))
        mask = 1 << bit
        if not self._bits[index] & mask:
            self._bits[index] |= mask
            self._count += 1

    def __contains__(self, variation_id: object) -> bool:
        if not isinstance(variation_id, int) or variation_id < 0:
            return False
        index, bit = divmod(variation_id, 8)
        return index < len(self._bits) and bool(self._bits[index] & (1 << bit))

    def __len__(self) -> int:
        return self._count


# -- marketplace check and stale runs ------------------------------------------------------------


async def check_marketplace(engine: AsyncEngine, *, marketplace_id: int) -> None:
    """Only Back Market (marketplace 1) can be synced; anything else is InvalidRequest (422)."""
    if marketplace_id == BACKMARKET_MARKETPLACE_ID:
        return
    async with engine.connect() as conn:
        name = (
            await conn.execute(
                sa.select(marketplace_table.c.name).where(marketplace_table.c.id == marketplace_id)
            )
        ).scalar()
    if name is None:
        raise InvalidRequest(
            f"marketplace {marketplace_id} does not exist; only marketplace "
            f"{BACKMARKET_MARKETPLACE_ID} (Back Market) can be synced"
        )
    raise InvalidRequest(
        f"marketplace {marketplace_id} ({name}) has no Back Market connection; only marketplace "
        f"{BACKMARKET_MARKETPLACE_ID} (Back Market) can be synced"
    )


def _owner_is_alive_elsewhere(owner: str | None, *, engine: AsyncEngine) -> bool:
    """SQLite only: a run of another live process on this host (the CLI beside the server).

    The in-process lock cannot see that process; on MySQL the lock itself is shared, so holding
    it proves no other process is running.
    """
    if is_mysql(engine) or not owner or ":" not in owner:
        return False
    host, _, pid_text = owner.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _close_dead_runs(
    conn: AsyncConnection, *, engine: AsyncEngine, marketplace_id: int
) -> list[int]:
    """With the marketplace's lock held, every other `running` row of it belongs to a dead run."""
    candidates = await runs.running_run_ids(conn, marketplace_id=marketplace_id)
    dead = [
        run_id
        for run_id, owner in candidates
        if not _owner_is_alive_elsewhere(owner, engine=engine)
    ]
    await runs.fail_runs(
        conn,
        run_ids=dead,
        reason="the process running this sync ended before the run finished",
    )
    return dead


async def close_stale_runs(*, engine: AsyncEngine, locks: NamedLocks) -> list[int]:
    """At start-up: close runs left `running` by a dead process, where that can be proved.

    A marketplace whose lock is busy has a live run somewhere; its rows are left alone.
    """
    closed: list[int] = []
    for marketplace_id in await runs.marketplaces_with_running_runs(engine):
        try:
            async with locks.hold(bulk_lock_name(marketplace_id), timeout=0):
                async with transaction(engine) as conn:
                    closed += await _close_dead_runs(
                        conn, engine=engine, marketplace_id=marketplace_id
                    )
        except LockBusy:
            continue
    if closed:
        log.warning(
            "closed %d bulk sync run(s) left running by a dead process: %s", len(closed), closed
        )
    return closed


async def _busy_conflict(engine: AsyncEngine, *, marketplace_id: int) -> Conflict:
    async with engine.connect() as conn:
        running = await runs.running_run_ids(conn, marketplace_id=marketplace_id)
    run_id = running[0][0] if running else None
    where = f" (run {run_id})" if run_id is not None else ""
    return Conflict(
        f"a bulk sync of marketplace {marketplace_id} is already running{where}", run_id=run_id
    )


# -- one run -------------------------------------------------------------------------------------


async def run_bulk_sync(
    *,
    engine: AsyncEngine,
    client: BackMarketClient,
    settings: Settings,
    locks: NamedLocks,
    marketplace_id: int = BACKMARKET_MARKETPLACE_ID,
    trigger: RunTrigger = RunTrigger.API,
    dry_run: bool = False,
    import_unknown: bool = False,
    progress: ProgressCallback | None = None,
    on_started: ProgressCallback | None = None,
    snapshot_margin: timedelta = SNAPSHOT_SAFETY_MARGIN,
) -> Run:
    """Take the marketplace's lock, record a run, sync, and return the finished run.

    Raises InvalidRequest for a marketplace without Back Market, Conflict when a run of the
    marketplace is going on in any process. Anything that goes wrong once the run is recorded
    ends in a `failed` run (returned, or, on cancellation, recorded and re-raised).
    `on_started` is called once the run row exists and the lock is held; `progress` after each
    batch and at the end. Both get a copy of the run.
    """
    await check_marketplace(engine, marketplace_id=marketplace_id)
    async with AsyncExitStack() as stack:
        try:
            held = await stack.enter_async_context(
                locks.hold(bulk_lock_name(marketplace_id), timeout=0)
            )
        except LockBusy:
            raise await _busy_conflict(engine, marketplace_id=marketplace_id) from None
        async with transaction(engine) as conn:
            await _close_dead_runs(conn, engine=engine, marketplace_id=marketplace_id)
            run = await runs.create_run(
                conn,
                marketplace_id=marketplace_id,
                trigger=trigger,
                dry_run=dry_run,
                markets=list(settings.backmarket_markets),
            )
        log.info(
            "bulk sync run %d started (%s, marketplace %d, markets %s%s)",
            run.id,
            trigger.value,
            marketplace_id,
            ",".join(settings.backmarket_markets),
            ", dry run" if dry_run else "",
        )
        if on_started is not None:
            on_started(run.model_copy(deep=True))
        sync = _BulkSync(
            engine=engine,
            client=client,
            settings=settings,
            held=held,
            run=run,
            import_unknown=import_unknown,
            progress=progress,
            snapshot_margin=snapshot_margin,
        )
        return await sync.execute()
    raise AssertionError("unreachable")  # pragma: no cover - keeps mypy sure of the return


@dataclass(slots=True)
class _Observed:
    listing: Listing
    cutoff: datetime


@dataclass(slots=True)
class _MarketDone:
    market: str
    error: BaseException | None = None


@dataclass
class _BatchOutcome:
    matched: int = 0
    unknown: int = 0
    imported: int = 0
    written: StockWriteResult = field(default_factory=StockWriteResult)
    matched_variation_ids: list[int] = field(default_factory=list)

    def add_to(self, run: Run) -> None:
        run.matched += self.matched
        run.unknown_listings += self.unknown
        run.imported += self.imported
        run.updated += self.written.updated
        run.unchanged += self.written.unchanged
        run.skipped_newer += self.written.skipped_newer


class _LockLost(Exception):
    """The database connection holding the run's lock went away."""


class _BulkSync:
    """The state of one run between its start and its end; one writer, many page fetchers."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        client: BackMarketClient,
        settings: Settings,
        held: HeldLock,
        run: Run,
        import_unknown: bool,
        progress: ProgressCallback | None,
        snapshot_margin: timedelta,
    ) -> None:
        self.engine = engine
        self.client = client
        self.settings = settings
        self.held = held
        self.run = run
        self.import_unknown = import_unknown
        self.progress = progress
        self.snapshot_margin = snapshot_margin
        self.markets = list(settings.backmarket_markets)
        self.started = time.monotonic()
        self.matched_variations = VariationIdSet()
        # Quantity is global: with several markets each listing is applied once, and the
        # quantity first seen is kept to notice markets that disagree.
        self.seen: dict[str, tuple[int, str]] | None = {} if len(self.markets) > 1 else None
        self.market_calls: dict[str, int] = dict.fromkeys(self.markets, 0)
        self.market_pages_expected: dict[str, int] = dict.fromkeys(self.markets, 0)
        self.clock: SnapshotClock | None = None
        self.check_lock = is_mysql(engine)

    # -- the run ---------------------------------------------------------------------------------

    async def execute(self) -> Run:
        fetchers: list[asyncio.Task[None]] = []
        try:
            self.clock = await measure_snapshot_clock(self.engine, margin=self.snapshot_margin)
            queue: asyncio.Queue[ListingPage | _MarketDone] = asyncio.Queue(maxsize=QUEUE_PAGES)
            fetchers = [
                asyncio.create_task(self._fetch_market(market, queue), name=f"bulk-sync-{market}")
                for market in self.markets
            ]
            await self._consume(queue)
            await self._finish()
        except asyncio.CancelledError:
            await _stop_tasks(fetchers)
            await self._fail(
                {"kind": "interrupted", "message": "the run was interrupted (service shutdown)"},
                summary="interrupted by shutdown before it finished",
            )
            raise
        except _LockLost:
            await _stop_tasks(fetchers)
            await self._fail(
                {
                    "kind": "lock_lost",
                    "message": "the database connection holding the bulk-sync lock was lost; "
                    "stopped so that two runs cannot overlap",
                },
                summary="stopped: lost the bulk-sync lock",
            )
        except Exception as exc:
            log.exception("bulk sync run %d crashed", self.run.id)
            await _stop_tasks(fetchers)
            await self._fail(
                {"kind": "crash", "message": f"{type(exc).__name__}: {exc}"},
                summary=f"crashed: {type(exc).__name__}",
            )
        finally:
            await _stop_tasks(fetchers)
        return self.run.model_copy(deep=True)

    async def _fetch_market(
        self, market: str, queue: asyncio.Queue[ListingPage | _MarketDone]
    ) -> None:
        """Feed one market's pages to the writer; the end of the market is a _MarketDone."""
        error: BaseException | None = None
        try:
            # Closing the generator at once cancels its page fetches when this task is cancelled.
            feed = cast(
                AsyncGenerator[ListingPage, None],
                self.client.iter_listing_pages(market, page_size=PAGE_SIZE),
            )
            async with aclosing(feed) as pages:
                async for page in pages:
                    await queue.put(page)
        except BackMarketError as exc:
            error = exc
        except Exception as exc:
            # A bug must reach the writer, not leave it waiting for this market forever.
            error = exc
        await queue.put(_MarketDone(market, error))

    async def _consume(self, queue: asyncio.Queue[ListingPage | _MarketDone]) -> None:
        pending: list[_Observed] = []
        markets_left = len(self.markets)
        while markets_left:
            item = await queue.get()
            if isinstance(item, _MarketDone):
                markets_left -= 1
                crash = self._market_done(item)
                if crash is not None:
                    # Keep what was read before the fetcher broke, then fail the run.
                    await self._flush(pending)
                    raise crash
            else:
                pending.extend(self._accept_page(item))
            # Write a full batch at once; otherwise write whatever arrived when the writer
            # would idle anyway, so progress stays live when pages come slowly.
            if len(pending) >= self.settings.sync_batch_size or queue.empty():
                await self._flush(pending)
                pending = []

    def _accept_page(self, page: ListingPage) -> list[_Observed]:
        assert self.clock is not None
        market = self.run.markets[page.market]
        market["status"] = "running"
        market["pages"] += 1
        market["listings"] += len(page.listings)
        market["count"] = page.count
        market["pages_expected"] = max(market.get("pages_expected") or 0, page.pages_expected)
        self.market_pages_expected[page.market] = market["pages_expected"]
        self.market_calls[page.market] += page.requests
        self.run.pages_fetched += 1
        self.run.pages_expected = sum(self.market_pages_expected.values())
        self.run.api_calls = sum(self.market_calls.values())

        cutoff = self.clock.cutoff(page.fetched_at)
        accepted: list[_Observed] = []
        for listing in page.listings:
            if self.seen is not None:
                first = self.seen.get(listing.id)
                if first is not None:
                    if first[0] != listing.quantity:
                        self._record_disagreement(listing, first=first, market=page.market)
                    continue
                self.seen[listing.id] = (listing.quantity, page.market)
            accepted.append(_Observed(listing, cutoff))
        self.run.listings_seen += len(accepted)
        return accepted

    def _record_disagreement(
        self, listing: Listing, *, first: tuple[int, str], market: str
    ) -> None:
        first_quantity, first_market = first
        for name in (first_market, market):
            entry = self.run.markets[name]
            entry["quantity_disagreements"] = entry.get("quantity_disagreements", 0) + 1
        self.run.add_error(
            {
                "kind": "quantity_disagreement",
                "listing": listing.id,
                "listing_id": listing.listing_id,
                "quantities": {first_market: first_quantity, market: listing.quantity},
                "applied": first_quantity,
                "message": (
                    f"listing {listing.listing_id or listing.id} has quantity {first_quantity} "
                    f"on {first_market} but {listing.quantity} on {market}; "
                    f"{first_quantity} was applied"
                ),
            }
        )

    def _market_done(self, done: _MarketDone) -> BaseException | None:
        """Record how a market's feed ended; an error that is not Back Market's is returned."""
        market = self.run.markets[done.market]
        error = done.error
        if error is None:
            market["status"] = "completed"
            return None
        if isinstance(error, IncompleteFeed):
            market["status"] = "partial"
            self.market_calls[done.market] = max(self.market_calls[done.market], error.attempts)
            for page_number, page_error in sorted(error.failed_pages.items()):
                self.run.add_error(
                    {
                        "kind": "page_failed",
                        "market": done.market,
                        "page": page_number,
                        "error": type(page_error).__name__,
                        "message": str(page_error),
                    }
                )
            if not error.failed_pages:
                self.run.add_error(
                    {
                        "kind": "incomplete_feed",
                        "market": done.market,
                        "error": type(error).__name__,
                        "message": str(error),
                    }
                )
        elif isinstance(error, BackMarketError):
            # The first page failed: nothing of this market was read.
            market["status"] = "failed"
            self.market_calls[done.market] += error.attempts
            self.run.add_error(
                {
                    "kind": "market_failed",
                    "market": done.market,
                    "error": type(error).__name__,
                    "message": str(error),
                }
            )
        else:
            market["status"] = "failed"
            return error
        market["error"] = str(error)
        self.run.api_calls = sum(self.market_calls.values())
        return None

    # -- writing ---------------------------------------------------------------------------------

    async def _flush(self, pending: list[_Observed]) -> None:
        """Apply one batch and save the run's progress, in one short transaction."""
        if self.check_lock and not await self.held.still_held():
            raise _LockLost()
        for attempt in range(1, BATCH_ATTEMPTS + 1):
            try:
                async with transaction(self.engine) as conn:
                    outcome = await self._apply(conn, pending)
                    saved = self.run.model_copy(deep=True)
                    outcome.add_to(saved)
                    await runs.save_run(conn, run=saved)
            except sa.exc.OperationalError as exc:
                if attempt == BATCH_ATTEMPTS or not is_retryable_conflict(exc):
                    raise
                log.warning("bulk sync run %d: batch hit %s, repeating it", self.run.id, exc.orig)
                continue
            break
        # Only a committed batch counts: a repeated one must not find its own marks.
        outcome.add_to(self.run)
        for variation_id in outcome.matched_variation_ids:
            self.matched_variations.add(variation_id)
        LISTINGS_APPLIED.labels("updated").inc(outcome.written.updated)
        LISTINGS_APPLIED.labels("unchanged").inc(outcome.written.unchanged)
        LISTINGS_APPLIED.labels("skipped_newer").inc(outcome.written.skipped_newer)
        LISTINGS_APPLIED.labels("unknown").inc(outcome.unknown)
        self._report()

    async def _apply(self, conn: AsyncConnection, pending: list[_Observed]) -> _BatchOutcome:
        outcome = _BatchOutcome()
        if not pending:
            return outcome
        # A listing repeated within the batch (the catalogue shifted between pages): the copy
        # from the later-requested page is the newer one.
        by_uuid: dict[str, _Observed] = {}
        for observed in pending:
            kept = by_uuid.get(observed.listing.id)
            if kept is None or observed.cutoff >= kept.cutoff:
                by_uuid[observed.listing.id] = observed
        by_listing_id = {
            str(observed.listing.listing_id): observed
            for observed in by_uuid.values()
            if observed.listing.listing_id is not None
        }
        # MySQL compares these columns case- and trailing-space-insensitively; look the rows it
        # returns up the same way.
        uuid_key = {_match_key(key): observed for key, observed in by_uuid.items()}
        listing_id_key = {_match_key(key): observed for key, observed in by_listing_id.items()}

        # variation id -> the listing it follows; a UUID match beats a listing_id match.
        assigned: dict[int, _Observed] = {}
        for variation_id, _reference_id, reference_uuid in await _variations_by(
            conn, variation_table.c.reference_uuid, list(by_uuid)
        ):
            by_reference_uuid = uuid_key.get(_match_key(reference_uuid))
            if by_reference_uuid is not None:
                assigned[variation_id] = by_reference_uuid
        for variation_id, reference_id, _reference_uuid in await _variations_by(
            conn, variation_table.c.reference_id, list(by_listing_id)
        ):
            by_reference_id = listing_id_key.get(_match_key(reference_id))
            if by_reference_id is not None:
                assigned.setdefault(variation_id, by_reference_id)

        matched_listings = {observed.listing.id for observed in assigned.values()}
        outcome.matched = len(matched_listings)
        unknown = [observed for uuid_, observed in by_uuid.items() if uuid_ not in matched_listings]
        outcome.unknown = len(unknown)

        # A variation already written by an earlier batch of this run keeps that value.
        targets = {
            variation_id: observed
            for variation_id, observed in assigned.items()
            if variation_id not in self.matched_variations
        }
        if unknown and self.import_unknown:
            outcome.imported = len(unknown)
            if not self.run.dry_run:
                targets.update(await _import_variations(conn, unknown))
        outcome.matched_variation_ids = list(targets)

        observations = [
            StockObservation(
                variation_id=variation_id,
                quantity=observed.listing.quantity,
                sku=observed.listing.sku,
                publication_state=observed.listing.publication_state,
                not_changed_since=observed.cutoff,
                reference_id=_reference_of(observed.listing),
            )
            for variation_id, observed in sorted(targets.items())
        ]
        result = await write_observations(
            conn,
            marketplace_id=self.run.marketplace_id,
            observations=observations,
            change_type=ChangeType.BULK_SYNC,
            sync_run_id=self.run.id,
            dry_run=self.run.dry_run,
        )
        outcome.written.updated += result.updated
        outcome.written.unchanged += result.unchanged
        outcome.written.skipped_newer += result.skipped_newer
        outcome.written.created += result.created
        return outcome

    # -- the end ---------------------------------------------------------------------------------

    async def _finish(self) -> None:
        statuses = [self.run.markets[market]["status"] for market in self.markets]
        if all(status == "completed" for status in statuses):
            self.run.status = RunStatus.COMPLETED.value
            self.run.not_found = await self._count_not_found()
        elif self.run.pages_fetched > 0:
            self.run.status = RunStatus.PARTIAL.value
        else:
            self.run.status = RunStatus.FAILED.value
        self.run.summary = self._summary()
        await self._save_final()

    async def _count_not_found(self) -> int:
        """Variations with a Back Market reference that no listing of the complete feed matched.

        Counted, never changed: absence from a feed is not evidence of zero stock.
        """
        has_reference = sa.or_(
            sa.and_(
                variation_table.c.reference_id.is_not(None), variation_table.c.reference_id != ""
            ),
            sa.and_(
                variation_table.c.reference_uuid.is_not(None),
                variation_table.c.reference_uuid != "",
            ),
        )
        async with self.engine.connect() as conn:
            referenced = (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(variation_table).where(has_reference)
                )
            ).scalar_one()
            await conn.rollback()
        return max(0, int(referenced) - len(self.matched_variations))

    def _summary(self) -> str:
        run = self.run
        text = (
            f"{run.status}: {run.listings_seen} listings read in {run.pages_fetched} of "
            f"{run.pages_expected} pages ({run.api_calls} calls); {run.matched} matched, "
            f"{run.updated} updated, {run.unchanged} unchanged, {run.skipped_newer} skipped as "
            f"newer, {run.unknown_listings} unknown"
        )
        if self.import_unknown:
            text += f", {run.imported} {'to import' if run.dry_run else 'imported'}"
        if run.status == RunStatus.COMPLETED.value:
            text += f", {run.not_found} variations not in the feed (left untouched)"
        else:
            unread = [m for m in self.markets if run.markets[m]["status"] != "completed"]
            text += f"; not read completely: {', '.join(unread)} (not_found not computed)"
        if run.dry_run:
            text += " [dry run: no stock written]"
        return text

    async def _fail(self, error: dict[str, Any], *, summary: str) -> None:
        self.run.status = RunStatus.FAILED.value
        self.run.add_error(error)
        for market in self.markets:
            if self.run.markets[market]["status"] in ("pending", "running"):
                self.run.markets[market]["status"] = "failed"
        self.run.summary = f"failed: {summary}"
        try:
            await self._save_final()
        except Exception:
            # The row stays `running`; the next start closes it once the lock is free.
            log.exception("could not record the end of bulk sync run %d", self.run.id)

    async def _save_final(self) -> None:
        self.run.finished_at = datetime.now(UTC)
        self.run.duration_seconds = round(time.monotonic() - self.started, 3)
        async with transaction(self.engine) as conn:
            await runs.save_run(conn, run=self.run)
        RUNS_TOTAL.labels(self.run.trigger, self.run.status).inc()
        RUN_DURATION.labels(self.run.status).observe(self.run.duration_seconds)
        log.info("bulk sync run %d %s", self.run.id, self.run.summary)
        self._report()

    def _report(self) -> None:
        if self.progress is None:
            return
        try:
            self.progress(self.run.model_copy(deep=True))
        except Exception:
            # A broken progress display must not break the sync.
            log.exception("bulk sync progress callback failed")


async def _variations_by(
    conn: AsyncConnection, column: sa.Column[Any], values: Sequence[str]
) -> list[tuple[int, str | None, str | None]]:
    """(id, reference_id, reference_uuid) of the variations whose `column` is one of `values`."""
    found: list[tuple[int, str | None, str | None]] = []
    for start in range(0, len(values), MATCH_CHUNK):
        rows = await conn.execute(
            sa.select(
                variation_table.c.id,
                variation_table.c.reference_id,
                variation_table.c.reference_uuid,
            ).where(column.in_(values[start : start + MATCH_CHUNK]))
        )
        found.extend((row.id, row.reference_id, row.reference_uuid) for row in rows)
    return found


async def _import_variations(
    conn: AsyncConnection, unknown: list[_Observed]
) -> dict[int, _Observed]:
    """One multi-row insert of new variations for unknown listings; their ids mapped to them."""
    now = utcnow()
    await conn.execute(
        sa.insert(variation_table),
        [
            {
                "reference_id": None if o.listing.listing_id is None else str(o.listing.listing_id),
                "reference_uuid": o.listing.id,
                "sku": o.listing.sku,
                "state": o.listing.publication_state,
                "listed_stock": 0,
                "created_at": now,
                "updated_at": now,
            }
            for o in unknown
        ],
    )
    by_key = {_match_key(o.listing.id): o for o in unknown}
    created = await _variations_by(
        conn, variation_table.c.reference_uuid, [o.listing.id for o in unknown]
    )
    return {
        variation_id: by_key[_match_key(reference_uuid)]
        for variation_id, _, reference_uuid in created
        if _match_key(reference_uuid) in by_key
    }


def _match_key(value: str | None) -> str:
    return (value or "").strip().lower()


def _reference_of(listing: Listing) -> str:
    return str(listing.listing_id) if listing.listing_id is not None else listing.id


async def _stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


# -- runs in the background of the app --------------------------------------------------------


class BulkSyncRunner:
    """Starts runs as tasks owned by the app, so a request can answer 202 and return.

    `start` returns once the run holds its lock and has its row (a second trigger right after
    then gets 409), or raises what stopped it from starting. `shutdown` cancels the runs still
    going; each records itself as `failed` before it ends.
    """

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        client: BackMarketClient,
        settings: Settings,
        locks: NamedLocks,
    ) -> None:
        self.engine = engine
        self.client = client
        self.settings = settings
        self.locks = locks
        self._tasks: set[asyncio.Task[Run]] = set()

    @property
    def active(self) -> int:
        return sum(1 for task in self._tasks if not task.done())

    async def start(
        self,
        *,
        marketplace_id: int = BACKMARKET_MARKETPLACE_ID,
        trigger: RunTrigger = RunTrigger.API,
        dry_run: bool = False,
        import_unknown: bool = False,
    ) -> tuple[Run, asyncio.Task[Run]]:
        await check_marketplace(self.engine, marketplace_id=marketplace_id)
        started: asyncio.Future[Run] = asyncio.get_running_loop().create_future()

        def on_started(run: Run) -> None:
            if not started.done():
                started.set_result(run)

        task = asyncio.create_task(
            run_bulk_sync(
                engine=self.engine,
                client=self.client,
                settings=self.settings,
                locks=self.locks,
                marketplace_id=marketplace_id,
                trigger=trigger,
                dry_run=dry_run,
                import_unknown=import_unknown,
                on_started=on_started,
            ),
            name=f"bulk-sync-marketplace-{marketplace_id}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        await asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED)
        if started.done():
            return started.result(), task
        # It ended before it started: Conflict, InvalidRequest or a database error.
        task.result()
        raise AssertionError("a bulk sync ended without starting and without an error")

    async def run(
        self,
        *,
        marketplace_id: int = BACKMARKET_MARKETPLACE_ID,
        trigger: RunTrigger = RunTrigger.API,
        dry_run: bool = False,
        import_unknown: bool = False,
    ) -> Run:
        """Start a run and wait for its end; a caller that gives up does not stop the run."""
        _, task = await self.start(
            marketplace_id=marketplace_id,
            trigger=trigger,
            dry_run=dry_run,
            import_unknown=import_unknown,
        )
        return await asyncio.shield(task)

    def _forget(self, task: asyncio.Task[Run]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not isinstance(error, Conflict | InvalidRequest):
            log.error("bulk sync task failed before recording its run", exc_info=error)

    async def shutdown(self) -> None:
        """Cancel the runs still going and wait until each has recorded itself as failed."""
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            log.warning("shutdown: interrupting %d bulk sync run(s)", len(tasks))
            await asyncio.gather(*tasks, return_exceptions=True)


# -- the command line --------------------------------------------------------------------------


async def run_bulk_sync_cli(
    settings: Settings,
    *,
    marketplace_id: int = BACKMARKET_MARKETPLACE_ID,
    dry_run: bool = False,
    import_unknown: bool = False,
    progress: ProgressCallback | None = None,
    backmarket_http: httpx.AsyncClient | None = None,
) -> Run:
    """`stock-sync sync`: one run with trigger `cli`, on services of its own (database migrated).

    Returns the finished run (its status says completed/partial/failed). Raises Conflict when
    a run of the marketplace is going on in any process (`exc.extra["run_id"]`), InvalidRequest
    for a marketplace other than Back Market. `backmarket_http` points the client elsewhere
    (tests, the demo).
    """
    async with open_services(settings, backmarket_http=backmarket_http, migrate=False) as services:
        return await run_bulk_sync(
            engine=services.engine,
            client=services.backmarket,
            settings=settings,
            locks=services.locks,
            marketplace_id=marketplace_id,
            trigger=RunTrigger.CLI,
            dry_run=dry_run,
            import_unknown=import_unknown,
            progress=progress,
        )
