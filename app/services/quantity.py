"""On-demand quantity: a live refresh of one variation, and add-quantity that never loses or
doubles an addition.

Both work on one variation under its lock (`variation_lock.hold_variation`), shared by every
process, so two changes of one variation run one after the other and both land. Each
Back Market call is made with no database transaction open; the result is written in a
short transaction afterwards, through the one stock writer (`stock.write_observations`).

Add-quantity is fetch-then-update, because Back Market has no compare-and-set and no
relative update: read the live quantity, send `previous + n`, record what Back Market
answers (its quantity is the truth). Known limit: Back Market decrements stock itself when a
customer orders, and an order landing between our read and our write is overwritten by the
write (the sold unit reappears in stock). Nothing on our side can close that window; it is
kept as short as it can be: the lock is taken and the update budget reserved first, then
the listing is read and the update sent straight after, so the window is the time between
one GET's answer and the next POST's arrival. When Back Market answers a quantity other
than the one sent, that answer is recorded and a warning is logged.

An update that was sent but never answered (timeout, dropped connection, 5xx) may or may
not have been applied. Without an Idempotency-Key the caller is told so (504) and must look
before retrying; with a key the retry resolves it safely (see `add_quantity`).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from prometheus_client import Counter
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.config import Settings
from app.db import in_transaction, is_mysql, now_expression
from app.errors import (
    Conflict,
    DomainError,
    InvalidRequest,
    NotFound,
    TooManyRequests,
    Unavailable,
    UpstreamFailed,
    UpstreamOutcomeUnknown,
)
from app.models import ChangeType, Marketplace, MarketplaceStock, Variation, as_utc, table_of
from app.services import backmarket as bm
from app.services import idempotency, update_budget
from app.services.locks import HeldLock, LockBusy, NamedLocks
from app.services.stock import StockObservation, StockWriteResult, write_observations
from app.services.variation_lock import hold_variation

log = logging.getLogger(__name__)

variation_table = table_of(Variation)
stock_table = table_of(MarketplaceStock)
marketplace_table = table_of(Marketplace)

# The only marketplace with a Back Market client; others are answered from the database only.
BACKMARKET_MARKETPLACE_ID = 1

# A page load waits less than a person adding stock: it can fall back on stored values.
REFRESH_LOCK_TIMEOUT_SECONDS = 10.0
ADD_LOCK_TIMEOUT_SECONDS = 30.0
# Back Market (Cloudflare) blocks for 10 s after a 429 and rarely says for how long.
DEFAULT_RATE_LIMIT_RETRY_SECONDS = 10

REFRESH_OUTCOMES = Counter(
    "stock_sync_quantity_refresh_total",
    "GET /variations/{id}/quantity answers, by outcome "
    "(refreshed, unchanged, skipped_newer, from_database, stale_<reason>).",
    ["outcome"],
)
ADD_QUANTITY_OUTCOMES = Counter(
    "stock_sync_add_quantity_total",
    "POST /variations/{id}/add-quantity answers, by outcome.",
    ["outcome"],
)


class Quantity(BaseModel):
    """The contract's `Quantity`: the stock of one variation on one marketplace."""

    variation_id: int
    marketplace_id: int
    reference_id: str | None
    reference_uuid: str | None
    sku: str | None
    publication_state: int | None
    # The marketplace's listed stock (0 when the variation was never synced there).
    quantity: int
    locked_stock: int
    available_stock: int
    variation_listed_stock: int
    synced_at: datetime | None
    # True when Back Market could not be read and the stored value is returned.
    stale: bool
    error: str | None


class AddResult(BaseModel):
    """The contract's `AddResult`."""

    variation_id: int
    marketplace_id: int
    # Read from Back Market just before the update.
    previous_quantity: int
    added: int
    # What Back Market holds after the update.
    quantity: int
    available_stock: int
    variation_listed_stock: int
    # True when this answer comes from an earlier request with the same Idempotency-Key
    # (nothing was sent to Back Market by this one).
    idempotent_replay: bool


