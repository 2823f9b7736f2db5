"""The one way into a stock change, shared by add-quantity and set-quantity (see `change`).

Fetch-then-update, because no marketplace has a compare-and-set or a relative update: under the
variation's lock, read the live quantity, send the target the change decides from it, record
what the marketplace answers (its quantity is the truth). The marketplace decrements stock
itself when a customer orders, and an order landing between our read and our write is
overwritten by the write (the sold unit reappears in stock); so the orders created since the
read are looked up right after the write, and their units subtracted again with one more
update (`sold_during`, run by `addition.Addition`).

An update that was sent but never answered (timeout, dropped connection, 5xx) may or may
not have been applied. Without an Idempotency-Key the caller is told so (504) and must look
before retrying; with a key the retry resolves it safely (see `change_stock`).
"""

from __future__ import annotations

import re

from prometheus_client import Counter

from app.errors import Conflict, DomainError, InvalidRequest
from app.logs import bind_log_context, reset_log_context
from app.services.context import ServiceContext
from app.services.locks import LockBusy, hold_variation
from app.services.quantity import idempotency
from app.services.quantity.add_key import AdditionKey
from app.services.quantity.addition import Addition
from app.services.quantity.change import ResultT, StockChange
from app.services.quantity.stored import read_stored

# A person changing stock waits longer than a page load: there is no stored answer to fall back on.
CHANGE_LOCK_TIMEOUT_SECONDS = 30.0


async def change_stock(
    ctx: ServiceContext,
    change: StockChange[ResultT],
    *,
    variation_id: int,
    marketplace_id: int,
    idempotency_key: str | None,
    lock_timeout: float,
    outcomes: Counter,
) -> ResultT:
    """Make `change` to the variation's listing; each answer counted in `outcomes` by outcome.

    Under the variation's lock: reserve one update of the hourly budget, read the live
    quantity, let the change decide the target or refuse (the reservation is given back),
    send the target, read the orders created since the read and subtract the units of this
    listing sold in between with one more update (`sales_during_update`), record the
    marketplace's last answer as a change of `change.change_type` (with the key in its history
    row). No database transaction is open during any HTTP call.

    With `idempotency_key`:
    - the same key and body again answers the first result (`idempotent_replay=True`)
      without calling the marketplace; another body with the key is a Conflict;
    - a repeat while the first is running waits for it (same lock), then replays;
    - after an unknown outcome, the repeat re-reads the listing: the target is there →
      recorded as applied and answered; the previous quantity is still there → sent again;
      anything else → Conflict with previous, target and current quantities. The same holds
      for the subtraction of sold units: a retry never sends the change again.

    Raises InvalidRequest (bad quantity or key, marketplace not configured), NotFound, Conflict
    (no reference, the change's own refusal, key reused, variation busy beyond `lock_timeout`,
    unresolvable unknown outcome), TooManyRequests (budget spent or the marketplace's 429; with
    Retry-After), UpstreamFailed (the marketplace failed; nothing recorded as applied),
    UpstreamOutcomeUnknown (sent, no answer: may or may not be applied).
    """
    # Every line of this change (client calls, the record) carries its key.
    log_ids = bind_log_context(idempotency_key=idempotency_key)
    try:
        change.check(limit=ctx.settings.add_quantity_limit)
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
            key=AdditionKey(
                engine=ctx.engine,
                key=idempotency_key,
                variation_id=variation_id,
                marketplace_id=marketplace_id,
                change=change,
            ),
        )
        # A settled key is answered at once, without queueing behind the lock.
        if (replay := await addition.key.earlier_answer()) is not None:
            outcomes.labels(outcome="replayed").inc()
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
        outcomes.labels(outcome=refusal_outcome(exc)).inc()
        raise
    finally:
        reset_log_context(log_ids)
    outcomes.labels(outcome=outcome).inc()
    return result


def refusal_outcome(exc: DomainError) -> str:
    """The metric label of a refusal: its reason, else its class in snake case."""
    reason = exc.extra.get("reason")
    if reason:
        return str(reason)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()
