"""RunningSimulator (a real socket), orders in the background, latency, the CLI."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from asgi_lifespan import LifespanManager

from simulator import create_simulator_app
from simulator.__main__ import build_parser, config_from_args
from simulator.testing import RunningSimulator
from tests.simulator.conftest import CLIENT_HEADERS, client_for, make_config


def test_running_simulator_serves_over_http_from_a_sync_test() -> None:
    with RunningSimulator(make_config()) as sim:
        sim.state.set_quantity("SKU-0000001", 21)
        response = httpx.get(f"{sim.base_url}/ws/listings", headers=CLIENT_HEADERS)

        assert response.status_code == 200
        assert response.json()["next"].startswith(sim.base_url)
        assert response.json()["results"][0]["quantity"] == 21
        assert sim.state.stats()["total_requests"] == 1


async def test_running_simulator_hold_release_across_threads() -> None:
    async with RunningSimulator(make_config()) as sim:
        hold = sim.state.hold("/ws/listings/")
        async with httpx.AsyncClient(base_url=sim.base_url, headers=CLIENT_HEADERS) as http:
            parked = asyncio.create_task(http.get("/ws/listings/100000"))
            await sim.state.wait_held(hold)
            threading.Thread(target=sim.state.release, args=(hold,)).start()
            response = await parked

    assert response.status_code == 200


def test_stopping_does_not_wait_for_a_request_in_a_timeout_fault() -> None:
    sim = RunningSimulator(make_config(timeout_fault_s=3600)).start()
    url = f"{sim.base_url}/ws/listings"
    try:
        sim.state.fail_next("/ws", kind="timeout")
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(url, headers=CLIENT_HEADERS, timeout=0.2)
    finally:
        sim.stop()

    assert not sim.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, headers=CLIENT_HEADERS)


async def test_orders_task_decrements_stock_under_lifespan() -> None:
    app = create_simulator_app(make_config(orders_per_minute=60_000))
    state = app.state.sim
    total_before = sum(state.quantity_of(100000 + 7 * i) for i in range(120))
    async with LifespanManager(app):
        for _ in range(500):
            if len(state.stats()["orders"]) >= 5:
                break
            await asyncio.sleep(0.01)
        orders = state.stats()["orders"]
        total_after = sum(state.quantity_of(100000 + 7 * i) for i in range(120))

    assert len(orders) >= 5
    assert total_before - total_after == len(state.stats()["orders"]) >= len(orders)
    assert all(order["quantity"] >= 0 for order in orders)


async def test_no_orders_without_orders_per_minute() -> None:
    app = create_simulator_app(make_config())
    async with LifespanManager(app):
        await asyncio.sleep(0.05)

    assert app.state.sim.stats()["orders"] == []


async def test_latency_delays_every_ws_answer() -> None:
    app = create_simulator_app(make_config(latency_ms=40))
    async with client_for(app) as http:
        started = time.perf_counter()
        await http.get("/ws/listings")
        waited = time.perf_counter() - started

    # A lower bound only: the simulator must wait at least that long.
    assert waited >= 0.04


def test_cli_options_map_to_the_config() -> None:
    args = build_parser().parse_args(
        [
            "--port", "9100",
            "--listings", "5000",
            "--latency-ms", "25",
            "--requests-per-10s", "200",
            "--fault-rate", "0.05",
            "--seed", "7",
            "--token", "t",
            "--host", "0.0.0.0",
        ]
    )  # fmt: skip
    config = config_from_args(args)

    assert (args.host, args.port) == ("0.0.0.0", 9100)
    assert (config.listings, config.latency_ms, config.requests_per_10s) == (5000, 25, 200)
    assert (config.fault_rate, config.seed, config.token) == (0.05, 7, "t")


def test_cli_main_runs_the_server_with_the_parsed_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import simulator.__main__ as cli

    calls = []
    monkeypatch.setattr(cli, "run", lambda config, host, port: calls.append((config, host, port)))
    cli.main(["--port", "9001", "--listings", "10"])

    assert calls[0][0].listings == 10
    assert calls[0][1:] == ("127.0.0.1", 9001)


async def test_orders_can_be_switched_on_at_run_time() -> None:
    app = create_simulator_app(make_config())
    state = app.state.sim
    async with LifespanManager(app):
        state.configure(orders_per_minute=60_000)
        for _ in range(300):
            if state.stats()["orders"]:
                break
            await asyncio.sleep(0.01)

    assert state.stats()["orders"]