@dataclass(frozen=True, slots=True)
class _VariationRef:
    id: int
    reference_id: str | None
    reference_uuid: str | None

    @property
    def listing_ref(self) -> str:
        """The UUID when known (Back Market's preferred id), else the integer listing_id."""
        ref = (self.reference_uuid or "").strip() or (self.reference_id or "").strip()
        if not ref:
            raise Conflict(
                f"variation {self.id} has no Back Market reference "
                "(neither reference_id nor reference_uuid is set)",
                reason="no_reference",
            )
        return ref


# -- public service functions ------------------------------------------------------------


async def refresh_quantity(
    *,
    engine: AsyncEngine,
    client: bm.BackMarketClient,
    settings: Settings,
    locks: NamedLocks,
    variation_id: int,
    marketplace_id: int = BACKMARKET_MARKETPLACE_ID,
    refresh: bool = True,
    lock_timeout: float = REFRESH_LOCK_TIMEOUT_SECONDS,
) -> Quantity:
    """The variation's stock, read live from Back Market first when `refresh`.

    The live value is written as one `refresh` change (sku and publication state too) unless
    the row changed after the read was sent (then the newer stored value is answered).
    When Back Market cannot be read, or another change of the variation holds its lock for
    longer than `lock_timeout`, the stored values are answered with `stale=True` and `error`
    saying why, and nothing is changed. `refresh=False` answers from the database without
    calling Back Market, so it needs neither a reference nor a marketplace with a client.

    Raises NotFound (unknown variation), Conflict (no Back Market reference),
    InvalidRequest (marketplace unknown, or without a client when refreshing).

    Cost, the hot path: one pooled connection on MySQL (the lock's), one statement before the
    GET (checks, stored row and database clock together), the stock write after it, and no
    read-back (the answer is built from the write's result).
    """
    if not refresh or marketplace_id != BACKMARKET_MARKETPLACE_ID:
        # A live read of another marketplace is refused here (InvalidRequest), without
        # queueing for the lock; the other checks run under it, in the read before the GET.
        async with engine.connect() as conn:
            stored = await _read_stored(
                conn, variation_id=variation_id, marketplace_id=marketplace_id, live=refresh
            )
        REFRESH_OUTCOMES.labels(outcome="from_database").inc()
        return stored.quantity()
    try:
        async with hold_variation(
            engine=engine,
            locks=locks,
            settings=settings,
            variation_id=variation_id,
            wait_seconds=lock_timeout,
            # Everything below runs through held.connection().
            connections=1,
        ) as held:
            async with held.connection() as conn:
                # Read once the lock is held and before the GET is sent, so its clock is the
                # cutoff: a change recorded after it is newer than what Back Market is about
                # to tell us, and must not be overwritten.
                before = await _read_stored(
                    conn,
                    variation_id=variation_id,
                    marketplace_id=marketplace_id,
                    live=True,
                    for_refresh=True,
                )
            variation = before.variation
            listing_ref = variation.listing_ref
            try:
                listing = await client.get_listing(listing_ref)
            except bm.BackMarketError as exc:
                REFRESH_OUTCOMES.labels(outcome=f"stale_{_error_kind(exc)}").inc()
                log.warning("refresh of variation %s: Back Market not read: %s", variation_id, exc)
                # Read again: the stored values may have changed while Back Market was asked.
                async with held.connection() as conn:
                    now_stored = await _read_stored(
                        conn, variation_id=variation_id, marketplace_id=marketplace_id, live=True
                    )
                return now_stored.quantity(error=_read_failure_message(exc, listing_ref))
            async with held.connection() as conn, conn.begin():
                written = await write_observations(
                    conn,
                    marketplace_id=marketplace_id,
                    observations=[
                        _observation(variation, listing, not_changed_since=before.read_at)
                    ],
                    change_type=ChangeType.REFRESH,
                )
                identity = await _remember_listing_identity(conn, variation, listing)
                answer = _refreshed_quantity(conn, before, listing, written, identity)
                if answer is None:
                    # A newer change was kept (or the variation went meanwhile): answer what
                    # the database holds now, inside the same transaction.
                    stored_now = await _read_stored(
                        conn, variation_id=variation_id, marketplace_id=marketplace_id, live=True
                    )
                    answer = stored_now.quantity()
    except LockBusy:
        async with engine.connect() as conn:
            # Checked like a refresh: an invalid request is refused, not answered stale.
            stored = await _read_stored(
                conn, variation_id=variation_id, marketplace_id=marketplace_id, live=True
            )
        REFRESH_OUTCOMES.labels(outcome="stale_busy").inc()
        return stored.quantity(
            error=(
                f"another stock change of variation {variation_id} has been running for "
                f"{lock_timeout:g} s; stored values returned"
            )
        )
    outcome = (
        "skipped_newer"
        if written.skipped_newer
        else "refreshed"
        if written.updated
        else "unchanged"
    )
    REFRESH_OUTCOMES.labels(outcome=outcome).inc()
    return answer


