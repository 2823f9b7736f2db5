"""One poll of Back Market's orders feed: which listings sold (or took a sale back) since the
last poll, re-read from Back Market and written through the one stock writer.

The pattern is an incremental sync with a cursor (Airbyte's DatetimeBasedCursor, dlt's
`incremental`): a watermark in the database (the newest `date_modification` written), a
look-back overlap on every read, and a repeat that is harmless because

* order lines already acted on in the same state are skipped (`backmarket_order_lines`), so a
  poll that finds no new orders costs one call;
* stock is never decremented from an order line: the listing is read again, so whatever the
  feed repeats, the database ends at what Back Market holds;
* the watermark advances in the same transaction that writes the poll's stock, so a crash in
  the middle repeats the poll instead of skipping it.

Only one poll runs at a time across processes (`stock_sync:orders`, the bulk sync's lock style);
a replica that finds it held skips its turn. A scheduled poll also skips its turn when another
process's poll succeeded less than most of an interval ago, so N replicas still read the feed
about once per interval, not N times.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncConnection

from app.config import FIRST_MARKETPLACE_ID
from app.db import database_now, transaction
from app.errors import DomainError
from app.models import ChangeType, Variation, table_of, utcnow
from app.services import marketplace as mp
from app.services import sales
from app.services.context import ServiceContext
from app.services.locks import LockBusy
from app.services.orders import status
from app.services.quantity import add_quantity
from app.services.stock import StockObservation, write_observations

log = logging.getLogger(__name__)

ORDERS_LOCK = "stock_sync:orders"
# A poll saves its outcome before it lets go of the lock. A poll that finds the lock taken waits
# this long, so that one finishing (its failure already recorded) does not cost another
# process its turn; a poll still reading the feed keeps the lock longer, and this one skips.
FINISHING_POLL_WAIT_SECONDS = 2.0


def orders_lock_name(marketplace_id: int) -> str:
    """One poller at a time per marketplace; marketplace 1 keeps the lock's original name."""
    return (
        ORDERS_LOCK if marketplace_id == FIRST_MARKETPLACE_ID else f"{ORDERS_LOCK}:{marketplace_id}"
    )


# `backmarket_order_lines.compensated_by` of a line the watcher claimed, then subtracted.
WATCHER_CLAIM = "order_sync:claimed"
COMPENSATED_BY_WATCHER = "order_sync"


variation_table = table_of(Variation)

POLLS = Counter(
    "stock_sync_order_polls_total",
    "Orders watcher polls, by marketplace and outcome.",
    ["marketplace_id", "outcome"],
)
LAST_POLL = Gauge(
    "stock_sync_order_last_poll_timestamp_seconds",
    "Unix time of the orders watcher's last poll that read the whole feed, by marketplace.",
    ["marketplace_id"],
)


@dataclass
class PollOutcome:
    at: datetime
    calls: int = 0
    orders: int = 0
    new_lines: int = 0
    listings_refreshed: int = 0
    compensated_lines: int = 0
    watermark: datetime | None = None
    error: str | None = None
    refreshed_variation_ids: list[int] = field(default_factory=list)


async def poll_orders(
    ctx: ServiceContext,
    marketplace: mp.Marketplace,
    *,
    overlap: timedelta,
    unless_polled_within: timedelta | None = None,
) -> PollOutcome | None:
    """Poll the marketplace's orders once; None when another process is polling them right
    now, or (`unless_polled_within`) when a poll succeeded less than that long ago."""
    try:
        async with ctx.locks.hold(
            orders_lock_name(marketplace.id), timeout=FINISHING_POLL_WAIT_SECONDS
        ):
            watch = await status.read_watch(ctx.engine, marketplace_id=marketplace.id)
            if unless_polled_within is not None and _succeeded_within(watch, unless_polled_within):
                log.debug("orders poll skipped: another process polled less than an interval ago")
                POLLS.labels(str(marketplace.id), "skipped_recent").inc()
                return None
            return await _Poll(ctx, marketplace, overlap=overlap).run(watch)
    except LockBusy:
        log.debug("orders poll skipped: another process is polling")
        POLLS.labels(str(marketplace.id), "skipped_busy").inc()
        return None


def _succeeded_within(watch: sa.Row[tuple[object, ...]] | None, window: timedelta) -> bool:
    """Whether the last poll (any process's: the database keeps one) succeeded within `window`.
    Its time is the polling process's clock: replicas' clocks need only roughly agree."""
    last = status.last_poll_of(watch)
    if last is None or last.error is not None or last.at is None:
        return False
    return datetime.now(UTC) - last.at < window


def _subtraction_key(marketplace_id: int, line_ids: Sequence[int]) -> str:
    """The Idempotency-Key of the watcher's subtraction of these lines. Keys are global and line
    ids per marketplace, so any marketplace but 1 (whose keys stay as they were) is named."""
    scope = "" if marketplace_id == FIRST_MARKETPLACE_ID else f"{marketplace_id}:"
    key = f"order-sync:{scope}" + ",".join(str(line_id) for line_id in line_ids)
    return key[:255]


