"""One stock change (an addition or a set, see `change`), run while its variation's lock is held
(see `entry.change_stock`).

Fetch-then-update, then undo what the update undid: read the live quantity, send the target the
change decides from it (`previous + n`, or the quantity set), then subtract the units sold
between the read and the update's arrival (`sold_during`) with one more update, and record the
marketplace's last answer (its quantity is the truth). The lock is taken and the update budget
reserved before the read, so that nothing but the update itself separates the read from the
write.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.config import FIRST_MARKETPLACE_ID
from app.db import in_transaction
from app.errors import Conflict, DomainError, UpstreamOutcomeUnknown
from app.models import utcnow
from app.services import marketplace as mp
from app.services.context import ServiceContext
from app.services.locks import HeldLock
from app.services.quantity import idempotency, sold_during
from app.services.quantity.add_key import AdditionKey
from app.services.quantity.change import ResultT, StockChange
from app.services.quantity.record import AdditionRecorder
from app.services.quantity.send import UpdateSender
from app.services.quantity.sold_during import PendingSubtraction, SaleWindow
from app.services.quantity.stored import VariationRef
from app.services.quantity.upstream import upstream_error

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Addition(Generic[ResultT]):
    ctx: ServiceContext
    variation: VariationRef
    variation_sku: str | None
    marketplace_id: int
    # The marketplace's adapter, and how it names the variation's listing.
    marketplace: mp.Marketplace
    ref: mp.ListingRef
    # The key carries the change it was given for (`key.change`), with or without a key.
    key: AdditionKey[ResultT]

    @property
    def change(self) -> StockChange[ResultT]:
        return self.key.change

    async def run(self, *, held: HeldLock) -> tuple[ResultT, str]:
        claim = await self.key.claim(ttl_hours=self.ctx.settings.idempotency_ttl_hours)
        if claim is not None and not claim.claimed:
            # Re-checked under the lock: the request we queued behind may have settled it.
            replay = self.key.settled_answer(claim.record)
            if replay is not None:
                return replay, "replayed"
            if claim.record.may_have_been_applied:
                return await self._resolve_unknown_outcome(claim.record, held)
            # Claimed by a request that died before sending anything: carry on with it.
        sender = self._sender(held)
        reservation = await sender.reserve()
        try:
            read_sent_at = utcnow()
            live = await self._read_live()
            previous = live.quantity
            target = self.change.target(previous)
        except DomainError:
            await sender.cancel(reservation)
            raise
        try:
            answered = await sender.send(reservation, previous=previous, target=target)
        except UpstreamOutcomeUnknown:
            # If it was applied it overwrote the sales made meanwhile: the watcher subtracts
            # them (and needlessly, if it was not: the side to err on).
            await self._recorder.window(
                SaleWindow(read_sent_at=read_sent_at, answered_at=utcnow()), added=target - previous
            )
            raise
        window = SaleWindow(read_sent_at=read_sent_at, answered_at=utcnow())
        result = await self._undo_sales_during(
            answered, previous=previous, added=target - previous, window=window, held=held
        )
        return result, "applied"

    @property
    def listing_ref(self) -> str:
        """The listing as messages and records name it."""
        return str(self.ref)

    @property
    def _recorder(self) -> AdditionRecorder[ResultT]:
        return AdditionRecorder(
            ctx=self.ctx,
            variation=self.variation,
            marketplace_id=self.marketplace_id,
            listing_ref=self.listing_ref,
            key=self.key,
        )

    def _sender(self, held: HeldLock) -> UpdateSender:
        return UpdateSender(
            ctx=self.ctx,
            marketplace=self.marketplace,
            ref=self.ref,
            variation_id=self.variation.id,
            key=self.key,
            held=held,
        )

    async def _undo_sales_during(
        self, answered: mp.Listing, *, previous: int, added: int, window: SaleWindow, held: HeldLock
    ) -> ResultT:
        """Claim the sales the update overwrote and subtract them; record the outcome."""
        identity = sold_during.ListingIdentity.of(
            answered,
            variation_sku=self.variation_sku,
            # The variation's reference is marketplace 1's listing id, no other marketplace's.
            reference_id=(
                self.variation.reference_id if self.marketplace_id == FIRST_MARKETPLACE_ID else None
            ),
        )
        found = await sold_during.read_sold_lines(
            self.marketplace, identity=identity, window=window
        )

        async def claim(conn: AsyncConnection) -> PendingSubtraction | None:
            lines = await sold_during.claim_sold_lines(
                conn,
                found or [],
                variation_id=self.variation.id,
                marketplace_id=self.marketplace_id,
                window=window,
                at=utcnow(),
                by=self.change.change_type.value,
            )
            if not lines:
                return None
            pending = PendingSubtraction(
                previous_quantity=previous,
                added=added,
                units=sum(line.quantity for line in lines),
                line_ids=tuple(line.id for line in lines),
            )
            await self.key.mark_subtracting(
                conn,
                previous=answered.quantity,
                target=max(0, answered.quantity - pending.units),
                pending=pending.as_response(),
            )
            return pending

        pending = await _claiming(self.ctx, claim) if found else None
        if pending is None:
            return await self._recorder.answer(
                answered,
                previous=previous,
                target=previous + added,
                sold_units=0,
                replay=False,
                window=window,
            )
        return await self._subtract(answered, pending, window=window, held=held)

    async def _subtract(
        self,
        answered: mp.Listing,
        pending: PendingSubtraction,
        *,
        window: SaleWindow,
        held: HeldLock,
    ) -> ResultT:
        """Send `answered - units`: like the change's update, but the change is applied, so no
        failure of it frees the key (see `idempotency.release_key`)."""
        sender = self._sender(held)
        target = max(0, answered.quantity - pending.units)
        try:
            reservation = await sender.reserve()
            final = await sender.send(reservation, previous=answered.quantity, target=target)
        except UpstreamOutcomeUnknown as exc:
            await self._subtraction_unknown(pending, window=window.until(utcnow()))
            applied = self.change.describe(
                previous=pending.previous_quantity,
                target=pending.previous_quantity + pending.added,
            )
            raise UpstreamOutcomeUnknown(
                f"{applied} was applied (Back Market answered {answered.quantity}), but "
                f"the update subtracting {pending.units} unit(s) sold meanwhile "
                f"({answered.quantity} -> {target}) got no usable answer; "
                + (
                    "retry with the same Idempotency-Key: it checks Back Market and never sends "
                    "the change again"
                    if self.key.key is not None
                    else "do not repeat the change: the orders watcher subtracts those units "
                    "on its next poll (twice, if this update was in fact applied)"
                ),
                **{
                    **exc.extra,
                    self.change.applied_field: True,
                    "sales_during_update": pending.units,
                },
            ) from exc
        except DomainError as exc:
            sold_during.SALES_DURING_UPDATE.labels("left_to_watcher").inc(len(pending.line_ids))
            log.warning(
                "variation %s: %d unit(s) sold during the change could not be subtracted "
                "(left to the orders watcher): %s",
                self.variation.id,
                pending.units,
                exc.detail,
            )
            return await self._recorder.answer(
                answered,
                previous=pending.previous_quantity,
                target=pending.previous_quantity + pending.added,
                sold_units=0,
                replay=False,
                window=window,
                released=pending.line_ids,
            )
        except BaseException:
            # The database failed, or the request was cancelled: what became of the update
            # is not known here either, and without a key nobody would come back for its claims.
            await self._leave_claims_after_failure(pending, window=window.until(utcnow()))
            raise
        sold_during.SALES_DURING_UPDATE.labels("subtracted").inc(len(pending.line_ids))
        return await self._recorder.answer(
            final,
            previous=pending.previous_quantity,
            target=pending.previous_quantity + pending.added,
            sold_units=pending.units,
            replay=False,
            window=window.until(utcnow()),
        )

    async def _subtraction_unknown(
        self, pending: PendingSubtraction, *, window: SaleWindow
    ) -> None:
        """With a key the claims stay for its retry; without one nobody would resolve them, so
        they go back to the watcher: a double subtraction rather than an undone sale."""
        released = pending.line_ids if self.key.key is None else ()
        await self._recorder.window(window, added=pending.added, released=released)

    async def _leave_claims_after_failure(
        self, pending: PendingSubtraction, *, window: SaleWindow
    ) -> None:
        """`_subtraction_unknown`, tried once: the database itself may be what failed, and the
        failure being handled, not this one, is what the caller must see."""
        try:
            await self._subtraction_unknown(pending, window=window)
        except Exception as exc:
            log.error(
                "variation %s: order lines %s stay claimed by a subtraction that failed; "
                "their %d unit(s) wait for a retry with the key, else a person: %r",
                self.variation.id,
                list(pending.line_ids),
                pending.units,
                exc,
            )

    async def _resolve_unknown_outcome(
        self, record: idempotency.KeyRecord, held: HeldLock
    ) -> tuple[ResultT, str]:
        previous, target = record.previous_quantity, record.target_quantity
        assert previous is not None and target is not None
        pending = PendingSubtraction.from_response(record.response)
        read_sent_at = utcnow()
        live = await self._read_live()
        window = SaleWindow(read_sent_at=read_sent_at, answered_at=read_sent_at)
        if live.quantity == target:
            log.info(
                "variation %s: update to %s found applied after an unknown outcome (key %r)",
                self.variation.id,
                target,
                self.key.key,
            )
            # The update was made by the earlier request; this one sent nothing.
            result = await self._recorder.answer(
                live,
                previous=pending.previous_quantity if pending else previous,
                target=pending.previous_quantity + pending.added if pending else target,
                sold_units=pending.units if pending else 0,
                replay=True,
            )
            return result, "confirmed"
        if live.quantity == previous:
            log.info(
                "variation %s: update to %s was not applied; sending it again (key %r)",
                self.variation.id,
                target,
                self.key.key,
            )
            if pending is not None:
                return await self._subtract(live, pending, window=window, held=held), "resent"
            sender = self._sender(held)
            answered = await sender.send(await sender.reserve(), previous=previous, target=target)
            result = await self._undo_sales_during(
                answered,
                previous=previous,
                added=target - previous,
                window=window.until(utcnow()),
                held=held,
            )
            return result, "resent"
        raise Conflict(
            f"an earlier request with this Idempotency-Key sent {target} (from {previous}) "
            f"without an answer, and Back Market now holds {live.quantity}: it cannot be told "
            "whether that update was applied. Nothing was sent; a person must decide.",
            reason="outcome_unresolved",
            previous_quantity=previous,
            target_quantity=target,
            current_quantity=live.quantity,
            idempotency_key=self.key.key,
        )

    async def _read_live(self) -> mp.Listing:
        try:
            return await self.marketplace.get_listing(self.ref)
        except mp.MarketplaceError as exc:
            raise upstream_error(
                exc, doing=f"reading listing {self.listing_ref}", listing_ref=self.listing_ref
            ) from exc


async def _claiming(
    ctx: ServiceContext, claim: Callable[[AsyncConnection], Awaitable[PendingSubtraction | None]]
) -> PendingSubtraction | None:
    try:
        return await in_transaction(ctx.engine, claim)
    except sa.exc.IntegrityError:
        # The watcher recorded one of these lines between our look and our insert: the row is
        # there now, and claiming is a conditional update of it.
        return await in_transaction(ctx.engine, claim)