async def add_quantity(
    *,
    engine: AsyncEngine,
    client: bm.BackMarketClient,
    settings: Settings,
    locks: NamedLocks,
    variation_id: int,
    quantity: int,
    marketplace_id: int = BACKMARKET_MARKETPLACE_ID,
    idempotency_key: str | None = None,
    lock_timeout: float = ADD_LOCK_TIMEOUT_SECONDS,
) -> AddResult:
    """Add `quantity` (negative removes) to the variation's listing on Back Market.

    Under the variation's lock: reserve one update of the hourly budget, read the live
    quantity, refuse if the result would be below zero (the reservation is given back), send
    `previous + quantity`, record Back Market's answer as an `add_quantity` change (with the
    key in its history row). No database transaction is open during either HTTP call.

    With `idempotency_key`:
    - the same key and body again answers the first result (`idempotent_replay=True`)
      without calling Back Market; another body with the key is a Conflict;
    - a repeat while the first is running waits for it (same lock), then replays;
    - after an unknown outcome, the repeat re-reads the listing: the target is there →
      recorded as applied and answered; the previous quantity is still there → sent again;
      anything else → Conflict with previous, target and current quantities.

    Raises InvalidRequest (bad quantity or key, marketplace without client), NotFound,
    Conflict (no reference, below zero, key reused, variation busy beyond `lock_timeout`,
    unresolvable unknown outcome), TooManyRequests (budget spent or Back Market's 429; with
    Retry-After), UpstreamFailed (Back Market failed; nothing recorded as applied),
    UpstreamOutcomeUnknown (sent, no answer: may or may not be applied).
    """
    try:
        check_added_quantity(quantity, limit=settings.add_quantity_limit)
        if idempotency_key is not None and (problem := idempotency.key_problem(idempotency_key)):
            raise InvalidRequest(problem)
        async with engine.connect() as conn:
            variation = (
                await _read_stored(
                    conn, variation_id=variation_id, marketplace_id=marketplace_id, live=True
                )
            ).variation
        addition = _Addition(
            engine=engine,
            client=client,
            settings=settings,
            variation=variation,
            marketplace_id=marketplace_id,
            added=quantity,
            key=idempotency_key,
            listing_ref=variation.listing_ref,
        )
        if idempotency_key is not None:
            # A settled key is answered at once, without queueing behind the lock.
            earlier = await idempotency.find_key(engine, idempotency_key)
            if earlier is not None and (replay := addition.settled_answer(earlier)) is not None:
                ADD_QUANTITY_OUTCOMES.labels(outcome="replayed").inc()
                return replay
        try:
            async with hold_variation(
                engine=engine,
                locks=locks,
                settings=settings,
                variation_id=variation_id,
                wait_seconds=lock_timeout,
            ) as held:
                addition.held = held.lock
                result, outcome = await addition.run()
        except LockBusy:
            raise Conflict(
                f"another stock change of variation {variation_id} has been running for "
                f"{lock_timeout:g} s; nothing was sent, try again",
                reason="busy",
            ) from None
    except DomainError as exc:
        ADD_QUANTITY_OUTCOMES.labels(outcome=_refusal_outcome(exc)).inc()
        raise
    ADD_QUANTITY_OUTCOMES.labels(outcome=outcome).inc()
    return result


