"""What a stock change asks for: add n to the live quantity (`AddUnits`), or make it n
(`SetTo`), optionally only while it is still the quantity the person saw.

Both run through the same steps (`entry.change_stock`, then `addition.Addition` under the
variation's lock): one update of the budget reserved, the live quantity read, the target
decided from it here, the update sent, its unknown outcome resolved by a keyed retry, the units
sold during it subtracted once, the outcome recorded and the Idempotency-Key settled. Nothing of
that depends on which change it is; a set is an addition whose amount (`target - live`) is
known only once the live quantity has been read.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from app.errors import Conflict, InvalidRequest
from app.models import INT_MAX, ChangeType
from app.services.quantity import idempotency
from app.services.quantity.schemas import AddResult, SetResult

ResultT = TypeVar("ResultT", AddResult, SetResult)


@dataclass(frozen=True, slots=True)
class ChangeOutcome:
    """What a change did, whichever it was: the answer is shaped from it."""

    variation_id: int
    marketplace_id: int
    # The live quantity read before the update, and the quantity that update asked for.
    previous_quantity: int
    target_quantity: int
    # What the marketplace holds after the change (after the subtraction, if there was one).
    quantity: int
    available_stock: int
    variation_listed_stock: int
    sales_during_update: int


class StockChange(abc.ABC, Generic[ResultT]):
    change_type: ClassVar[ChangeType]
    # The field of a 504 that says the change itself was applied, and only the subtraction of
    # the units sold during it has no answer.
    applied_field: ClassVar[str]

    @abc.abstractmethod
    def check(self, *, limit: int) -> None:
        """InvalidRequest when the change's numbers are not ones to send (`limit`:
        ADD_QUANTITY_LIMIT)."""

    @abc.abstractmethod
    def target(self, live: int) -> int:
        """The quantity to send, given the live one; Conflict when nothing may be sent."""

    @abc.abstractmethod
    def request_hash(self, *, variation_id: int, marketplace_id: int) -> str:
        """What makes two requests with one Idempotency-Key the same request."""

    @abc.abstractmethod
    def result(self, outcome: ChangeOutcome) -> ResultT:
        """The answer of a change that was applied."""

    @abc.abstractmethod
    def replayed(self, response: dict[str, Any]) -> ResultT:
        """The stored answer of a settled key, as a replay."""

    @abc.abstractmethod
    def describe(self, *, previous: int, target: int) -> str:
        """The change in a few words, for the history's note and messages."""


@dataclass(frozen=True, slots=True)
class AddUnits(StockChange[AddResult]):
    """Add `added` (negative removes) to the live quantity."""

    change_type: ClassVar[ChangeType] = ChangeType.ADD_QUANTITY
    applied_field: ClassVar[str] = "addition_applied"

    added: int
    # A removal below zero removes down to 0 instead of being refused (the watcher's undoing).
    floor_at_zero: bool = False

    def check(self, *, limit: int) -> None:
        check_added_quantity(self.added, limit=limit)

    def target(self, live: int) -> int:
        target = live + self.added
        if target >= 0:
            return target
        if self.floor_at_zero:
            return 0
        raise Conflict(
            f"adding {self.added} to Back Market's quantity {live} would leave "
            f"{target}; nothing was sent",
            reason="below_zero",
            current_quantity=live,
            added=self.added,
        )

    def request_hash(self, *, variation_id: int, marketplace_id: int) -> str:
        return idempotency.request_hash(
            variation_id=variation_id, marketplace_id=marketplace_id, quantity=self.added
        )

    def result(self, outcome: ChangeOutcome) -> AddResult:
        return AddResult(
            variation_id=outcome.variation_id,
            marketplace_id=outcome.marketplace_id,
            previous_quantity=outcome.previous_quantity,
            added=outcome.target_quantity - outcome.previous_quantity,
            quantity=outcome.quantity,
            available_stock=outcome.available_stock,
            variation_listed_stock=outcome.variation_listed_stock,
            idempotent_replay=False,
            sales_during_update=outcome.sales_during_update,
        )

    def replayed(self, response: dict[str, Any]) -> AddResult:
        return AddResult.model_validate({**response, "idempotent_replay": True})

    def describe(self, *, previous: int, target: int) -> str:
        return f"add {target - previous:+d}: {previous} -> {target}"


@dataclass(frozen=True, slots=True)
class SetTo(StockChange[SetResult]):
    """Make the quantity `quantity`; when `expected` is given, only if the live quantity is
    still `expected` (the compare-and-set the marketplaces lack, made under the variation's
    lock, so no other change of this service can slip between the comparison and the update).

    Units sold between the live read and the update's arrival are subtracted from `quantity`
    once, as with an addition: the person asked for `quantity` given the stock they saw, and a
    unit sold after that must not go back on sale.
    """

    change_type: ClassVar[ChangeType] = ChangeType.SET_QUANTITY
    applied_field: ClassVar[str] = "set_applied"

    quantity: int
    expected: int | None = None

    def check(self, *, limit: int) -> None:
        check_set_quantity(self.quantity, limit=limit)
        if self.expected is not None:
            check_set_quantity(self.expected, limit=INT_MAX, name="expected_quantity")

    def target(self, live: int) -> int:
        if self.expected is not None and live != self.expected:
            raise Conflict(
                f"the marketplace holds {live}, not the {self.expected} expected: the stock "
                "moved since it was read; nothing was sent. Decide again from the live quantity",
                reason="quantity_changed",
                live_quantity=live,
            )
        return self.quantity

    def request_hash(self, *, variation_id: int, marketplace_id: int) -> str:
        return idempotency.request_hash(
            variation_id=variation_id,
            marketplace_id=marketplace_id,
            quantity=self.quantity,
            operation=self.change_type.value,
            expected_quantity=self.expected,
        )

    def result(self, outcome: ChangeOutcome) -> SetResult:
        return SetResult(
            variation_id=outcome.variation_id,
            marketplace_id=outcome.marketplace_id,
            previous_quantity=outcome.previous_quantity,
            quantity=outcome.quantity,
            available_stock=outcome.available_stock,
            variation_listed_stock=outcome.variation_listed_stock,
            idempotent_replay=False,
            sales_during_update=outcome.sales_during_update,
        )

    def replayed(self, response: dict[str, Any]) -> SetResult:
        return SetResult.model_validate({**response, "idempotent_replay": True})

    def describe(self, *, previous: int, target: int) -> str:
        return f"set to {target}: {previous} -> {target}"


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


def check_set_quantity(quantity: object, *, limit: int, name: str = "quantity") -> int:
    """An integer within 0..limit (ADD_QUANTITY_LIMIT for the quantity set), or InvalidRequest."""
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise InvalidRequest(f"{name} must be an integer, got {type(quantity).__name__}")
    if not 0 <= quantity <= limit:
        bound = " (ADD_QUANTITY_LIMIT)" if limit != INT_MAX else ""
        raise InvalidRequest(f"{name} must be between 0 and {limit}{bound}, got {quantity}")
    return quantity
