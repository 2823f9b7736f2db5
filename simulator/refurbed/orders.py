"""Orders released to the merchant, as ``OrderService/ListOrders`` shows them.

An item has no quantity: one item is one unit. Placing an order lowers each offer's
stock by its items at once. Refurbed does not document whether it lowers stock by
itself (FACTS.md), so this is the simulator's choice and a client must read the offer
again rather than assume it. A cancelled or rejected item gives its unit back only
when the caller asks (``restock``), for the same reason.

Not thread-safe; the state serialises access, as it does for the offers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from simulator.refurbed.store import SHIPPING_PROFILE_ID, Offer, OfferStore, format_timestamp, money

FIRST_ORDER_ID: Final = 30_000_001
FIRST_ITEM_ID: Final = 60_000_001

# OrderItemState transitions from the document.
ITEM_TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    "NEW": frozenset({"ACCEPTED", "REJECTED", "CANCELLED"}),
    "ACCEPTED": frozenset({"SHIPPED", "CANCELLED"}),
    "SHIPPED": frozenset({"RETURNED"}),
    "REJECTED": frozenset(),
    "CANCELLED": frozenset(),
    "RETURNED": frozenset(),
}
ITEM_STATES: Final = frozenset(ITEM_TRANSITIONS)
ORDER_STATES: Final = frozenset(
    {
        "NEW",
        "REJECTED",
        "CANCELLED",
        "ACCEPTED",
        "SHIPPED",
        "RETURNED",
        "FULFILLED",
        "UNFULFILLED",
        "PARTIALLY_FULFILLED",
    }
)
_FULFILLED: Final = frozenset({"SHIPPED", "RETURNED"})
_UNFULFILLED: Final = frozenset({"REJECTED", "CANCELLED"})
_SETTLED: Final = _FULFILLED | _UNFULFILLED


class OrderConflict(ValueError):
    """The order cannot be placed or changed as asked (short stock, a forbidden transition)."""


class UnknownOrderError(LookupError):
    pass


@dataclass
class OrderItem:
    id: int
    order_id: int
    offer_id: int
    offer_version: int
    sku: str
    name: str
    grading: str
    price: str
    state: str = "NEW"


@dataclass
class Order:
    id: int
    released_at: datetime
    items: list[OrderItem] = field(default_factory=list)

    @property
    def state(self) -> str:
        """The order state the document derives from its items' states."""
        states = {item.state for item in self.items}
        if "NEW" in states:
            return "NEW"
        if len(states) == 1:
            return next(iter(states))
        if "ACCEPTED" in states:
            return "ACCEPTED"
        if states <= _FULFILLED:
            return "FULFILLED"
        if states <= _UNFULFILLED:
            return "UNFULFILLED"
        return "PARTIALLY_FULFILLED"


class OrderBook:
    def __init__(self, offers: OfferStore) -> None:
        self._offers = offers
        self._orders: dict[int, Order] = {}
        self._next_order_id = FIRST_ORDER_ID
        self._next_item_id = FIRST_ITEM_ID

    def place(self, lines: Sequence[tuple[Offer, int]], *, released_at: datetime) -> Order:
        """One order with ``units`` items per ``(offer, units)``; each offer's stock drops."""
        wanted: dict[int, int] = {}
        for offer, units in lines:
            if units < 1:
                raise OrderConflict("units must be >= 1")
            wanted[offer.id] = wanted.get(offer.id, 0) + units
        offers = {offer.id: offer for offer, _ in lines}
        short = [
            f"{offers[offer_id].sku or offer_id} has {offers[offer_id].stock}, {units} wanted"
            for offer_id, units in wanted.items()
            if offers[offer_id].stock < units
        ]
        if short:
            raise OrderConflict("not enough stock: " + "; ".join(short))
        order = Order(id=self._next_order_id, released_at=released_at)
        self._next_order_id += 1
        for offer, units in lines:
            for _ in range(units):
                order.items.append(
                    OrderItem(
                        id=self._next_item_id,
                        order_id=order.id,
                        offer_id=offer.id,
                        offer_version=offer.version,
                        sku=offer.sku,
                        name=offer.instance_name,
                        grading=offer.grading,
                        price=offer.reference_price,
                    )
                )
                self._next_item_id += 1
        for offer_id, units in wanted.items():
            self._offers.set_stock(offers[offer_id], offers[offer_id].stock - units)
        self._orders[order.id] = order
        return order

    def get(self, order_id: int) -> Order:
        found = self._orders.get(order_id)
        if found is None:
            raise UnknownOrderError(f"no order {order_id}")
        return found

    def all(self) -> list[Order]:
        """Every order in id order."""
        return [self._orders[order_id] for order_id in sorted(self._orders)]

    def set_item_state(
        self, order_id: int, item_id: int, state: str, *, restock: bool = False
    ) -> Order:
        """Move an item along the document's transitions; ``restock`` gives its unit back."""
        order = self.get(order_id)
        item = next((i for i in order.items if i.id == item_id), None)
        if item is None:
            raise UnknownOrderError(f"order {order_id} has no item {item_id}")
        if state not in ITEM_TRANSITIONS.get(item.state, frozenset()):
            raise OrderConflict(f"item {item_id} cannot go from {item.state} to {state}")
        item.state = state
        offer = self._offers.by_id(item.offer_id)
        if restock and state in _UNFULFILLED | {"RETURNED"} and offer is not None:
            self._offers.set_stock(offer, offer.stock + 1)
        return order