def check_added_quantity(quantity: object, *, limit: int) -> int:
    """A non-zero integer within ±limit (ADD_QUANTITY_LIMIT), or InvalidRequest."""
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise InvalidRequest(f"quantity must be an integer, got {type(quantity).__name__}")
    if quantity == 0:
        raise InvalidRequest("quantity must not be zero")
    if abs(quantity) > limit:
        raise InvalidRequest(
            f"quantity must be between -{limit} and {limit} (ADD_QUANTITY_LIMIT), got {quantity}"
        )
    return quantity


# -- add-quantity, step by step ----------------------------------------------------------


@dataclass
class _Addition:
    """One add-quantity request; `run` is called while the variation's lock is held."""

    engine: AsyncEngine
    client: bm.BackMarketClient
    settings: Settings
    variation: _VariationRef
    marketplace_id: int
    added: int
    key: str | None
    listing_ref: str
    held: HeldLock | None = None

    @property
    def fingerprint(self) -> str:
        return idempotency.request_hash(
            variation_id=self.variation.id, marketplace_id=self.marketplace_id, quantity=self.added
        )

    def settled_answer(self, record: idempotency.KeyRecord) -> AddResult | None:
        """The stored answer of a succeeded key; Conflict when the key was for another body."""
        if record.request_hash != self.fingerprint:
            raise Conflict(
                "this Idempotency-Key was already used with a different request "
                f"(variation {record.variation_id}, marketplace {record.marketplace_id}); "
                "use a new key for a new request",
                reason="idempotency_key_reused",
                idempotency_key=record.key,
            )
        if record.status is idempotency.KeyStatus.SUCCEEDED and record.response is not None:
            return AddResult.model_validate({**record.response, "idempotent_replay": True})
        return None

    async def run(self) -> tuple[AddResult, str]:
        if self.key is not None:
            claim = await idempotency.claim_key(
                self.engine,
                key=self.key,
                request_hash=self.fingerprint,
                variation_id=self.variation.id,
                marketplace_id=self.marketplace_id,
                ttl_hours=self.settings.idempotency_ttl_hours,
            )
            if not claim.claimed:
                # Re-checked under the lock: the request we queued behind may have settled it.
                replay = self.settled_answer(claim.record)
                if replay is not None:
                    return replay, "replayed"
                if claim.record.may_have_been_applied:
                    return await self._resolve_unknown_outcome(claim.record)
                # Claimed by a request that died before sending anything: carry on with it.
        # Reserved before the read, so that nothing but the POST itself separates our read
        # from our write (see the module docstring on orders landing in between).
        reservation = await self._reserve()
        try:
            live = await self._read_live()
            previous = live.quantity
            target = previous + self.added
            if target < 0:
                raise Conflict(
                    f"adding {self.added} to Back Market's quantity {previous} would leave "
                    f"{target}; nothing was sent",
                    reason="below_zero",
                    current_quantity=previous,
                    added=self.added,
                )
        except DomainError:
            await update_budget.release_update(self.engine, reservation)
            await self._forget_key()
            raise
        answered = await self._send(reservation, previous=previous, target=target)
        return await self._record(answered, previous=previous, replay=False), "applied"

    async def _resolve_unknown_outcome(
        self, record: idempotency.KeyRecord
    ) -> tuple[AddResult, str]:
        previous, target = record.previous_quantity, record.target_quantity
        assert previous is not None and target is not None
        live = await self._read_live()
        if live.quantity == target:
            log.info(
                "variation %s: update to %s found applied after an unknown outcome (key %r)",
                self.variation.id,
                target,
                self.key,
            )
            # The addition was made by the earlier request; this one sent nothing.
            return await self._record(live, previous=previous, replay=True), "confirmed"
        if live.quantity == previous:
            log.info(
                "variation %s: update to %s was not applied; sending it again (key %r)",
                self.variation.id,
                target,
                self.key,
            )
            answered = await self._send(await self._reserve(), previous=previous, target=target)
            return await self._record(answered, previous=previous, replay=False), "resent"
        raise Conflict(
            f"an earlier request with this Idempotency-Key sent {target} (from {previous}) "
            f"without an answer, and Back Market now holds {live.quantity}: it cannot be told "
            "whether that update was applied. Nothing was sent; a person must decide.",
            reason="outcome_unresolved",
            previous_quantity=previous,
            target_quantity=target,
            current_quantity=live.quantity,
            idempotency_key=self.key,
        )

    async def _read_live(self) -> bm.Listing:
        try:
            return await self.client.get_listing(self.listing_ref)
        except bm.BackMarketError as exc:
            raise _upstream_error(
                exc, doing=f"reading listing {self.listing_ref}", listing_ref=self.listing_ref
            ) from exc

    async def _reserve(self) -> update_budget.Reservation:
        """One update of the hourly budget, or TooManyRequests with Retry-After."""
        try:
            return await update_budget.reserve_update(
                self.engine,
                limit=self.settings.backmarket_updates_per_hour,
                listing_ref=self.listing_ref,
            )
        except update_budget.BudgetExhausted as exc:
            await self._forget_key()
            raise TooManyRequests(
                f"{exc}; nothing was sent",
                headers={"Retry-After": str(exc.retry_after)},
                reason="update_budget_spent",
                retry_after_seconds=exc.retry_after,
            ) from None
        except update_budget.BudgetLockBusy as exc:
            await self._forget_key()
            raise Unavailable(f"{exc}; nothing was sent, try again", reason="busy") from None

    async def _send(
        self, reservation: update_budget.Reservation, *, previous: int, target: int
    ) -> bm.Listing:
        """Send `target`; leave the budget and the key in the state the outcome calls for."""
        if self.held is not None and not await self.held.still_held():
            # The lock's connection died: another process may be changing this variation.
            await update_budget.release_update(self.engine, reservation)
            await self._forget_key()
            raise Unavailable(
                f"the lock of variation {self.variation.id} was lost; nothing was sent, try again",
                reason="lock_lost",
            )
        if self.key is not None:
            await idempotency.mark_sending(
                self.engine, key=self.key, previous_quantity=previous, target_quantity=target
            )
        try:
            answered = await self.client.update_listing(self.listing_ref, quantity=target)
        except bm.OutcomeUnknown as exc:
            if self.key is not None:
                await idempotency.mark_unknown(
                    self.engine, key=self.key, previous_quantity=previous, target_quantity=target
                )
            log.warning(
                "variation %s: update %s -> %s has an unknown outcome: %s",
                self.variation.id,
                previous,
                target,
                exc,
            )
            advice = (
                "retry with the same Idempotency-Key: it checks Back Market before sending again"
                if self.key is not None
                else "check the quantity on Back Market before trying again, and send an "
                "Idempotency-Key so that a retry can resolve this safely"
            )
            raise UpstreamOutcomeUnknown(
                f"the update of listing {self.listing_ref} from {previous} to {target} was sent "
                f"and got no usable answer, so it may or may not have been applied; {advice}",
                reason="outcome_unknown",
                previous_quantity=previous,
                target_quantity=target,
                idempotency_key=self.key,
            ) from exc
        except bm.BackMarketError as exc:
            if isinstance(exc, bm.RateLimited | bm.Unavailable):
                # The client gives these up only when no attempt was processed.
                await update_budget.release_update(self.engine, reservation)
            await self._forget_key()
            raise _upstream_error(
                exc, doing=f"updating listing {self.listing_ref}", listing_ref=self.listing_ref
            ) from exc
        if answered.quantity != target:
            # Recorded as Back Market says (its answer is the truth), but worth a look: an
            # order landed in between, or the update is still being processed (202).
            log.warning(
                "variation %s: sent %s, Back Market answered %s",
                self.variation.id,
                target,
                answered.quantity,
            )
        return answered

    async def _record(self, listing: bm.Listing, *, previous: int, replay: bool) -> AddResult:
        """Back Market's answer, written as one add_quantity change; the key settled with it."""
        note = (
            f"add {self.added:+d}: {previous} -> {previous + self.added} sent, "
            f"Back Market answered {listing.quantity}"
        )

        async def write(conn: AsyncConnection) -> AddResult:
            await write_observations(
                conn,
                marketplace_id=self.marketplace_id,
                # Our own update's answer is the newest value there is: written regardless.
                observations=[_observation(self.variation, listing, not_changed_since=None)],
                change_type=ChangeType.ADD_QUANTITY,
                idempotency_key=self.key,
                notes=note,
            )
            await _remember_listing_identity(conn, self.variation, listing)
            stored = await _read_stored(
                conn, variation_id=self.variation.id, marketplace_id=self.marketplace_id, live=True
            )
            result = AddResult(
                variation_id=self.variation.id,
                marketplace_id=self.marketplace_id,
                previous_quantity=previous,
                added=self.added,
                quantity=listing.quantity,
                available_stock=stored.available_stock or 0,
                variation_listed_stock=stored.variation_listed_stock,
                idempotent_replay=False,
            )
            if self.key is not None:
                await idempotency.mark_succeeded(
                    conn,
                    key=self.key,
                    previous_quantity=previous,
                    target_quantity=previous + self.added,
                    response=result.model_dump(mode="json"),
                )
            return result

        # Back Market already holds the new quantity: a lost lock conflict is retried here,
        # never turned into an error that a caller without a key would answer by resending.
        result = await in_transaction(self.engine, write)
        log.info("variation %s: %s (key %r)", self.variation.id, note, self.key)
        return result.model_copy(update={"idempotent_replay": replay})

    async def _forget_key(self) -> None:
        if self.key is not None:
            await idempotency.release_key(self.engine, key=self.key)


