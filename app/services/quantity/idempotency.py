"""Idempotency keys of add-quantity and set-quantity: what a request with a key did, kept for
its repeats.

A row of `idempotency_keys` goes through these states:

- `in_progress`: claimed by a request. `target_quantity` is set just before the update is
  sent, so a row found `in_progress` WITH a target (its request died mid-way) may have been
  applied and is treated like `unknown`; one WITHOUT a target never sent anything.
- `unknown`: the update was sent and no answer came; `previous_quantity` and
  `target_quantity` say what was read and what was asked for.
- `succeeded`: `response_json` holds the answer, replayed to every repeat.

While an applied addition still has to subtract units sold during it (`sold_during`), the row
is `in_progress` (then maybe `unknown`) with that second update's quantities, and
`response_json` holds the pending subtraction, so a retry never adds again: it resolves the
subtraction instead.

A request that ends knowing nothing was applied (a refusal, Back Market failing before the
update was sent) deletes its `in_progress` row, so a retry with the same key starts afresh.

The unique index on the key makes claiming atomic in every process. Rows live
`idempotency_ttl_hours` (at least 24 h) and expired ones are deleted whenever a key is claimed.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db import database_now, transaction
from app.models import IdempotencyKey, table_of

keys_table = table_of(IdempotencyKey)

MAX_KEY_LENGTH = 255
# The operation of a key whose hash names none.
ADD_QUANTITY = "add_quantity"


class KeyStatus(enum.StrEnum):
    IN_PROGRESS = "in_progress"
    UNKNOWN = "unknown"
    SUCCEEDED = "succeeded"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key: str
    request_hash: str
    variation_id: int
    marketplace_id: int
    status: KeyStatus
    previous_quantity: int | None
    target_quantity: int | None
    response: dict[str, Any] | None

    @property
    def may_have_been_applied(self) -> bool:
        """An update was (or may have been) sent and its outcome was never recorded."""
        return self.status is KeyStatus.UNKNOWN or (
            self.status is KeyStatus.IN_PROGRESS and self.target_quantity is not None
        )


@dataclass(frozen=True, slots=True)
class Claim:
    """`record` is the claimed row when `claimed`, else the row some earlier request holds."""

    claimed: bool
    record: KeyRecord


def key_problem(key: str) -> str | None:
    """Why a header value cannot be an idempotency key, or None when it can."""
    if not key.strip():
        return "Idempotency-Key must not be empty"
    if len(key) > MAX_KEY_LENGTH:
        return f"Idempotency-Key must be at most {MAX_KEY_LENGTH} characters"
    if not key.isprintable() or not key.isascii():
        return "Idempotency-Key must be printable ASCII"
    return None


def request_hash(
    *,
    variation_id: int,
    marketplace_id: int,
    quantity: int,
    operation: str = ADD_QUANTITY,
    expected_quantity: int | None = None,
) -> str:
    """What makes two requests "the same request" for a key: an addition's and a set's of one
    quantity differ, and so do sets expecting different quantities."""
    request: dict[str, object] = {
        "variation_id": variation_id,
        "marketplace_id": marketplace_id,
        "quantity": quantity,
    }
    # An addition's hash is the one its keys were stored with before sets existed.
    if operation != ADD_QUANTITY:
        request |= {"operation": operation, "expected_quantity": expected_quantity}
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def find_key(engine: AsyncEngine, key: str) -> KeyRecord | None:
    """The live (not expired) row of a key, if any."""
    async with engine.connect() as conn:
        now = await database_now(conn)
        row = (
            (
                await conn.execute(
                    sa.select(keys_table).where(
                        keys_table.c.idempotency_key == key, keys_table.c.expires_at >= now
                    )
                )
            )
            .mappings()
            .first()
        )
    return None if row is None else _record(row)


async def claim_key(
    engine: AsyncEngine,
    *,
    key: str,
    request_hash: str,
    variation_id: int,
    marketplace_id: int,
    ttl_hours: int,
) -> Claim:
    """Insert the key as `in_progress`, or return the row an earlier request holds."""
    # Two rounds: the row seen by the failed insert can be released before it is read.
    for _ in range(2):
        try:
            await purge_expired_keys(engine)
            async with transaction(engine) as conn:
                now = await database_now(conn)
                await conn.execute(
                    sa.insert(keys_table).values(
                        idempotency_key=key,
                        request_hash=request_hash,
                        variation_id=variation_id,
                        marketplace_id=marketplace_id,
                        status=KeyStatus.IN_PROGRESS.value,
                        created_at=now,
                        expires_at=now + timedelta(hours=ttl_hours),
                    )
                )
        except sa.exc.IntegrityError:
            existing = await find_key(engine, key)
            if existing is not None:
                return Claim(claimed=False, record=existing)
            continue
        break
    else:
        raise RuntimeError(f"idempotency key {key!r} could be neither claimed nor read")
    return Claim(
        claimed=True,
        record=KeyRecord(
            key=key,
            request_hash=request_hash,
            variation_id=variation_id,
            marketplace_id=marketplace_id,
            status=KeyStatus.IN_PROGRESS,
            previous_quantity=None,
            target_quantity=None,
            response=None,
        ),
    )


async def mark_sending(
    engine: AsyncEngine, *, key: str, previous_quantity: int, target_quantity: int
) -> None:
    """Written just before the update is sent: from here on the outcome must be checked."""
    await _set_outcome_state(
        engine,
        key=key,
        status=KeyStatus.IN_PROGRESS,
        previous=previous_quantity,
        target=target_quantity,
    )


async def mark_unknown(
    engine: AsyncEngine, *, key: str, previous_quantity: int, target_quantity: int
) -> None:
    """The update was sent and no answer came: a retry must look before sending again."""
    await _set_outcome_state(
        engine,
        key=key,
        status=KeyStatus.UNKNOWN,
        previous=previous_quantity,
        target=target_quantity,
    )


async def _set_outcome_state(
    engine: AsyncEngine, *, key: str, status: KeyStatus, previous: int, target: int
) -> None:
    async with transaction(engine) as conn:
        await conn.execute(
            sa.update(keys_table)
            .where(keys_table.c.idempotency_key == key)
            .values(status=status.value, previous_quantity=previous, target_quantity=target)
        )


async def mark_succeeded(
    conn: AsyncConnection,
    *,
    key: str,
    previous_quantity: int,
    target_quantity: int,
    response: dict[str, Any],
) -> None:
    """Inside the caller's transaction, so the stock write and the stored answer land together."""
    await conn.execute(
        sa.update(keys_table)
        .where(keys_table.c.idempotency_key == key)
        .values(
            status=KeyStatus.SUCCEEDED.value,
            previous_quantity=previous_quantity,
            target_quantity=target_quantity,
            response_json=json.dumps(response, sort_keys=True),
        )
    )


