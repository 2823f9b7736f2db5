"""Sending one listing update of an addition: within the hourly update budget, only while the
variation's lock is still held, and leaving the budget and the Idempotency-Key in the state
the outcome calls for."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from app.errors import TooManyRequests, Unavailable, UpstreamOutcomeUnknown
from app.services import marketplace as mp
from app.services.context import ServiceContext
from app.services.locks import HeldLock
from app.services.quantity import update_budget
from app.services.quantity.add_key import AdditionKey
from app.services.quantity.upstream import upstream_error

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UpdateSender:
    ctx: ServiceContext
    marketplace: mp.Marketplace
    ref: mp.ListingRef
    variation_id: int
    key: AdditionKey
    # The variation's lock, checked just before sending.
    held: HeldLock

    @property
    def listing_ref(self) -> str:
        """The listing as messages and the budget's rows name it."""
        return str(self.ref)

    async def reserve(self) -> update_budget.Reservation:
        """One update of the hourly budget, or TooManyRequests with Retry-After."""
        try:
            return await update_budget.reserve_update(
                self.ctx.engine,
                marketplace_id=self.marketplace.id,
                limit=self.marketplace.updates_per_hour,
                listing_ref=self.listing_ref,
            )
        except update_budget.BudgetExhausted as exc:
            await self.key.forget()
            raise TooManyRequests(
                f"{exc}; nothing was sent",
                headers={"Retry-After": str(exc.retry_after)},
                reason="update_budget_spent",
                retry_after_seconds=exc.retry_after,
            ) from None
        except update_budget.BudgetLockBusy as exc:
            await self.key.forget()
            raise Unavailable(f"{exc}; nothing was sent, try again", reason="busy") from None

    async def cancel(self, reservation: update_budget.Reservation) -> None:
        """Nothing will be sent: the budget slot and the key are given back."""
        await update_budget.release_update(self.ctx.engine, reservation)
        await self.key.forget()

    async def send(
        self, reservation: update_budget.Reservation, *, previous: int, target: int
    ) -> mp.Listing:
        """Send `target` and return Back Market's answer, or the domain error of the failure."""
        if not await self.held.still_held():
            # The lock's connection died: another process may be changing this variation.
            await self.cancel(reservation)
            raise Unavailable(
                f"the lock of variation {self.variation_id} was lost; nothing was sent, try again",
                reason="lock_lost",
            )
        await self.key.mark_sending(previous=previous, target=target)
        try:
            answered = await self.marketplace.set_quantity(self.ref, quantity=target)
        except mp.OutcomeUnknown as exc:
            await self.key.mark_unknown(previous=previous, target=target)
            raise self._outcome_unknown(exc, previous=previous, target=target) from exc
        except mp.MarketplaceError as exc:
            if isinstance(exc, mp.RateLimited | mp.Unavailable):
                # The client gives these up only when no attempt was processed.
                await update_budget.release_update(self.ctx.engine, reservation)
            await self.key.forget()
            raise upstream_error(
                exc, doing=f"updating listing {self.listing_ref}", listing_ref=self.listing_ref
            ) from exc
        if answered.quantity != target:
            # Recorded as Back Market says (its answer is the truth), but worth a look: an
            # order landed in between, or the update is still being processed (202).
            log.warning(
                "variation %s: sent %s, Back Market answered %s",
                self.variation_id,
                target,
                answered.quantity,
            )
        return answered

    def _outcome_unknown(
        self, exc: mp.OutcomeUnknown, *, previous: int, target: int
    ) -> UpstreamOutcomeUnknown:
        log.warning(
            "variation %s: update %s -> %s has an unknown outcome: %s",
            self.variation_id,
            previous,
            target,
            exc,
        )
        advice = (
            "retry with the same Idempotency-Key: it checks Back Market before sending again"
            if self.key.key is not None
            else "check the quantity on Back Market before trying again, and send an "
            "Idempotency-Key so that a retry can resolve this safely"
        )
        return UpstreamOutcomeUnknown(
            f"the update of listing {self.listing_ref} from {previous} to {target} was sent "
            f"and got no usable answer, so it may or may not have been applied; {advice}",
            reason="outcome_unknown",
            previous_quantity=previous,
            target_quantity=target,
            idempotency_key=self.key.key,
        )