# -- reading and writing the database -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Stored:
    """A variation and its stock row on one marketplace, as read in one statement."""

    variation: _VariationRef
    marketplace_id: int
    sku: str | None
    state: int | None
    variation_listed_stock: int
    # The stock row's columns; None when the variation was never synced to the marketplace.
    listed_stock: int | None
    locked_stock: int | None
    available_stock: int | None
    last_synced_at: datetime | None
    # Read for a refresh only: the variation's listed stock on its other marketplaces, and
    # the database clock at the read (the refresh's cutoff).
    other_listed_stock: int = 0
    read_at: datetime | None = None

    def quantity(self, error: str | None = None) -> Quantity:
        return Quantity(
            variation_id=self.variation.id,
            marketplace_id=self.marketplace_id,
            reference_id=self.variation.reference_id,
            reference_uuid=self.variation.reference_uuid,
            sku=self.sku,
            publication_state=self.state,
            quantity=self.listed_stock or 0,
            locked_stock=self.locked_stock or 0,
            available_stock=self.available_stock or 0,
            variation_listed_stock=self.variation_listed_stock,
            synced_at=as_utc(self.last_synced_at),
            stale=error is not None,
            error=error,
        )


async def _read_stored(
    conn: AsyncConnection,
    *,
    variation_id: int,
    marketplace_id: int,
    live: bool,
    for_refresh: bool = False,
) -> _Stored:
    """The variation, its stock row and the marketplace's check, in one statement.

    Raises InvalidRequest (marketplace unknown, or without a client when `live`) before
    NotFound (unknown variation), whichever the request has both of.
    """
    row = (
        await conn.execute(
            _stored_statement(conn, for_refresh=for_refresh),
            {"variation_id": variation_id, "marketplace_id": marketplace_id},
        )
    ).first()
    if row is None:
        # No row, so no marketplace name either: look it up, its error comes first.
        name = (
            await conn.execute(
                sa.select(marketplace_table.c.name).where(marketplace_table.c.id == marketplace_id)
            )
        ).scalar_one_or_none()
        _check_marketplace(name, marketplace_id, live=live)
        raise NotFound(f"variation {variation_id} not found")
    _check_marketplace(row.marketplace_name, marketplace_id, live=live)
    return _Stored(
        variation=_VariationRef(
            id=variation_id, reference_id=row.reference_id, reference_uuid=row.reference_uuid
        ),
        marketplace_id=marketplace_id,
        sku=row.sku,
        state=row.state,
        variation_listed_stock=row.variation_listed_stock or 0,
        listed_stock=row.listed_stock,
        locked_stock=row.locked_stock,
        available_stock=row.available_stock,
        last_synced_at=row.last_synced_at,
        other_listed_stock=int(row.other_listed_stock) if for_refresh else 0,
        read_at=row.read_at if for_refresh else None,
    )


