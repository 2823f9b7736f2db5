"""Customer orders as Back Market keeps them, shown by GET /ws/orders.

An order lowers its listings' stock when it is placed, paid or not: FACTS.md says
Back Market does not document whether it lowers at state 0 or at payment, and
lowering at once is the case a client must survive (the sale precedes its
visibility). Cancelling, refunding or failing to pay a line gives its units back,
once.

Not thread-safe; ``SimulatorState`` serialises access, as it does for the store.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from simulator.store import MAX_QUANTITY, ListingStore

# Order states (OrderState in the spec).
ORDER_NEW: Final = 0
ORDER_PAID: Final = 1
ORDER_NOT_PAID: Final = 8
ORDER_STATES: Final = frozenset({0, 10, 1, 3, 8, 9})
# "Retrieves all the orders that are neither in state=0 (New Order) nor state=8 (Order not paid)."
HIDDEN_ORDER_STATES: Final = frozenset({ORDER_NEW, ORDER_NOT_PAID})

# Order line states (OrderLineState in the spec).
LINE_NEW: Final = 0
LINE_PAID: Final = 1
LINE_NOT_PAID: Final = 7
CANCELLED_LINE_STATES: Final = frozenset({4, 5, 6})
"""Cancelled, refunded before shipping, refunded after shipping."""
RESTOCKED_LINE_STATES: Final = CANCELLED_LINE_STATES | {LINE_NOT_PAID}
"""Final states whose units went back to the listing."""

# Far apart so a client mixing up an order id and a line id finds nothing.
FIRST_ORDER_ID: Final = 40_000_001
FIRST_LINE_ID: Final = 90_000_001

# The spec's CountryCode: the markets an order can come from.
COUNTRY_CODES: Final = frozenset(
    {
        "fr-fr",
        "fr-be",
        "es-es",
        "de-de",
        "de-at",
        "it-it",
        "ja-jp",
        "en-au",
        "en-gb",
        "en-us",
        "nl-nl",
        "pt-pt",
        "en-ie",
        "el-gr",
        "sk-sk",
        "sv-se",
    }
)


class UnknownOrderError(LookupError):
    """No such order, or no such line in it."""


class OrderConflict(ValueError):
    """The change does not fit the order's state (or the stock): nothing was changed."""


@dataclass
class OrderLine:
    id: int
    listing_index: int
    listing_id: int
    sku: str
    product: str
    quantity: int
    price: str
    currency: str
    state: int
    date_creation: datetime


@dataclass
class Order:
    order_id: int
    state: int
    country_code: str
    currency: str
    date_creation: datetime
    date_modification: datetime
    date_payment: datetime | None
    lines: list[OrderLine]

    @property
    def visible(self) -> bool:
        return self.state not in HIDDEN_ORDER_STATES


@dataclass(frozen=True)
class PlacedOrder:
    """What a test needs to refer to an order it placed."""

    order_id: int
    line_ids: tuple[int, ...]

    @property
    def line_id(self) -> int:
        """The first (for a one-listing order, the only) line."""
        return self.line_ids[0]


