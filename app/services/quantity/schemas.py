"""The contract's answers of the on-demand quantity endpoints."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


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
    # Units sold on Back Market between the read and the update, which the update had put back
    # on sale and a second update subtracted again. Defaults to 0 for answers stored before
    # the field existed, so their replays still validate.
    sales_during_update: int = 0


class SetResult(BaseModel):
    """The contract's `SetResult`."""

    variation_id: int
    marketplace_id: int
    # Read from the marketplace just before the update (equal to `expected_quantity` when one
    # was given).
    previous_quantity: int
    # What the marketplace holds after the update: the quantity asked for, less
    # `sales_during_update`.
    quantity: int
    available_stock: int
    variation_listed_stock: int
    # True when this answer comes from an earlier request with the same Idempotency-Key.
    idempotent_replay: bool
    # Units sold between the service's read and its update, which the update had put back on
    # sale and a second update subtracted again.
    sales_during_update: int = 0
