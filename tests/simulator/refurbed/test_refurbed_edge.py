"""In front of the RPCs: Plain auth, the rate limit and its headers, faults, holds, latency."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from simulator.refurbed import RefurbedSimulatorState, create_refurbed_simulator_app
from simulator.refurbed.state import RANDOM_FAULT_KINDS
from tests.simulator.conftest import FakeWallClock
from tests.simulator.refurbed.conftest import OFFERS, ORDERS, TOKEN, client_for, make_config

GET_FIRST = {"identifier": {"sku": "SKU-0000001"}}


@pytest.mark.parametrize(
    "authorization", [None, f"Basic {TOKEN}", f"Bearer {TOKEN}", "Plain wrong", f"plain {TOKEN}"]
)
async def test_anything_but_plain_and_the_token_is_unauthenticated(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    del client.headers["Authorization"]
    headers = {} if authorization is None else {"Authorization": authorization}

    response = await client.post(f"{OFFERS}/GetOffer", json=GET_FIRST, headers=headers)

    assert response.status_code == 401
    assert response.json() == {"code": 16, "message": response.json()["message"], "details": []}


async def test_orders_need_the_token_too(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{ORDERS}/ListOrders", json={}, headers={"Authorization": f"Bearer {TOKEN}"}
    )

    assert (response.status_code, response.json()["code"]) == (401, 16)


async def test_every_answer_carries_the_rate_limit_headers_and_429_past_the_limit(
    wall_clock: FakeWallClock,
) -> None:
    app = create_refurbed_simulator_app(
        make_config(requests_per_window=3, rate_limit_window_s=10), wall_clock=wall_clock
    )
    window_end = int(wall_clock.now.timestamp()) // 10 * 10 + 10
    async with client_for(app) as http:
        answers = [await http.post(f"{OFFERS}/GetOffer", json=GET_FIRST) for _ in range(3)]
        answers.append(await http.post(f"{OFFERS}/GetOffer", json={"identifier": {"sku": "?"}}))
        wall_clock.advance(window_end - wall_clock.now.timestamp())
        after_reset = await http.post(f"{OFFERS}/GetOffer", json=GET_FIRST)

    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in answers] == ["2", "1", "0", "0"]
    assert {r.headers["X-RateLimit-Limit"] for r in answers} == {"3"}
    assert {r.headers["X-RateLimit-Reset"] for r in answers} == {str(window_end)}
    assert answers[3].json()["code"] == 8
    assert after_reset.status_code == 200
    assert after_reset.headers["X-RateLimit-Remaining"] == "2"
    assert after_reset.headers["X-RateLimit-Reset"] == str(window_end + 10)
    assert app.state.sim.stats()["status_429"] == 1


async def test_the_limit_is_counted_per_token(wall_clock: FakeWallClock) -> None:
    app = create_refurbed_simulator_app(make_config(requests_per_window=1), wall_clock=wall_clock)
    async with client_for(app) as http:
        ours = await http.post(f"{OFFERS}/GetOffer", json=GET_FIRST)
        other = await http.post(
            f"{OFFERS}/GetOffer", json=GET_FIRST, headers={"Authorization": "Plain other"}
        )
        ours_again = await http.post(f"{OFFERS}/GetOffer", json=GET_FIRST)

    assert (ours.status_code, other.status_code, ours_again.status_code) == (200, 401, 429)


async def test_no_limit_means_no_rate_limit_headers(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{OFFERS}/GetOffer", json=GET_FIRST)

    assert "X-RateLimit-Limit" not in response.headers


@pytest.mark.parametrize(
    ("kind", "status", "code"), [("500", 500, 13), ("503", 503, 14), ("429", 429, 8)]
)
async def test_error_faults_answer_their_status(
    client: httpx.AsyncClient, state: RefurbedSimulatorState, kind: str, status: int, code: int
) -> None:
    state.fail_next(f"{OFFERS}/GetOffer", kind=kind)  # type: ignore[arg-type]

    faulted = await client.post(f"{OFFERS}/GetOffer", json=GET_FIRST)
    next_one = await client.post(f"{OFFERS}/GetOffer", json=GET_FIRST)

    assert (faulted.status_code, faulted.json()["code"]) == (status, code)
    assert next_one.status_code == 200
    assert state.stats()["faults"] == {kind: 1}


async def test_a_fault_hits_only_the_count_of_matching_calls(
    client: httpx.AsyncClient, state: RefurbedSimulatorState
) -> None:
    state.fail_next(f"{OFFERS}/UpdateOffer", count=2, kind="503")

    other = await client.post(f"{OFFERS}/GetOffer", json=GET_FIRST)
    updates = [
        (await client.post(f"{OFFERS}/UpdateOffer", json={**GET_FIRST, "stock": 1})).status_code
        for _ in range(3)
    ]

    assert other.status_code == 200
    assert updates == [503, 503, 200]


async def test_wrong_shape_is_a_200_that_is_not_the_documented_body(
    client: httpx.AsyncClient, state: RefurbedSimulatorState
) -> None:
    state.fail_next(f"{OFFERS}/ListOffers", kind="wrong_shape")

    response = await client.post(f"{OFFERS}/ListOffers", json={})

    assert response.status_code == 200
    assert not isinstance(response.json()["offers"], list)


@pytest.mark.parametrize(("kind", "status"), [("lost_response", 503), ("lost_timeout", 504)])
async def test_a_lost_answer_still_applies_the_update(kind: str, status: int) -> None:
    app = create_refurbed_simulator_app(make_config(timeout_fault_s=0.01))
    sim: RefurbedSimulatorState = app.state.sim
    sim.set_stock("SKU-0000001", 4)
    sim.fail_next(f"{OFFERS}/UpdateOffer", kind=kind)  # type: ignore[arg-type]
    async with client_for(app) as http:
        response = await http.post(f"{OFFERS}/UpdateOffer", json={**GET_FIRST, "stock": 11})

    assert response.status_code == status
    assert sim.stock_of("SKU-0000001") == 11


async def test_timeout_hangs_past_the_clients_timeout_and_applies_nothing() -> None:
    app = create_refurbed_simulator_app(make_config(timeout_fault_s=3600))
    sim: RefurbedSimulatorState = app.state.sim
    sim.set_stock("SKU-0000001", 4)
    sim.fail_next(f"{OFFERS}/UpdateOffer", kind="timeout")
    async with client_for(app) as http:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                http.post(f"{OFFERS}/UpdateOffer", json={**GET_FIRST, "stock": 11}), 0.2
            )
    sim.wake_everything()

    assert sim.stock_of("SKU-0000001") == 4


async def test_a_patient_client_gets_deadline_exceeded_after_a_timeout_fault() -> None:
    app = create_refurbed_simulator_app(make_config(timeout_fault_s=0.01))
    app.state.sim.fail_next(kind="timeout")
    async with client_for(app) as http:
        response = await http.post(f"{OFFERS}/GetOffer", json=GET_FIRST)

    assert (response.status_code, response.json()["code"]) == (504, 4)


async def test_fault_rate_1_faults_every_call_with_a_random_kind() -> None:
    app = create_refurbed_simulator_app(make_config(fault_rate=1.0))
    async with client_for(app) as http:
        statuses = [
            (await http.post(f"{OFFERS}/GetOffer", json=GET_FIRST)).status_code for _ in range(30)
        ]

    faults = app.state.sim.stats()["faults"]
    assert sum(faults.values()) == 30
    assert set(faults) == set(RANDOM_FAULT_KINDS)
    assert set(statuses) == {500, 503, 429}


async def test_unknown_fault_kind_is_refused(state: RefurbedSimulatorState) -> None:
    with pytest.raises(ValueError, match="kind"):
        state.fail_next(kind="418")  # type: ignore[arg-type]


async def test_a_held_call_waits_until_released_and_sees_changes_made_meanwhile(
    client: httpx.AsyncClient, state: RefurbedSimulatorState
) -> None:
    hold = state.hold(f"{OFFERS}/GetOffer")
    held = asyncio.create_task(client.post(f"{OFFERS}/GetOffer", json=GET_FIRST))
    await state.wait_held(hold)

    free = await client.post(f"{OFFERS}/ListOffers", json={"pagination": {"limit": 1}})
    state.set_stock("SKU-0000001", 41)
    still_waiting = not held.done()
    state.release(hold)

    assert free.status_code == 200
    assert still_waiting
    assert (await held).json()["offer"]["stock"] == 41
    assert (hold.held, hold.caught) == (0, 1)


async def test_an_order_placed_while_a_read_is_held_lowers_the_stock_the_read_returns(
    client: httpx.AsyncClient, state: RefurbedSimulatorState
) -> None:
    state.set_stock("SKU-0000001", 14)
    hold = state.hold(f"{OFFERS}/GetOffer")
    read = asyncio.create_task(client.post(f"{OFFERS}/GetOffer", json=GET_FIRST))
    await state.wait_held(hold)

    state.place_order([("SKU-0000001", 1)])
    state.release(hold)
    seen = (await read).json()["offer"]["stock"]
    await client.post(f"{OFFERS}/UpdateOffer", json={**GET_FIRST, "stock": seen + 5})

    assert seen == 13
    assert state.stock_of("SKU-0000001") == 18


async def test_max_in_flight_counts_held_calls(
    client: httpx.AsyncClient, state: RefurbedSimulatorState
) -> None:
    hold = state.hold()
    calls = [
        asyncio.create_task(client.post(f"{OFFERS}/GetOffer", json=GET_FIRST)) for _ in range(3)
    ]
    await state.wait_held(hold, count=3)

    in_flight = state.stats()["in_flight"]
    state.release(hold)
    await asyncio.gather(*calls)

    assert in_flight == 3
    assert state.stats()["max_in_flight"] == 3
    assert state.stats()["in_flight"] == 0


async def test_wait_held_times_out_when_nothing_arrives(state: RefurbedSimulatorState) -> None:
    with pytest.raises(TimeoutError):
        await state.wait_held(state.hold(), timeout_s=0.05)


async def test_latency_delays_every_api_answer() -> None:
    app = create_refurbed_simulator_app(make_config(latency_ms=40))
    async with client_for(app) as http:
        started = time.perf_counter()
        await http.post(f"{OFFERS}/GetOffer", json=GET_FIRST)
        waited = time.perf_counter() - started

    # A lower bound only: the simulator must wait at least that long.
    assert waited >= 0.04


async def test_stats_count_calls_by_method_and_status(
    client: httpx.AsyncClient, state: RefurbedSimulatorState
) -> None:
    await client.post(f"{OFFERS}/GetOffer", json=GET_FIRST)
    await client.post(f"{OFFERS}/GetOffer", json={"identifier": {"sku": "missing"}})
    await client.post(f"{ORDERS}/ListOrders", json={})

    stats = state.stats()
    assert stats["by_method"] == {"OfferService/GetOffer": 2, "OrderService/ListOrders": 1}
    assert stats["by_method_status"] == {
        "OfferService/GetOffer 200": 1,
        "OfferService/GetOffer 404": 1,
        "OrderService/ListOrders 200": 1,
    }
    state.reset_stats()
    assert state.stats()["total_requests"] == 0