@dataclass(frozen=True, slots=True)
class _Target:
    variation_id: int
    ref: mp.ListingRef
    first_line: mp.OrderLine


class _Poll:
    def __init__(
        self, ctx: ServiceContext, marketplace: mp.Marketplace, *, overlap: timedelta
    ) -> None:
        self.ctx = ctx
        self.marketplace = marketplace
        self.overlap = overlap
        self.outcome = PollOutcome(at=utcnow())

    async def run(self, watch: sa.Row[tuple[object, ...]] | None) -> PollOutcome:
        """The poll, from the watch row read under the orders lock."""
        watermark = watch.watermark if watch is not None else None
        since = (watermark or self.outcome.at) - self.overlap
        # Until an order is seen there is no order date to keep; keeping where this read
        # starts makes a later poll (after a downtime, or after failed polls) start there too,
        # not at its own clock minus the overlap, which would skip what came in between.
        anchor = since if watermark is None else None
        try:
            lines = await self._read_feed(since)
            async with transaction(self.ctx.engine) as conn:
                events = await self._events(conn, lines)
                targets = await self._targets(conn, events)
                cutoff = await database_now(conn)
            listings = await self._read_listings(targets)
            async with transaction(self.ctx.engine) as conn:
                await self._write(conn, targets, listings, cutoff=cutoff)
                await sales.record_lines(
                    conn, events, marketplace_id=self.marketplace.id, seen_at=self.outcome.at
                )
                await sales.forget_old_additions(conn, now=cutoff)
                await status.save_poll(
                    conn,
                    marketplace_id=self.marketplace.id,
                    at=self.outcome.at,
                    calls=self.outcome.calls,
                    orders=self.outcome.orders,
                    listings_refreshed=self.outcome.listings_refreshed,
                    error=None,
                    watermark=self.outcome.watermark or anchor,
                )
        except mp.MarketplaceError as exc:
            return await self._failed(str(exc), anchor=anchor)
        LAST_POLL.labels(str(self.marketplace.id)).set(self.outcome.at.timestamp())
        await self._compensate()
        POLLS.labels(str(self.marketplace.id), "ok").inc()
        if events:
            log.info(
                "orders poll: %d orders read, %d new line events, %d listings refreshed (%d calls)",
                self.outcome.orders,
                len(events),
                self.outcome.listings_refreshed,
                self.outcome.calls,
            )
        return self.outcome

    async def _read_feed(self, since: datetime) -> list[tuple[mp.OrderLine, datetime | None]]:
        lines: list[tuple[mp.OrderLine, datetime | None]] = []
        newest = None
        try:
            async for page in self.marketplace.read_order_lines(
                since=since, by="changed", kind=mp.CallKind.WATCHER
            ):
                self.outcome.calls += page.requests
                self.outcome.orders += page.orders
                changed = page.newest_change
                if changed is not None and (newest is None or changed > newest):
                    newest = changed
                lines.extend((line, line.order_changed_at) for line in page.lines)
        except mp.MarketplaceError as exc:
            # The page that failed was sent too, with its retries.
            self.outcome.calls += exc.attempts
            raise
        self.outcome.watermark = newest
        return lines

    async def _events(
        self,
        conn: AsyncConnection,
        lines: list[tuple[mp.OrderLine, datetime | None]],
    ) -> list[sales.LineEvent]:
        fresh = await sales.new_events(conn, lines, marketplace_id=self.marketplace.id)
        variations = await sales.variations_of_lines(
            conn,
            [line for line, _ in fresh],
            marketplace_id=self.marketplace.id,
        )
        self.outcome.new_lines = len(fresh)
        return [
            sales.LineEvent(
                line=line, order_modified_at=modified, variation_id=variations.get(line.id)
            )
            for line, modified in fresh
        ]

    async def _targets(
        self, conn: AsyncConnection, events: Sequence[sales.LineEvent]
    ) -> list[_Target]:
        """One listing read per variation, however many of its lines the poll brought."""
        first: dict[int, sales.LineEvent] = {}
        for event in events:
            if event.variation_id is not None:
                first.setdefault(event.variation_id, event)
        if not first:
            return []
        rows = await conn.execute(
            sa.select(
                variation_table.c.id,
                variation_table.c.reference_id,
                variation_table.c.reference_uuid,
                variation_table.c.sku,
            ).where(variation_table.c.id.in_(sorted(first)), variation_table.c.deleted_at.is_(None))
        )
        targets = []
        for variation_id, reference_id, reference_uuid, sku in rows:
            line = first[variation_id].line
            ref = ""
            if self.marketplace.id == FIRST_MARKETPLACE_ID:
                ref = (reference_uuid or "").strip() or (reference_id or "").strip()
            ref = ref or (line.listing_ref or "").strip()
            sku = (sku or "").strip() or (line.sku or "").strip()
            if ref or sku:
                targets.append(
                    _Target(
                        variation_id=variation_id,
                        ref=mp.ListingRef(reference=ref or None, sku=sku or None),
                        first_line=line,
                    )
                )
        return targets

    async def _read_listings(self, targets: Sequence[_Target]) -> dict[int, mp.Listing]:
        if not targets:
            return {}
        sent_before = self.marketplace.requests_total
        try:
            found = await self.marketplace.get_listings(
                [target.ref for target in targets], kind=mp.CallKind.WATCHER
            )
        finally:
            self.outcome.calls += self.marketplace.requests_total - sent_before
        listings: dict[int, mp.Listing] = {}
        for target in targets:
            listing = found.get(target.ref)
            if listing is None:
                # Deleted or no longer the seller's: nothing to refresh, the sale stays recorded.
                log.warning(
                    "orders poll: listing %s not found on marketplace %d",
                    target.ref,
                    self.marketplace.id,
                )
            else:
                listings[target.variation_id] = listing
        return listings

    async def _write(
        self,
        conn: AsyncConnection,
        targets: Sequence[_Target],
        listings: dict[int, mp.Listing],
        *,
        cutoff: datetime,
    ) -> None:
        observations = [
            StockObservation(
                variation_id=target.variation_id,
                quantity=listings[target.variation_id].quantity,
                sku=listings[target.variation_id].sku,
                publication_state=listings[target.variation_id].state,
                listing_reference=listings[target.variation_id].id,
                # A change written after the reads were sent may be newer than what they saw.
                not_changed_since=cutoff,
                order_id=target.first_line.order_id,
                order_item_id=target.first_line.id,
            )
            for target in targets
            if target.variation_id in listings
        ]
        await write_observations(
            conn,
            marketplace_id=self.marketplace.id,
            observations=observations,
            change_type=ChangeType.ORDER_SYNC,
        )
        self.outcome.listings_refreshed = len(observations)
        self.outcome.refreshed_variation_ids = [obs.variation_id for obs in observations]

    async def _compensate(self) -> None:
        """Subtract the sales that an addition in flight overwrote and Back Market showed late.

        A claim is taken as `WATCHER_CLAIM` and settled as `COMPENSATED_BY_WATCHER` once the
        subtraction is answered. Whatever stops it in between (Back Market, the database,
        a cancellation, a crash) leaves the claim unsettled, and the next poll, holding the
        orders lock so no other poll is compensating, gives it back before claiming: a
        release that needs no working database at the moment of the failure. The retry runs
        under the same idempotency key, so a subtraction that did land is replayed, not sent
        twice.
        """
        async with transaction(self.ctx.engine) as conn:
            released = await sales.release_unsettled_claims(
                conn, marketplace_id=self.marketplace.id, by=WATCHER_CLAIM
            )
            pending = await sales.inside_additions(conn, marketplace_id=self.marketplace.id)
        if released:
            log.warning(
                "orders poll: order lines %s were claimed by a subtraction that did not finish; "
                "tried again now",
                released,
            )
        by_variation: dict[int, list[sales.LineEvent]] = {}
        for event in pending:
            if event.variation_id is not None:
                by_variation.setdefault(event.variation_id, []).append(event)
        for variation_id, events in by_variation.items():
            async with transaction(self.ctx.engine) as conn:
                claimed = await sales.claim_for_compensation(
                    conn,
                    events,
                    marketplace_id=self.marketplace.id,
                    by=WATCHER_CLAIM,
                    at=utcnow(),
                )
            if not claimed:
                continue
            line_ids = [event.line.id for event in claimed]
            units = sum(event.line.quantity for event in claimed)
            key = _subtraction_key(self.marketplace.id, line_ids)
            try:
                await add_quantity(
                    self.ctx,
                    marketplace_id=self.marketplace.id,
                    variation_id=variation_id,
                    quantity=-units,
                    idempotency_key=key,
                    floor_at_zero=True,
                )
            except Exception as exc:
                log.warning(
                    "orders poll: could not subtract %d unit(s) sold during an addition to "
                    "variation %d (tried again next poll): %s",
                    units,
                    variation_id,
                    exc.detail if isinstance(exc, DomainError) else repr(exc),
                )
                continue
            async with transaction(self.ctx.engine) as conn:
                await sales.settle_claims(
                    conn,
                    line_ids,
                    marketplace_id=self.marketplace.id,
                    by=COMPENSATED_BY_WATCHER,
                )
            self.outcome.compensated_lines += len(claimed)
            log.warning(
                "orders poll: subtracted %d unit(s) of variation %d sold during an addition "
                "and shown by Back Market only later (order lines %s)",
                units,
                variation_id,
                line_ids,
            )

    async def _failed(self, error: str, *, anchor: datetime | None) -> PollOutcome:
        """Nothing of this poll is kept but the error (and, before any order was seen, where
        its read started): the next poll reads the same orders."""
        self.outcome.error = error
        self.outcome.watermark = None
        POLLS.labels(str(self.marketplace.id), "error").inc()
        log.warning("orders poll failed (retried next poll): %s", error)
        async with transaction(self.ctx.engine) as conn:
            await status.save_poll(
                conn,
                marketplace_id=self.marketplace.id,
                at=self.outcome.at,
                calls=self.outcome.calls,
                orders=self.outcome.orders,
                listings_refreshed=0,
                error=error,
                watermark=anchor,
            )
        return self.outcome
