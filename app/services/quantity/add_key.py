"""A stock change's Idempotency-Key, and every step of its row, in one place.

Without a key each step does nothing, so the addition reads the same with or without one.
The states a key goes through are described in `idempotency`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.errors import Conflict
from app.services.quantity import idempotency
from app.services.quantity.change import ResultT, StockChange


@dataclass(frozen=True, slots=True)
class AdditionKey(Generic[ResultT]):
    engine: AsyncEngine
    # None when the request came without an Idempotency-Key.
    key: str | None
    variation_id: int
    marketplace_id: int
    change: StockChange[ResultT]

    @property
    def fingerprint(self) -> str:
        return self.change.request_hash(
            variation_id=self.variation_id, marketplace_id=self.marketplace_id
        )

    def settled_answer(self, record: idempotency.KeyRecord) -> ResultT | None:
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
            return self.change.replayed(record.response)
        return None

    async def earlier_answer(self) -> ResultT | None:
        """The answer of a settled key, read without the variation's lock."""
        if self.key is None:
            return None
        earlier = await idempotency.find_key(self.engine, self.key)
        return None if earlier is None else self.settled_answer(earlier)

    async def claim(self, *, ttl_hours: int) -> idempotency.Claim | None:
        """The key claimed for this request, or the row an earlier one holds; None without a key."""
        if self.key is None:
            return None
        return await idempotency.claim_key(
            self.engine,
            key=self.key,
            request_hash=self.fingerprint,
            variation_id=self.variation_id,
            marketplace_id=self.marketplace_id,
            ttl_hours=ttl_hours,
        )

    async def forget(self) -> None:
        """Nothing was applied: a retry with the key starts afresh."""
        if self.key is not None:
            await idempotency.release_key(self.engine, key=self.key)

    async def mark_sending(self, *, previous: int, target: int) -> None:
        if self.key is not None:
            await idempotency.mark_sending(
                self.engine, key=self.key, previous_quantity=previous, target_quantity=target
            )

    async def mark_unknown(self, *, previous: int, target: int) -> None:
        if self.key is not None:
            await idempotency.mark_unknown(
                self.engine, key=self.key, previous_quantity=previous, target_quantity=target
            )

    async def mark_succeeded(
        self, conn: AsyncConnection, *, previous: int, target: int, response: dict[str, Any]
    ) -> None:
        """In the caller's transaction, so the stock write and the stored answer land together."""
        if self.key is not None:
            await idempotency.mark_succeeded(
                conn,
                key=self.key,
                previous_quantity=previous,
                target_quantity=target,
                response=response,
            )

    async def mark_subtracting(
        self, conn: AsyncConnection, *, previous: int, target: int, pending: dict[str, Any]
    ) -> None:
        """In the transaction that claims the sold lines: a crash after it leaves a key whose
        retry sends the subtraction, never the addition again."""
        if self.key is not None:
            await idempotency.mark_subtracting(
                conn,
                key=self.key,
                previous_quantity=previous,
                target_quantity=target,
                pending=pending,
            )
