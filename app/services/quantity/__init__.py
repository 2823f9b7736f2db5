"""On-demand quantity: a live refresh of one variation, and the stock changes (add-quantity,
set-quantity) that never lose or double a change.

Both work on one variation under its lock (`locks.hold_variation`), shared by every process,
so two changes of one variation run one after the other and both land. Each Back Market call
is made with no database transaction open; the result is written in a short transaction
afterwards, through the one stock writer (`stock.write_observations`).

- `refresh`: `refresh_quantity`, read Back Market and write what it says.
- `add`: `add_quantity`, and `set`: `set_quantity` (a compare-and-set), the two stock changes
  (`change`: what each asks for), run by the one `entry.change_stock`: fetch-then-update (its
  docstring says why); `addition` one change under the lock, `sold_during` the sales its
  update overwrote (subtracted again), `record` the outcome's write, `add_key` the
  Idempotency-Key's steps, `send` an update within budget.
- `stored`: a variation's stored stock, read in one statement (many variations' too).
- `batch`: `read_quantities`, many variations' stored stock at once, with their age.
- `upstream`: Back Market's failures as domain errors and `error` texts.
- `idempotency`: the `idempotency_keys` table; `update_budget`: the hourly update budget.
"""

from app.services.quantity.add import ADD_QUANTITY_OUTCOMES, add_quantity, check_added_quantity
from app.services.quantity.batch import (
    MAX_BATCH_IDS,
    Quantities,
    StoredQuantity,
    parse_variation_ids,
    read_quantities,
)
from app.services.quantity.refresh import REFRESH_OUTCOMES, refresh_quantity
from app.services.quantity.schemas import AddResult, Quantity, SetResult
from app.services.quantity.set import SET_QUANTITY_OUTCOMES, set_quantity

__all__ = [
    "ADD_QUANTITY_OUTCOMES",
    "MAX_BATCH_IDS",
    "REFRESH_OUTCOMES",
    "SET_QUANTITY_OUTCOMES",
    "AddResult",
    "Quantities",
    "Quantity",
    "SetResult",
    "StoredQuantity",
    "add_quantity",
    "check_added_quantity",
    "parse_variation_ids",
    "read_quantities",
    "refresh_quantity",
    "set_quantity",
]
