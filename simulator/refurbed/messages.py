"""Request bodies read the way grpc-gateway's protojson reads them.

int64 fields arrive as JSON strings or numbers, enums as names or numbers, a missing or
null field is unset, unknown fields are ignored; anything else is INVALID_ARGUMENT.
Filters the simulator does not implement are refused (UNIMPLEMENTED) rather than
ignored, so a test never gets a silently unfiltered answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeVar

from simulator.refurbed.config import MAX_PAGE_LIMIT
from simulator.refurbed.orders import ORDER_STATES, Order
from simulator.refurbed.responses import Code, RpcError
from simulator.refurbed.store import MAX_INT64, MAX_STOCK, OFFER_STATES, Offer

T = TypeVar("T")
Predicate = Callable[[T], bool]

_MIN_INT64: Final = -(2**63)
# Enum value lists in proto order (index = number), from the document's definitions.
OFFER_STATE_ENUM: Final = ("UNSPECIFIED", *OFFER_STATES)
ORDER_STATE_ENUM: Final = (
    "UNSPECIFIED",
    "NEW",
    "REJECTED",
    "CANCELLED",
    "ACCEPTED",
    "SHIPPED",
    "RETURNED",
    "FULFILLED",
    "UNFULFILLED",
    "PARTIALLY_FULFILLED",
)
assert set(ORDER_STATE_ENUM[1:]) == ORDER_STATES
SORT_ORDER_ENUM: Final = ("ASC", "DESC")
OFFER_SORT_BY_ENUM: Final = (
    "ID",
    "CREATED_AT",
    "NAME",
    "SKU",
    "GRADING",
    "WARRANTY",
    "STOCK",
    "TAXATION",
    "REFERENCE_CURRENCY_CODE",
    "REFERENCE_PRICE",
    "REFERENCE_MIN_PRICE",
)
ORDER_SORT_BY_ENUM: Final = (
    "ID",
    "RELEASED_AT",
    "CUSTOMER_EMAIL",
    "CURRENCY_CODE",
    "SETTLEMENT_CURRENCY_CODE",
    "TOTAL_CHARGED",
    "SETTLEMENT_TOTAL_CHARGED",
    "TOTAL_PAID",
    "SETTLEMENT_TOTAL_PAID",
    "TOTAL_REFUNDED",
    "SETTLEMENT_TOTAL_REFUNDED",
)


def invalid(message: str) -> RpcError:
    return RpcError(Code.INVALID_ARGUMENT, message)


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request message; an empty body is the empty message."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise invalid("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    return body


def message(container: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = container.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"{name}: an object is required")
    return value


def _integer(value: object, name: str, *, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise invalid(f"{name}: an integer is required")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        number = int(value)
    else:
        raise invalid(f"{name}: an integer is required")
    if not low <= number <= high:
        raise invalid(f"{name}: {number} is out of range")
    return number


def int64(value: object, name: str) -> int:
    return _integer(value, name, low=_MIN_INT64, high=MAX_INT64)


def uint32(value: object, name: str) -> int:
    return _integer(value, name, low=0, high=MAX_STOCK)


def optional(container: Mapping[str, Any], name: str, read: Callable[[object, str], T]) -> T | None:
    value = container.get(name)
    return None if value is None else read(value, name)


def string(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise invalid(f"{name}: a string is required")
    return value


def timestamp(value: object, name: str) -> datetime:
    """google.protobuf.Timestamp: RFC 3339 with "Z" or an offset."""
    text = string(value, name)
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"{name}: {text!r} is not an RFC 3339 timestamp") from None
    if "T" not in text.upper() or moment.tzinfo is None:
        raise invalid(f"{name}: {text!r} is not an RFC 3339 timestamp with a time zone")
    return moment


def enum(value: object, name: str, names: Sequence[str]) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return names[value]
    if isinstance(value, str) and value in names:
        return value
    raise invalid(f"{name}: {value!r} is not one of {list(names)}")


def listed(
    container: Mapping[str, Any], name: str, read: Callable[[object, str], T]
) -> list[T] | None:
    """A repeated field; None when absent or empty (proto3 cannot tell the two apart)."""
    value = container.get(name)
    if value is None or value == []:
        return None
    if not isinstance(value, list):
        raise invalid(f"{name}: an array is required")
    return [read(item, f"{name}[{i}]") for i, item in enumerate(value)]


# -- identifiers and pagination -----------------------------------------------------


@dataclass(frozen=True)
class OfferKey:
    """An `OfferIdentifier`: a oneof of ``id`` and ``sku``."""

    id: int | None = None
    sku: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"id": str(self.id)} if self.id is not None else {"sku": self.sku}

    def describe(self) -> str:
        return f"id {self.id}" if self.id is not None else f"sku {self.sku!r}"


def offer_key(container: Mapping[str, Any], name: str = "identifier") -> OfferKey:
    identifier = message(container, name)
    has_id = identifier.get("id") is not None
    has_sku = identifier.get("sku") is not None
    if has_id and has_sku:
        raise invalid(f"{name}: set either id or sku, not both")
    if has_id:
        return OfferKey(id=int64(identifier["id"], f"{name}.id"))
    if has_sku:
        return OfferKey(sku=string(identifier["sku"], f"{name}.sku"))
    raise invalid(f"{name}: id or sku is required")


@dataclass(frozen=True)
class Pagination:
    limit: int
    starting_after: int | None
    ending_before: int | None


def pagination(body: Mapping[str, Any]) -> Pagination:
    """`Int64Pagination`: limit 1..100 (default 100), one cursor at most."""
    page = message(body, "pagination")
    limit = optional(page, "limit", uint32)
    if limit is not None and not 1 <= limit <= MAX_PAGE_LIMIT:
        raise invalid(f"pagination.limit must be between 1 and {MAX_PAGE_LIMIT}, got {limit}")
    starting_after = optional(page, "starting_after", int64)
    ending_before = optional(page, "ending_before", int64)
    if starting_after is not None and ending_before is not None:
        raise invalid("pagination: set either starting_after or ending_before, not both")
    return Pagination(limit or MAX_PAGE_LIMIT, starting_after, ending_before)


def descending(body: Mapping[str, Any], *, sort_by: Sequence[str]) -> bool:
    """Whether the sort is DESC; only sorting by ID is simulated."""
    sort = message(body, "sort")
    by = enum(sort["by"], "sort.by", sort_by) if sort.get("by") is not None else "ID"
    if by != "ID":
        raise RpcError(Code.UNIMPLEMENTED, f"sort.by {by} is not simulated; sort by ID")
    order = enum(sort["order"], "sort.order", SORT_ORDER_ENUM) if sort.get("order") else "ASC"
    return order == "DESC"


# -- filters --------------------------------------------------------------------------


def _set_filter(
    spec: Mapping[str, Any], name: str, read: Callable[[object, str], T]
) -> Predicate[T]:
    """``any_of`` / ``none_of`` on one value."""
    any_of = listed(spec, "any_of", lambda v, n: read(v, f"{name}.{n}"))
    none_of = listed(spec, "none_of", lambda v, n: read(v, f"{name}.{n}"))
    allowed = None if any_of is None else set(any_of)
    refused = set(none_of or ())
    return lambda value: (allowed is None or value in allowed) and value not in refused


def _range_filter(
    spec: Mapping[str, Any], name: str, read: Callable[[object, str], T]
) -> Predicate[Any]:
    """``gt`` / ``ge`` / ``lt`` / ``le`` plus ``any_of`` / ``none_of``."""
    bounds = {
        op: optional(spec, op, lambda v, n: read(v, f"{name}.{n}"))
        for op in ("gt", "ge", "lt", "le")
    }
    members = _set_filter(spec, name, read)

    def matches(value: Any) -> bool:
        gt, ge, lt, le = bounds["gt"], bounds["ge"], bounds["lt"], bounds["le"]
        return (
            (gt is None or value > gt)
            and (ge is None or value >= ge)
            and (lt is None or value < lt)
            and (le is None or value <= le)
            and members(value)
        )

    return matches


def _sku_filter(spec: Mapping[str, Any], name: str) -> Predicate[str]:
    """`OfferSKUFilter`: any_of / none_of (exact) and contains."""
    members = _set_filter(spec, name, string)
    contains = optional(spec, "contains", string)
    return lambda sku: members(sku) and (contains is None or contains in sku)


def _refuse_unsimulated(filters: Mapping[str, Any], simulated: Collection[str]) -> None:
    for name, value in filters.items():
        if name not in simulated and value not in (None, {}, []):
            raise RpcError(Code.UNIMPLEMENTED, f"filter.{name} is not simulated")


def _all(predicates: Sequence[Predicate[T]]) -> Predicate[T]:
    return lambda item: all(p(item) for p in predicates)


def offer_filter(body: Mapping[str, Any]) -> Predicate[Offer]:
    """`ListOffersRequest.Filter` on id, sku, state, stock and instance_id."""
    filters = message(body, "filter")
    _refuse_unsimulated(filters, ("id", "sku", "state", "stock", "instance_id"))
    checks: list[Predicate[Offer]] = []
    if "id" in filters:
        by_id = _set_filter(message(filters, "id"), "filter.id", int64)
        checks.append(lambda offer: by_id(offer.id))
    if "instance_id" in filters:
        by_instance = _set_filter(message(filters, "instance_id"), "filter.instance_id", int64)
        checks.append(lambda offer: by_instance(offer.instance_id))
    if "sku" in filters:
        by_sku = _sku_filter(message(filters, "sku"), "filter.sku")
        checks.append(lambda offer: by_sku(offer.sku))
    if "state" in filters:
        by_state = _set_filter(
            message(filters, "state"),
            "filter.state",
            lambda v, n: enum(v, n, OFFER_STATE_ENUM),
        )
        checks.append(lambda offer: by_state(offer.state))
    if "stock" in filters:
        by_stock = _range_filter(message(filters, "stock"), "filter.stock", uint32)
        checks.append(lambda offer: by_stock(offer.stock))
    return _all(checks)


def order_filter(body: Mapping[str, Any]) -> Predicate[Order]:
    """`ListOrdersRequest.Filter` on id, released_at, state, item_sku and item_offer_id."""
    filters = message(body, "filter")
    _refuse_unsimulated(filters, ("id", "released_at", "state", "item_sku", "item_offer_id"))
    checks: list[Predicate[Order]] = []
    if "id" in filters:
        by_id = _set_filter(message(filters, "id"), "filter.id", int64)
        checks.append(lambda order: by_id(order.id))
    if "released_at" in filters:
        released = _range_filter(message(filters, "released_at"), "filter.released_at", timestamp)
        checks.append(lambda order: released(order.released_at))
    if "state" in filters:
        by_state = _set_filter(
            message(filters, "state"),
            "filter.state",
            lambda v, n: enum(v, n, ORDER_STATE_ENUM),
        )
        checks.append(lambda order: by_state(order.state))
    if "item_sku" in filters:
        by_sku = _sku_filter(message(filters, "item_sku"), "filter.item_sku")
        checks.append(lambda order: any(by_sku(item.sku) for item in order.items))
    if "item_offer_id" in filters:
        by_offer = _set_filter(message(filters, "item_offer_id"), "filter.item_offer_id", int64)
        checks.append(lambda order: any(by_offer(item.offer_id) for item in order.items))
    return _all(checks)


def batch_entries(body: Mapping[str, Any], *, limit: int) -> list[dict[str, Any]]:
    """The ``offers`` of a batch request: 1..``limit`` objects."""
    entries = body.get("offers")
    if not isinstance(entries, list) or not entries:
        raise invalid(f"offers: between 1 and {limit} entries are required")
    if len(entries) > limit:
        raise invalid(f"offers: at most {limit} entries, got {len(entries)}")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise invalid(f"offers[{index}]: an object is required")
    return entries
