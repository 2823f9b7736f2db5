"""Writing a stock change's outcome: Back Market's last answer through the one stock writer, the
change's window for the orders watcher, claims given back, and the key settled, together."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic

from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import in_transaction
from app.services import marketplace as mp
from app.services import sales
from app.services.context import ServiceContext
from app.services.quantity.add_key import AdditionKey
from app.services.quantity.change import ChangeOutcome, ResultT
from app.services.quantity.sold_during import SaleWindow
from app.services.quantity.stored import (
    VariationRef,
    observation_of,
    read_stored,
    remember_listing_identity,
)
from app.services.stock import write_observations

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AdditionRecorder(Generic[ResultT]):
    ctx: ServiceContext
    variation: VariationRef
    marketplace_id: int
    listing_ref: str
    key: AdditionKey[ResultT]

    async def window(self, window: SaleWindow, *, added: int, released: Sequence[int] = ()) -> None:
        """The window alone, when the outcome itself is not known yet; `added` is what the
        change's update would add to the quantity it was computed from (the row keeps it)."""

        async def write(conn: AsyncConnection) -> None:
            await self._window(conn, window, added=added)
            await sales.release_claims(conn, released, marketplace_id=self.marketplace_id)

        await in_transaction(self.ctx.engine, write)

    async def _window(self, conn: AsyncConnection, window: SaleWindow, *, added: int) -> None:
        await sales.record_addition(
            conn,
            variation_id=self.variation.id,
            marketplace_id=self.marketplace_id,
            listing_ref=self.listing_ref,
            read_sent_at=window.read_sent_at,
            answered_at=window.answered_at,
            added=added,
            idempotency_key=self.key.key,
        )

    async def answer(
        self,
        listing: mp.Listing,
        *,
        previous: int,
        target: int,
        sold_units: int,
        replay: bool,
        window: SaleWindow | None = None,
        released: Sequence[int] = (),
    ) -> ResultT:
        """Back Market's last answer as one change of the change's type, the window (when this
        request sent an update), the `released` claims given back, and the key settled: one
        transaction. `previous` was read before the change's update, which sent `target`."""
        change = self.key.change
        note = change.describe(previous=previous, target=target) + " sent"
        if sold_units:
            note += f", {sold_units} unit(s) sold meanwhile subtracted again"
        note += f", Back Market answered {listing.quantity}"

        async def write(conn: AsyncConnection) -> ResultT:
            await write_observations(
                conn,
                marketplace_id=self.marketplace_id,
                # Our own update's answer is the newest value there is: written regardless.
                observations=[observation_of(self.variation, listing, not_changed_since=None)],
                change_type=change.change_type,
                idempotency_key=self.key.key,
                notes=note,
            )
            await remember_listing_identity(
                conn, self.variation, listing, marketplace_id=self.marketplace_id
            )
            if window is not None:
                await self._window(conn, window, added=target - previous)
            # A subtraction that was not sent: its lines wait for the watcher, inside the window.
            await sales.release_claims(conn, released, marketplace_id=self.marketplace_id)
            stored = await read_stored(
                conn, variation_id=self.variation.id, marketplace_id=self.marketplace_id
            )
            result = change.result(
                ChangeOutcome(
                    variation_id=self.variation.id,
                    marketplace_id=self.marketplace_id,
                    previous_quantity=previous,
                    target_quantity=target,
                    quantity=listing.quantity,
                    available_stock=stored.available_stock or 0,
                    variation_listed_stock=stored.variation_listed_stock,
                    sales_during_update=sold_units,
                )
            )
            await self.key.mark_succeeded(
                conn,
                previous=previous,
                target=target,
                response=result.model_dump(mode="json"),
            )
            return result

        # Back Market already holds the new quantity: a lost lock conflict is retried here,
        # never turned into an error that a caller without a key would answer by resending.
        result = await in_transaction(self.ctx.engine, write)
        log.info("variation %s: %s (key %r)", self.variation.id, note, self.key.key)
        return result.model_copy(update={"idempotent_replay": replay})