def format_datetime(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds, as Back Market writes date_creation."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_datetime(text: str) -> datetime | None:
    """An RFC 3339 filter value, or None when it is not one. Naive values count as UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class OrderBook:
    """Orders by id, each changing the stock of ``store`` as customers and Back Market would."""

    def __init__(self, store: ListingStore) -> None:
        self._store = store
        self._orders: dict[int, Order] = {}
        self._next_order_id = FIRST_ORDER_ID
        self._next_line_id = FIRST_LINE_ID

    def __len__(self) -> int:
        return len(self._orders)

    def place(
        self,
        items: Sequence[tuple[int, int]],
        *,
        market: str,
        now: datetime,
        paid: bool,
    ) -> Order:
        """An order of ``(listing index, units)`` items, one line each; stock drops at once.

        Refused as a whole (OrderConflict) when any listing lacks the units.
        """
        if not items:
            raise ValueError("an order needs at least one line")
        if market not in COUNTRY_CODES or self._store.market_index(market) is None:
            raise ValueError(f"{market!r} is not a market orders can come from")
        wanted: Counter[int] = Counter()
        for index, units in items:
            if units < 1:
                raise ValueError("units must be >= 1")
            wanted[index] += units
        for index, units in wanted.items():
            available = self._store.quantity(index)
            if available < units:
                raise OrderConflict(f"only {available} in stock")
        for index, units in wanted.items():
            self._store.set_quantity(index, self._store.quantity(index) - units)

        line_state = LINE_PAID if paid else LINE_NEW
        lines = []
        for index, units in items:
            listing = self._store.render(index, market)
            lines.append(
                OrderLine(
                    id=self._next_line_id,
                    listing_index=index,
                    listing_id=listing["listing_id"],
                    sku=listing["sku"],
                    product=listing["title"],
                    quantity=units,
                    price=listing["price"],
                    currency=listing["currency"],
                    state=line_state,
                    date_creation=now,
                )
            )
            self._next_line_id += 1
        order = Order(
            order_id=self._next_order_id,
            state=ORDER_PAID if paid else ORDER_NEW,
            country_code=market,
            currency=lines[0].currency,
            date_creation=now,
            date_modification=now,
            date_payment=now if paid else None,
            lines=lines,
        )
        self._next_order_id += 1
        self._orders[order.order_id] = order
        return order

    def get(self, order_id: int) -> Order:
        found = self._orders.get(order_id)
        if found is None:
            raise UnknownOrderError(f"no order {order_id}")
        return found

    def all(self) -> list[Order]:
        """Every order, hidden ones included, oldest first."""
        return list(self._orders.values())

    def pay(self, order_id: int, *, now: datetime) -> Order:
        """Payment verified: state 0 becomes 1 and the order shows in /ws/orders."""
        order = self.get(order_id)
        if order.state != ORDER_NEW:
            raise OrderConflict(f"order {order_id} is in state {order.state}, not 0")
        order.state = ORDER_PAID
        order.date_payment = now
        order.date_modification = now
        for line in order.lines:
            if line.state == LINE_NEW:
                line.state = LINE_PAID
        return order

    def fail_payment(self, order_id: int, *, now: datetime) -> Order:
        """Payment refused: state 8 (never listed), lines 7, units back in stock."""
        order = self.get(order_id)
        if order.state != ORDER_NEW:
            raise OrderConflict(f"order {order_id} is in state {order.state}, not 0")
        order.state = ORDER_NOT_PAID
        order.date_modification = now
        for line in order.lines:
            if line.state not in RESTOCKED_LINE_STATES:
                self._restock(line)
                line.state = LINE_NOT_PAID
        return order

    def cancel_line(self, order_id: int, line_id: int, *, state: int, now: datetime) -> Order:
        """Line to 4, 5 or 6; its units go back to the listing; date_modification moves."""
        if state not in CANCELLED_LINE_STATES:
            raise ValueError(f"state must be one of {sorted(CANCELLED_LINE_STATES)}")
        order = self.get(order_id)
        line = next((line for line in order.lines if line.id == line_id), None)
        if line is None:
            raise UnknownOrderError(f"no line {line_id} in order {order_id}")
        if line.state in RESTOCKED_LINE_STATES:
            raise OrderConflict(f"line {line_id} is already in final state {line.state}")
        self._restock(line)
        line.state = state
        order.date_modification = now
        return order

    def _restock(self, line: OrderLine) -> None:
        # A listing removed since the sale has no stock to give back to.
        if line.listing_index in self._store:
            current = self._store.quantity(line.listing_index)
            self._store.set_quantity(line.listing_index, min(MAX_QUANTITY, current + line.quantity))

    def visible(
        self,
        *,
        date_creation: datetime | None = None,
        date_modification: datetime | None = None,
        state: int | None = None,
        country_code: str | None = None,
    ) -> list[Order]:
        """What /ws/orders lists: never state 0 or 8; dates mean "at or after".

        Ordered by (date_modification, order_id) so pages are deterministic; an
        order modified while a client pages moves to the end, like any
        "last modified" ordering would move it.
        """
        selected = [
            order
            for order in self._orders.values()
            if order.visible
            and (date_creation is None or order.date_creation >= date_creation)
            and (date_modification is None or order.date_modification >= date_modification)
            and (state is None or order.state == state)
            and (country_code is None or order.country_code == country_code)
        ]
        selected.sort(key=lambda order: (order.date_modification, order.order_id))
        return selected


def render_order(order: Order) -> dict[str, Any]:
    """An Order as /ws/orders shows it (fields the spec documents; no addresses)."""
    total = sum((Decimal(line.price) * line.quantity for line in order.lines), Decimal(0))
    rendered: dict[str, Any] = {
        "order_id": order.order_id,
        "state": order.state,
        "date_creation": format_datetime(order.date_creation),
        "date_modification": format_datetime(order.date_modification),
        "price": str(total.quantize(Decimal("0.01"))),
        "shipping_price": "0.00",
        "currency": order.currency,
        "country_code": order.country_code,
        "orderlines": [_render_line(line) for line in order.lines],
    }
    # The spec types date_payment as a date-time, not nullable: absent until paid.
    if order.date_payment is not None:
        rendered["date_payment"] = format_datetime(order.date_payment)
    return rendered


def _render_line(line: OrderLine) -> dict[str, Any]:
    return {
        "id": line.id,
        "date_creation": format_datetime(line.date_creation),
        "state": line.state,
        "listing": line.sku,
        "listing_id": line.listing_id,
        "product": line.product,
        "quantity": line.quantity,
        "price": line.price,
        "shipping_price": "0.00",
        "currency": line.currency,
    }