# Built once per dialect and kind, then reused: building a statement with subqueries costs
# more CPU than running it, and a reused statement also keeps its cache key memoized.
_stored_statements: dict[tuple[str, bool], sa.Select[Any]] = {}


def _stored_statement(conn: AsyncConnection, *, for_refresh: bool) -> sa.Select[Any]:
    """`_read_stored`'s one statement; parameters `variation_id` and `marketplace_id`."""
    key = (conn.dialect.name, for_refresh)
    statement = _stored_statements.get(key)
    if statement is not None:
        return statement
    variation_id = sa.bindparam("variation_id", type_=sa.Integer)
    marketplace_id = sa.bindparam("marketplace_id", type_=sa.Integer)
    columns: list[sa.ColumnElement[Any]] = [
        sa.select(marketplace_table.c.name)
        .where(marketplace_table.c.id == marketplace_id)
        .scalar_subquery()
        .label("marketplace_name"),
        variation_table.c.reference_id,
        variation_table.c.reference_uuid,
        variation_table.c.sku,
        variation_table.c.state,
        variation_table.c.listed_stock.label("variation_listed_stock"),
        stock_table.c.listed_stock,
        stock_table.c.locked_stock,
        stock_table.c.available_stock,
        stock_table.c.last_synced_at,
    ]
    if for_refresh:
        others = stock_table.alias("other_stock")
        columns += [
            sa.select(sa.func.coalesce(sa.func.sum(others.c.listed_stock), 0))
            .where(
                others.c.variation_id == variation_table.c.id,
                others.c.marketplace_id != marketplace_id,
            )
            .scalar_subquery()
            .label("other_listed_stock"),
            # Taken in the same round trip rather than by a `database_now` of its own.
            sa.type_coerce(now_expression(conn), sa.DateTime()).label("read_at"),
        ]
    statement = (
        sa.select(*columns)
        .select_from(
            variation_table.outerjoin(
                stock_table,
                sa.and_(
                    stock_table.c.variation_id == variation_table.c.id,
                    stock_table.c.marketplace_id == marketplace_id,
                ),
            )
        )
        .where(variation_table.c.id == variation_id)
    )
    _stored_statements[key] = statement
    return statement


