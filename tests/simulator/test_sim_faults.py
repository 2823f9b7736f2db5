"""Injected failures: fail_next(kind) and the random fault_rate."""

from __future__ import annotations

import httpx
import pytest

from simulator import SimulatorState, create_simulator_app
from simulator.state import RANDOM_FAULT_KINDS
from tests.simulator.conftest import client_for, make_config


@pytest.mark.parametrize("kind", ["500", "502", "503"])
async def test_server_error_kinds_answer_error_response_v1(
    client: httpx.AsyncClient, state: SimulatorState, kind: str
) -> None:
    state.fail_next("/ws/listings", kind=kind)  # type: ignore[arg-type]

    response = await client.get("/ws/listings")

    assert response.status_code == int(kind)
    assert set(response.json()) == {"error", "requestId"}
    assert state.stats()["faults"] == {kind: 1}


async def test_fault_hits_the_next_count_matching_requests_only(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    state.fail_next("/ws/listings/detail", count=2, kind="503")

    other = await client.get("/ws/listings")
    matching = [
        (await client.get("/ws/listings/detail?sku=SKU-0000001")).status_code for _ in "abc"
    ]

    assert other.status_code == 200
    assert matching == [503, 503, 200]


async def test_fault_can_target_a_method_and_a_page(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    state.fail_next("/ws/listings", kind="500", method="GET", page=3)

    answered = [
        (await client.get("/ws/listings", params={"page": page})).status_code for page in (1, 2, 3)
    ]

    assert answered == [200, 200, 500]


async def test_429_kind_refuses_once_without_blocking(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    state.fail_next("/ws", kind="429")

    answered = [(await client.get("/ws/listings")).status_code for _ in range(2)]

    assert answered == [429, 200]
    assert state.stats()["status_429"] == 1


async def test_html403_is_a_cloudflare_html_page(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    state.fail_next("/ws", kind="html403")

    response = await client.get("/ws/listings")

    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cf-ray"] in response.text


async def test_json403_is_the_bot_management_challenge(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    state.fail_next("/ws", kind="json403")

    response = await client.get("/ws/listings")

    assert response.status_code == 403
    assert response.json()["errors"][0]["code"] == "bot-need-challenge"


async def test_timeout_kind_answers_524_after_cloudflare_gives_up() -> None:
    app = create_simulator_app(make_config(timeout_fault_s=0.01))
    app.state.sim.fail_next("/ws", kind="timeout")
    async with client_for(app) as http:
        response = await http.get("/ws/listings")

    assert response.status_code == 524


async def test_slow_kind_answers_normally_after_a_delay() -> None:
    app = create_simulator_app(make_config(slow_fault_s=0.01))
    app.state.sim.fail_next("/ws", kind="slow")
    async with client_for(app) as http:
        response = await http.get("/ws/listings")

    assert response.status_code == 200
    assert app.state.sim.stats()["faults"] == {"slow": 1}


async def test_truncate_gives_a_short_page_that_is_not_the_last(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    state.fail_next("/ws/listings", kind="truncate", page=2)

    page = (await client.get("/ws/listings", params={"page": 2, "page-size": 20})).json()

    assert page["count"] == 120
    assert page["next"] is not None
    assert 0 < len(page["results"]) < 20


async def test_truncate_is_not_used_up_by_other_endpoints(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    state.fail_next("/ws/listings", kind="truncate")

    single = await client.get("/ws/listings/100000")
    page = (await client.get("/ws/listings")).json()

    assert single.status_code == 200
    assert len(page["results"]) == 5


async def test_lost_response_applies_the_update_but_answers_502(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    state.fail_next("/ws/listings/", kind="lost_response", method="POST")

    response = await client.post("/ws/listings/100000", json={"quantity": 33})

    assert response.status_code == 502
    assert state.quantity_of(100000) == 33


async def test_unknown_kind_is_refused(state: SimulatorState) -> None:
    with pytest.raises(ValueError, match="kind"):
        state.fail_next("/ws", kind="418")  # type: ignore[arg-type]


async def test_fault_rate_1_faults_every_request_with_a_random_kind() -> None:
    app = create_simulator_app(make_config(fault_rate=1.0, slow_fault_s=0))
    async with client_for(app) as http:
        statuses = [(await http.get("/ws/listings")).status_code for _ in range(40)]

    faults = app.state.sim.stats()["faults"]
    assert sum(faults.values()) == 40
    assert set(faults) <= set(RANDOM_FAULT_KINDS)
    assert len(faults) >= 3
    assert set(statuses) <= {200, 403, 500, 502, 503}


async def test_fault_rate_0_never_faults(client: httpx.AsyncClient, state: SimulatorState) -> None:
    statuses = {(await client.get("/ws/listings")).status_code for _ in range(20)}

    assert statuses == {200}
    assert state.stats()["faults"] == {}
