"""OrderService/ListOrders and orders placed through the control surface."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from simulator.refurbed import OrderConflict, RefurbedSimulatorState, UnknownOfferError
from tests.simulator.conftest import FakeWallClock
from tests.simulator.refurbed.conftest import ORDERS


async def list_orders(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post(f"{ORDERS}/ListOrders", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_an_order_lowers_each_offers_stock_by_its_items(state: RefurbedSimulatorState) -> None:
    state.set_stock("SKU-0000001", 5)
    state.set_stock("SKU-0000002", 1)

    order = state.place_order([("SKU-0000001", 2), ("SKU-0000002", 1)])

    assert (state.stock_of("SKU-0000001"), state.stock_of("SKU-0000002")) == (3, 0)
    assert [item["sku"] for item in order["items"]] == ["SKU-0000001"] * 2 + ["SKU-0000002"]
    assert {item["state"] for item in order["items"]} == {"NEW"}
    assert order["state"] == "NEW"
    assert all(item["order_id"] == order["id"] for item in order["items"])
    assert order["items"][0]["offer_data"]["offer_id"] == state.offer("SKU-0000001")["id"]


def test_an_order_beyond_the_stock_is_refused_and_changes_nothing(
    state: RefurbedSimulatorState,
) -> None:
    state.set_stock("SKU-0000001", 5)
    state.set_stock("SKU-0000002", 1)

    with pytest.raises(OrderConflict, match="not enough stock"):
        state.place_order([("SKU-0000001", 1), ("SKU-0000002", 2)])
    with pytest.raises(UnknownOfferError):
        state.place_order([("NOPE", 1)])

    assert (state.stock_of("SKU-0000001"), state.stock_of("SKU-0000002")) == (5, 1)
    assert state.orders() == []


async def test_list_orders_pages_by_cursor_to_the_end(
    client: httpx.AsyncClient, state: RefurbedSimulatorState
) -> None:
    state.set_stock("SKU-0000001", 10)
    placed = [state.place_order([("SKU-0000001", 1)])["id"] for _ in range(5)]

    first = await list_orders(client, pagination={"limit": 2})
    second = await list_orders(
        client, pagination={"limit": 2, "starting_after": first["orders"][-1]["id"]}
    )
    third = await list_orders(
        client, pagination={"limit": 2, "starting_after": second["orders"][-1]["id"]}
    )

    pages = [first, second, third]
    assert [o["id"] for page in pages for o in page["orders"]] == placed
    assert [page["has_more"] for page in pages] == [True, True, False]


async def test_list_orders_refuses_a_limit_over_100(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{ORDERS}/ListOrders", json={"pagination": {"limit": 101}})

    assert (response.status_code, response.json()["code"]) == (400, 3)


async def test_released_at_filter_takes_gt_ge_lt_le(
    client: httpx.AsyncClient, state: RefurbedSimulatorState, wall_clock: FakeWallClock
) -> None:
    state.set_stock("SKU-0000001", 10)
    ids = []
    for _ in range(4):
        ids.append(state.place_order([("SKU-0000001", 1)])["id"])
        wall_clock.advance(60)
    # Released at 12:00, 12:01, 12:02, 12:03 UTC.

    def released(**bounds: str) -> dict[str, Any]:
        return {"filter": {"released_at": bounds}}

    ge = await list_orders(client, **released(ge="2024-05-01T12:01:00Z"))
    gt = await list_orders(client, **released(gt="2024-05-01T12:01:00Z"))
    window = await list_orders(
        client, **released(gt="2024-05-01T14:00:00+02:00", le="2024-05-01T12:02:00.000Z")
    )
    lt = await list_orders(client, **released(lt="2024-05-01T12:01:00Z"))

    assert [o["id"] for o in ge["orders"]] == ids[1:]
    assert [o["id"] for o in gt["orders"]] == ids[2:]
    assert [o["id"] for o in window["orders"]] == ids[1:3]
    assert [o["id"] for o in lt["orders"]] == ids[:1]
    assert ge["orders"][0]["released_at"] == "2024-05-01T12:01:00Z"


@pytest.mark.parametrize("moment", ["2024-05-01", "2024-05-01T12:00:00", "soon", 1714564800])
async def test_a_released_at_bound_that_is_no_rfc3339_timestamp_is_invalid(
    client: httpx.AsyncClient, moment: object
) -> None:
    response = await client.post(
        f"{ORDERS}/ListOrders", json={"filter": {"released_at": {"ge": moment}}}
    )

    assert (response.status_code, response.json()["code"]) == (400, 3)


async def test_item_sku_item_offer_id_and_state_filters(
    client: httpx.AsyncClient, state: RefurbedSimulatorState
) -> None:
    for sku in ("SKU-0000001", "SKU-0000002"):
        state.set_stock(sku, 3)
    first = state.place_order([("SKU-0000001", 1)])
    second = state.place_order([("SKU-0000002", 1), ("SKU-0000001", 1)])
    state.set_item_state(int(first["id"]), int(first["items"][0]["id"]), "ACCEPTED")

    by_sku = await list_orders(client, filter={"item_sku": {"any_of": ["SKU-0000002"]}})
    by_offer = await list_orders(
        client, filter={"item_offer_id": {"any_of": [state.offer("SKU-0000001")["id"]]}}
    )
    new_only = await list_orders(client, filter={"state": {"any_of": ["NEW"]}})

    assert [o["id"] for o in by_sku["orders"]] == [second["id"]]
    assert [o["id"] for o in by_offer["orders"]] == [first["id"], second["id"]]
    assert [o["id"] for o in new_only["orders"]] == [second["id"]]


def test_item_states_follow_the_documented_transitions(state: RefurbedSimulatorState) -> None:
    state.set_stock("SKU-0000001", 3)
    order = state.place_order([("SKU-0000001", 2)])
    order_id, (first, second) = int(order["id"]), [int(i["id"]) for i in order["items"]]

    state.set_item_state(order_id, first, "ACCEPTED")
    shipped = state.set_item_state(order_id, first, "SHIPPED")
    with pytest.raises(OrderConflict):
        state.set_item_state(order_id, first, "NEW")
    partly = state.set_item_state(order_id, second, "CANCELLED")

    assert shipped["state"] == "NEW"
    assert partly["state"] == "PARTIALLY_FULFILLED"
    assert set(partly["labels"]) == {"PARTIALLY_SHIPPED", "PARTIALLY_CANCELLED"}


def test_a_cancelled_item_gives_its_unit_back_only_when_asked(
    state: RefurbedSimulatorState,
) -> None:
    state.set_stock("SKU-0000001", 2)
    order = state.place_order([("SKU-0000001", 2)])
    order_id, (first, second) = int(order["id"]), [int(i["id"]) for i in order["items"]]

    state.set_item_state(order_id, first, "CANCELLED")
    kept = state.stock_of("SKU-0000001")
    state.set_item_state(order_id, second, "CANCELLED", restock=True)

    assert (kept, state.stock_of("SKU-0000001")) == (0, 1)


def test_an_order_can_be_released_at_a_given_moment(state: RefurbedSimulatorState) -> None:
    state.set_stock("SKU-0000001", 1)
    moment = datetime(2024, 4, 30, 8, 30, 15, 250000, tzinfo=UTC)

    order = state.place_order([("SKU-0000001", 1)], released_at=moment)

    assert order["released_at"] == "2024-04-30T08:30:15.25Z"
