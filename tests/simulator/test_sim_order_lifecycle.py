"""Orders over time: hidden until paid, cancelled and refunded, driven from tests and /_sim."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from asgi_lifespan import LifespanManager

from simulator import OrderConflict, SimulatorState, UnknownOrderError, create_simulator_app
from simulator.testing import RunningSimulator
from tests.simulator.conftest import CLIENT_HEADERS, FakeWallClock, make_config

LISTING = 100000


async def listed(client: httpx.AsyncClient, **params: str) -> list[int]:
    page = (await client.get("/ws/orders", params={"page-size": 50, **params})).json()
    return [order["order_id"] for order in page["results"]]


async def test_hidden_order_is_listed_only_once_paid_with_a_new_modification_date(
    client: httpx.AsyncClient, state: SimulatorState, wall_clock: FakeWallClock
) -> None:
    state.set_quantity(LISTING, 4)
    placed = state.place_order(LISTING, 3, hidden=True)
    before_payment = await listed(client)
    hidden = state.order(placed.order_id)
    wall_clock.advance(30)

    state.pay_order(placed.order_id)
    after_payment = await listed(client, date_modification="2024-05-01T12:00:30Z")

    assert before_payment == []
    assert (hidden["state"], hidden["orderlines"][0]["state"]) == (0, 0)
    assert "date_payment" not in hidden
    assert state.quantity_of(LISTING) == 1
    assert after_payment == [placed.order_id]
    paid = state.order(placed.order_id)
    assert (paid["state"], paid["orderlines"][0]["state"]) == (1, 1)
    assert paid["date_creation"] == "2024-05-01T12:00:00.000000Z"
    assert paid["date_modification"] == paid["date_payment"] == "2024-05-01T12:00:30.000000Z"


async def test_unpaid_order_is_never_listed_and_gives_its_units_back(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    state.set_quantity(LISTING, 4)
    placed = state.place_order(LISTING, 3, hidden=True)

    unpaid = state.fail_payment(placed.order_id)

    assert (unpaid["state"], unpaid["orderlines"][0]["state"]) == (8, 7)
    assert state.quantity_of(LISTING) == 4
    assert await listed(client) == []
    with pytest.raises(OrderConflict):
        state.pay_order(placed.order_id)


async def test_paying_an_order_twice_is_refused(state: SimulatorState) -> None:
    state.set_quantity(LISTING, 1)
    placed = state.place_order(LISTING)

    with pytest.raises(OrderConflict):
        state.pay_order(placed.order_id)


async def test_cancelling_a_line_gives_its_units_back_once_and_moves_the_order(
    client: httpx.AsyncClient, state: SimulatorState, wall_clock: FakeWallClock
) -> None:
    state.set_quantity(LISTING, 5)
    placed = state.place_order(LISTING, 2)
    state.set_quantity(LISTING, 1)  # the seller changed the stock meanwhile
    wall_clock.advance(60)

    cancelled = state.cancel_line(placed.order_id, placed.line_id)
    with pytest.raises(OrderConflict):
        state.cancel_line(placed.order_id, placed.line_id, 5)

    assert state.quantity_of(LISTING) == 3
    assert cancelled["orderlines"][0]["state"] == 4
    assert cancelled["date_modification"] == "2024-05-01T12:01:00.000000Z"
    assert cancelled["date_creation"] == "2024-05-01T12:00:00.000000Z"
    assert await listed(client, date_modification="2024-05-01T12:01:00Z") == [placed.order_id]


@pytest.mark.parametrize("refund_state", [5, 6])
async def test_a_refund_gives_the_units_back(state: SimulatorState, refund_state: int) -> None:
    state.set_quantity(LISTING, 2)
    placed = state.place_order(LISTING, 2)

    refunded = state.cancel_line(placed.order_id, placed.line_id, refund_state)

    assert refunded["orderlines"][0]["state"] == refund_state
    assert state.quantity_of(LISTING) == 2


async def test_cancelling_one_line_of_a_basket_leaves_the_other(state: SimulatorState) -> None:
    state.set_quantity(LISTING, 1)
    state.set_quantity("SKU-0000002", 1)
    placed = state.place_basket([(LISTING, 1), ("SKU-0000002", 1)])

    order = state.cancel_line(placed.order_id, placed.line_ids[1])

    assert [line["state"] for line in order["orderlines"]] == [1, 4]
    assert (state.quantity_of(LISTING), state.quantity_of("SKU-0000002")) == (0, 1)


async def test_cancel_to_a_state_that_is_no_cancellation_is_refused(
    state: SimulatorState,
) -> None:
    state.set_quantity(LISTING, 1)
    placed = state.place_order(LISTING)

    with pytest.raises(ValueError, match="state must be one of"):
        state.cancel_line(placed.order_id, placed.line_id, 3)
    with pytest.raises(UnknownOrderError):
        state.cancel_line(placed.order_id, placed.line_id + 1)
    assert state.quantity_of(LISTING) == 0


async def test_an_order_short_of_stock_changes_nothing(state: SimulatorState) -> None:
    state.set_quantity(LISTING, 1)
    state.set_quantity("SKU-0000002", 5)

    with pytest.raises(OrderConflict, match="only 1 in stock"):
        state.place_basket([("SKU-0000002", 2), (LISTING, 2)])

    assert (state.quantity_of(LISTING), state.quantity_of("SKU-0000002")) == (1, 5)
    assert state.orders() == []


async def test_placed_orders_are_in_stats_with_their_ids(state: SimulatorState) -> None:
    state.set_quantity(LISTING, 3)

    placed = state.place_order(LISTING, 2, hidden=True)

    [recorded] = state.stats()["orders"]
    assert (recorded["order_id"], recorded["line_id"]) == (placed.order_id, placed.line_id)
    assert (recorded["units"], recorded["quantity"], recorded["hidden"]) == (2, 1, True)


async def test_customer_orders_task_places_listed_orders() -> None:
    app = create_simulator_app(make_config(orders_per_minute=60_000))
    state: SimulatorState = app.state.sim
    async with LifespanManager(app):
        for _ in range(500):
            if len(state.stats()["orders"]) >= 3:
                break
            await asyncio.sleep(0.01)
        stats_orders = {o["order_id"] for o in state.stats()["orders"]}
        listed_orders = {o["order_id"] for o in state.orders(include_hidden=False)}

    assert len(stats_orders) >= 3
    assert listed_orders == stats_orders


# -- the control API ------------------------------------------------------------


async def test_control_api_places_a_hidden_order_pays_and_cancels_it(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    state.set_quantity(LISTING, 3)

    placed = (
        await client.post(f"/_sim/listings/{LISTING}/orders", json={"units": 2, "hidden": True})
    ).json()
    hidden = await listed(client)
    paid = await client.post(f"/_sim/orders/{placed['order_id']}/pay")
    paid_again = await client.post(f"/_sim/orders/{placed['order_id']}/pay")
    shown = await listed(client)
    cancel_url = f"/_sim/orders/{placed['order_id']}/lines/{placed['line_id']}/cancel"
    refunded = await client.post(cancel_url, json={"state": 5})
    refunded_again = await client.post(cancel_url)

    assert placed["quantity"] == 1
    assert hidden == []
    assert (paid.status_code, paid.json()["state"]) == (200, 1)
    assert paid_again.status_code == 409
    assert shown == [placed["order_id"]]
    assert refunded.json()["orderlines"][0]["state"] == 5
    assert refunded_again.status_code == 409
    assert state.quantity_of(LISTING) == 3


async def test_control_api_places_a_basket_and_lists_hidden_orders(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    state.set_quantity(LISTING, 1)
    state.set_quantity("SKU-0000002", 1)

    created = await client.post(
        "/_sim/orders",
        json={"lines": [{"listing": str(LISTING)}, {"listing": "SKU-0000002"}], "hidden": True},
    )
    everything = (await client.get("/_sim/orders")).json()
    visible = (await client.get("/_sim/orders", params={"include_hidden": False})).json()
    one = await client.get(f"/_sim/orders/{created.json()['order_id']}")
    failed = await client.post(f"/_sim/orders/{created.json()['order_id']}/fail-payment")

    assert created.status_code == 201
    assert [line["listing"] for line in created.json()["orderlines"]] == [
        "SKU-0000001",
        "SKU-0000002",
    ]
    assert [o["order_id"] for o in everything] == [created.json()["order_id"]]
    assert visible == []
    assert one.json() == created.json()
    assert failed.json()["state"] == 8
    assert (state.quantity_of(LISTING), state.quantity_of("SKU-0000002")) == (1, 1)


async def test_control_api_answers_404_and_409_for_orders(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    state.set_quantity(LISTING, 1)

    unknown_order = await client.post("/_sim/orders/1/pay")
    unknown_listing = await client.post(
        "/_sim/orders", json={"lines": [{"listing": "SKU-9999999"}]}
    )
    short = await client.post(f"/_sim/listings/{LISTING}/orders", json={"units": 2})
    wrong_state = await client.post("/_sim/orders/1/lines/1/cancel", json={"state": 3})

    assert unknown_order.status_code == 404
    assert unknown_listing.status_code == 404
    assert short.status_code == 409
    assert wrong_state.status_code == 422


# -- RunningSimulator ---------------------------------------------------------------


def test_running_simulator_shortcuts_drive_orders_over_a_real_socket() -> None:
    with RunningSimulator(make_config()) as sim:
        sim.state.set_quantity(LISTING, 2)
        url = f"{sim.base_url}/ws/orders"

        placed = sim.place_order(LISTING, 2, hidden=True)
        while_hidden = httpx.get(url, headers=CLIENT_HEADERS).json()["count"]
        sim.pay_order(placed.order_id)
        once_paid = httpx.get(url, headers=CLIENT_HEADERS).json()["results"]
        sim.cancel_line(placed.order_id, placed.line_id)

        assert while_hidden == 0
        assert [o["order_id"] for o in once_paid] == [placed.order_id]
        assert sim.orders()[0]["orderlines"][0]["state"] == 4
        assert sim.state.quantity_of(LISTING) == 2