def _check_marketplace(name: str | None, marketplace_id: int, *, live: bool) -> None:
    if name is None:
        raise InvalidRequest(f"marketplace {marketplace_id} does not exist")
    if live and marketplace_id != BACKMARKET_MARKETPLACE_ID:
        raise InvalidRequest(
            f"marketplace {marketplace_id} ({name}) has no client in this service; only "
            f"marketplace {BACKMARKET_MARKETPLACE_ID} (Back Market) can be read or updated live"
        )


def _refreshed_quantity(
    conn: AsyncConnection,
    before: _Stored,
    listing: bm.Listing,
    written: StockWriteResult,
    identity: dict[str, Any],
) -> Quantity | None:
    """A refresh's answer built from what it read before the GET and what it wrote.

    No read-back: `written.rows` is the stock row as it stands after the write, the sku and
    state are the listing's when it has them (the write stores exactly those), and the
    variation's listed stock is, as after every write, the sum over its marketplaces. None
    when a newer change was kept (or the variation went meanwhile): then only the database
    knows the answer.
    """
    row = written.rows.get(before.variation.id)
    if row is None or written.skipped_newer:
        return None
    return Quantity(
        variation_id=before.variation.id,
        marketplace_id=before.marketplace_id,
        reference_id=identity.get("reference_id", before.variation.reference_id),
        reference_uuid=identity.get("reference_uuid", before.variation.reference_uuid),
        sku=listing.sku if listing.sku is not None else before.sku,
        publication_state=(
            listing.publication_state if listing.publication_state is not None else before.state
        ),
        quantity=row.listed_stock,
        locked_stock=row.locked_stock,
        available_stock=row.available_stock,
        variation_listed_stock=before.other_listed_stock + row.listed_stock,
        synced_at=as_utc(_as_stored_timestamp(conn, row.last_synced_at)),
        stale=False,
        error=None,
    )