async def mark_subtracting(
    conn: AsyncConnection,
    *,
    key: str,
    previous_quantity: int,
    target_quantity: int,
    pending: dict[str, Any],
) -> None:
    """The addition is applied and a subtraction is about to be sent (caller's transaction)."""
    await conn.execute(
        sa.update(keys_table)
        .where(keys_table.c.idempotency_key == key)
        .values(
            status=KeyStatus.IN_PROGRESS.value,
            previous_quantity=previous_quantity,
            target_quantity=target_quantity,
            response_json=json.dumps(pending, sort_keys=True),
        )
    )


async def release_key(engine: AsyncEngine, *, key: str) -> None:
    """Forget a claim whose request surely changed nothing, so a retry can run afresh.

    A row holding a pending subtraction is kept whatever happens to that second update: its
    addition was applied, and a fresh retry would add again.
    """
    async with transaction(engine) as conn:
        await conn.execute(
            sa.delete(keys_table).where(
                keys_table.c.idempotency_key == key,
                keys_table.c.status == KeyStatus.IN_PROGRESS.value,
                keys_table.c.response_json.is_(None),
            )
        )


async def purge_expired_keys(engine: AsyncEngine) -> int:
    """Delete expired keys; returns how many. Claiming a key does this first.

    Deleted by primary key after a plain read: a range DELETE on `expires_at` would take gap
    locks on MySQL that deadlock against concurrent claims inserting new keys.
    """
    async with transaction(engine) as conn:
        now = await database_now(conn)
        expired = (
            (await conn.execute(sa.select(keys_table.c.id).where(keys_table.c.expires_at < now)))
            .scalars()
            .all()
        )
        if expired:
            await conn.execute(sa.delete(keys_table).where(keys_table.c.id.in_(expired)))
    return len(expired)


def _record(row: Any) -> KeyRecord:
    response = json.loads(row["response_json"]) if row["response_json"] else None
    return KeyRecord(
        key=row["idempotency_key"],
        request_hash=row["request_hash"],
        variation_id=row["variation_id"],
        marketplace_id=row["marketplace_id"],
        status=KeyStatus(row["status"]),
        previous_quantity=row["previous_quantity"],
        target_quantity=row["target_quantity"],
        response=response,
    )
