"""Add-quantity: add n to a listing's quantity on Back Market, never losing or doubling it.

Fetch-then-update, because Back Market has no compare-and-set and no relative update: read
the live quantity, send `previous + n`, record what Back Market answers (its quantity is the
truth). Back Market decrements stock itself when a customer orders, and an order landing
between our read and our write is overwritten by the write (the sold unit reappears in
stock); so the orders created since the read are looked up right after the write, and their
units subtracted again with one more update (`sold_during`, run by `addition.Addition`).

An update that was sent but never answered (timeout, dropped connection, 5xx) may or may
not have been applied. Without an Idempotency-Key the caller is told so (504) and must look
before retrying; with a key the retry resolves it safely (see `add_quantity`).
"""

from __future__ import annotations

import logging
import re

from prometheus_client import Counter

from app.errors import Conflict, DomainError, InvalidRequest
from app.logs import bind_log_context, reset_log_context
from app.services.context import ServiceContext
from app.services.locks import LockBusy, hold_variation
from app.services.quantity import idempotency
from app.services.quantity.add_key import AdditionKey
from app.services.quantity.addition import Addition
from app.services.quantity.schemas import AddResult
from app.services.quantity.stored import read_stored

log = logging.getLogger(__name__)

# A person adding stock waits longer than a page load: there is no stored answer to fall back on.
ADD_LOCK_TIMEOUT_SECONDS = 30.0

ADD_QUANTITY_OUTCOMES = Counter(
    "stock_sync_add_quantity_total",
    "POST /variations/{id}/add-quantity answers, by outcome.",
    ["outcome"],
)


async def add_quantity(
    ctx: ServiceContext,
    *,
    variation_id: int,
    quantity: int,
    marketplace_id: int,
    idempotency_key: str | None = None,
    lock_timeout: float = ADD_LOCK_TIMEOUT_SECONDS,
    floor_at_zero: bool = False,
) -> AddResult:
    """Add `quantity` (negative removes) to the variation's listing on Back Market.

    Under the variation's lock: reserve one update of the hourly budget, read the live
    quantity, refuse if the result would be below zero (the reservation is given back), send
    `previous + quantity`, read the orders created since the read and subtract the units of
    this listing sold in between with one more update (`sales_during_update`), record Back
    Market's last answer as an `add_quantity` change (with the key in its history row). No
    database transaction is open during any HTTP call.

    `floor_at_zero` (not offered over HTTP): a removal that would go below zero removes down
    to 0 instead of being refused; the orders watcher undoes sales with it.

    With `idempotency_key`:
    - the same key and body again answers the first result (`idempotent_replay=True`)
      without calling Back Market; another body with the key is a Conflict;
    - a repeat while the first is running waits for it (same lock), then replays;
    - after an unknown outcome, the repeat re-reads the listing: the target is there →
      recorded as applied and answered; the previous quantity is still there → sent again;
      anything else → Conflict with previous, target and current quantities. The same holds
      for the subtraction of sold units: a retry never adds again.

    Raises InvalidRequest (bad quantity or key, marketplace without Back Market), NotFound,
    Conflict (no reference, below zero, key reused, variation busy beyond `lock_timeout`,
    unresolvable unknown outcome), TooManyRequests (budget spent or Back Market's 429; with
    Retry-After), UpstreamFailed (Back Market failed; nothing recorded as applied),
    UpstreamOutcomeUnknown (sent, no answer: may or may not be applied).
    """
    # Every line of this addition (client calls, the record) carries its key.
    log_ids = bind_log_context(idempotency_key=idempotency_key)
    try:
        check_added_quantity(quantity, limit=ctx.settings.add_quantity_limit)
        if idempotency_key is not None and (problem := idempotency.key_problem(idempotency_key)):
            raise InvalidRequest(problem)
        marketplace = ctx.marketplaces.get(marketplace_id)
        async with ctx.engine.connect() as conn:
            stored = await read_stored(
                conn, variation_id=variation_id, marketplace_id=marketplace_id
            )
        addition = Addition(
            ctx=ctx,
            variation=stored.variation,
            variation_sku=stored.sku,
            marketplace_id=marketplace_id,
            marketplace=marketplace,
            ref=stored.listing_ref(),
            added=quantity,
            floor_at_zero=floor_at_zero,
            key=AdditionKey(
                engine=ctx.engine,
                key=idempotency_key,
                variation_id=variation_id,
                marketplace_id=marketplace_id,
                added=quantity,
            ),
        )
        # A settled key is answered at once, without queueing behind the lock.
        if (replay := await addition.key.earlier_answer()) is not None:
            ADD_QUANTITY_OUTCOMES.labels(outcome="replayed").inc()
            return replay
        try:
            async with hold_variation(
                engine=ctx.engine,
                locks=ctx.locks,
                settings=ctx.settings,
                variation_id=variation_id,
                wait_seconds=lock_timeout,
            ) as held:
                result, outcome = await addition.run(held=held.lock)
        except LockBusy:
            raise Conflict(
                f"another stock change of variation {variation_id} has been running for "
                f"{lock_timeout:g} s; nothing was sent, try again",
                reason="busy",
            ) from None
    except DomainError as exc:
        ADD_QUANTITY_OUTCOMES.labels(outcome=_refusal_outcome(exc)).inc()
        raise
    finally:
        reset_log_context(log_ids)
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


def _refusal_outcome(exc: DomainError) -> str:
    """The metric label of a refusal: its reason, else its class in snake case."""
    reason = exc.extra.get("reason")
    if reason:
        return str(reason)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()