def _as_stored_timestamp(conn: AsyncConnection, moment: datetime | None) -> datetime | None:
    """`moment` as `marketplace_stock.last_synced_at` gives it back when read.

    On MySQL/MariaDB that column is a TIMESTAMP of whole seconds: MariaDB drops the
    fraction, MySQL rounds it (unless sql_mode has TIME_TRUNCATE_FRACTIONAL). SQLite keeps
    the microseconds.
    """
    if moment is None or not is_mysql(conn):
        return moment
    whole = moment.replace(microsecond=0)
    if not getattr(conn.dialect, "is_mariadb", False) and moment.microsecond >= 500_000:
        return whole + timedelta(seconds=1)
    return whole


def _observation(
    variation: _VariationRef, listing: bm.Listing, *, not_changed_since: datetime | None
) -> StockObservation:
    return StockObservation(
        variation_id=variation.id,
        quantity=listing.quantity,
        sku=listing.sku,
        publication_state=listing.publication_state,
        not_changed_since=not_changed_since,
        reference_id=(
            str(listing.listing_id) if listing.listing_id is not None else variation.reference_id
        ),
    )


async def _remember_listing_identity(
    conn: AsyncConnection, variation: _VariationRef, listing: bm.Listing
) -> dict[str, Any]:
    """Fill in a missing reference, so the next call can use the UUID Back Market prefers.

    Returns the columns written (none, usually).
    """
    values: dict[str, Any] = {}
    if not variation.reference_uuid:
        values["reference_uuid"] = listing.id
    if not variation.reference_id and listing.listing_id is not None:
        values["reference_id"] = str(listing.listing_id)
    if values:
        await conn.execute(
            sa.update(variation_table).where(variation_table.c.id == variation.id).values(values)
        )
    return values


# -- errors ---------------------------------------------------------------------------


def _error_kind(exc: bm.BackMarketError) -> str:
    kinds: dict[type[bm.BackMarketError], str] = {
        bm.RateLimited: "rate_limited",
        bm.Unavailable: "unavailable",
        bm.NotFound: "not_found",
        bm.Unauthorized: "unauthorized",
        bm.BadResponse: "bad_response",
    }
    return next((kind for cls, kind in kinds.items() if isinstance(exc, cls)), "error")


def _read_failure_message(exc: bm.BackMarketError, listing_ref: str) -> str:
    why = {
        "rate_limited": "Back Market is rate limiting",
        "unavailable": "Back Market is unavailable or timed out",
        "not_found": f"Back Market does not know listing {listing_ref} (404)",
        "unauthorized": "Back Market refused the credentials",
        "bad_response": "Back Market answered something unexpected",
    }.get(_error_kind(exc), "Back Market could not be read")
    return f"{why}; stored values returned ({exc})"


def _upstream_error(exc: bm.BackMarketError, *, doing: str, listing_ref: str) -> DomainError:
    if isinstance(exc, bm.RateLimited):
        retry_after = max(
            1,
            math.ceil(
                exc.retry_after if exc.retry_after is not None else DEFAULT_RATE_LIMIT_RETRY_SECONDS
            ),
        )
        return TooManyRequests(
            f"Back Market is rate limiting ({doing}); nothing was recorded as applied",
            headers={"Retry-After": str(retry_after)},
            reason="backmarket_rate_limited",
            retry_after_seconds=retry_after,
        )
    if isinstance(exc, bm.NotFound):
        return UpstreamFailed(
            f"Back Market does not know listing {listing_ref} (404, {doing}); "
            "nothing was recorded as applied",
            reason="listing_not_found",
        )
    return UpstreamFailed(
        f"Back Market failed ({doing}): {exc}; nothing was recorded as applied",
        reason="backmarket_failed",
    )


def _refusal_outcome(exc: DomainError) -> str:
    reason = exc.extra.get("reason")
    if reason:
        return str(reason)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()