def _labels(order: Order) -> list[str]:
    states = [item.state for item in order.items]
    labels = []
    if not all(s == "NEW" for s in states) and not all(s in _SETTLED for s in states):
        labels.append("PROCESSING")
    for state in ("REJECTED", "CANCELLED", "SHIPPED", "RETURNED"):
        if state in states and any(s != state for s in states):
            labels.append(f"PARTIALLY_{state}")
    return labels


_ADDRESS: Final = {
    "first_name": "Alex",
    "family_name": "Muster",
    "entity": "MALE",
    "country_code": "AT",
    "post_code": "1010",
    "town": "Wien",
    "street_name": "Graben",
    "house_no": "1",
    "phone_number": "+43100000000",
}


def render_item(item: OrderItem) -> dict[str, Any]:
    refunded = item.state in _UNFULFILLED | {"RETURNED"}
    price = item.price
    return {
        "id": str(item.id),
        "order_id": str(item.order_id),
        "name": item.name,
        "state": item.state,
        "sku": item.sku,
        "currency_code": "EUR",
        "settlement_currency_code": "EUR",
        "total_charged": price,
        "settlement_total_charged": price,
        "total_discount": "0.00",
        "settlement_total_discount": "0.00",
        "total_charged_dynamic": "0.00",
        "settlement_total_charged_dynamic": "0.00",
        "total_paid": "0.00" if refunded else price,
        "settlement_total_paid": "0.00" if refunded else price,
        "total_refunded": price if refunded else "0.00",
        "settlement_total_refunded": price if refunded else "0.00",
        "taxation": "MARGINAL",
        "is_refundable": not refunded,
        "refund_eligibility": "INELIGIBLE_ALREADY_REFUNDED" if refunded else "ELIGIBLE",
        "offer_data": {
            "offer_id": str(item.offer_id),
            "offer_version": str(item.offer_version),
            "offer_order_exchange_rate": "1",
            "offer_warranty": "M12",
            "offer_grading": item.grading,
            "shipping_profile_id": str(SHIPPING_PROFILE_ID),
            "shipping_costs": "0.00",
        },
        "item_identifiers": [],
        "return_initiated": item.state == "RETURNED",
        "vat_rate": "0",
        "vat_country": "AT",
        "vat_charged": "0.00",
        "settlement_vat_charged": "0.00",
    }


def render_order(order: Order) -> dict[str, Any]:
    """The `Order` definition as JSON, items included."""
    items = [render_item(item) for item in order.items]
    charged = money(sum((Decimal(item.price) for item in order.items), Decimal(0)))
    refunded = money(sum((Decimal(i["total_refunded"]) for i in items), Decimal(0)))
    paid = money(Decimal(charged) - Decimal(refunded))
    return {
        "id": str(order.id),
        "released_at": format_timestamp(order.released_at),
        "state": order.state,
        "labels": _labels(order),
        "customer_email": f"customer-{order.id}@example.com",
        "shipping_address": dict(_ADDRESS),
        "invoice_address": dict(_ADDRESS),
        "currency_code": "EUR",
        "settlement_currency_code": "EUR",
        "settlement_exchange_rate": "1",
        "total_charged": charged,
        "settlement_total_charged": charged,
        "total_discount": "0.00",
        "settlement_total_discount": "0.00",
        "total_paid": paid,
        "settlement_total_paid": paid,
        "total_refunded": refunded,
        "settlement_total_refunded": refunded,
        "total_vat_charged": "0.00",
        "settlement_total_vat_charged": "0.00",
        "is_refundable": paid != "0.00",
        "refund_eligibility": "ELIGIBLE" if paid != "0.00" else "INELIGIBLE_ALREADY_REFUNDED",
        "is_invoiceable": True,
        "has_invoice": False,
        "items": items,
        "payment_method": "STRIPE_CARDS",
    }
