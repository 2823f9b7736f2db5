"""The /_sim control API over HTTP, a real socket, the command line and the demo SKUs."""

from __future__ import annotations

import httpx
import pytest

from simulator.refurbed import RefurbedSimulatorState
from simulator.refurbed.__main__ import build_parser, config_from_args
from simulator.refurbed.demo import demo_offer_skus, running_demo_refurbed_simulator
from simulator.refurbed.testing import RunningRefurbedSimulator
from tests.simulator.refurbed.conftest import CLIENT_HEADERS, OFFERS, make_config


async def test_control_api_seeds_offers_and_reads_and_sets_stock(
    client: httpx.AsyncClient, state: RefurbedSimulatorState
) -> None:
    added = await client.post("/_sim/offers", json={"sku": "NEW-SKU", "stock": 4})
    duplicate = await client.post("/_sim/offers", json={"sku": "NEW-SKU"})
    spaced = await client.post("/_sim/offers", json={"sku": " padded "})
    written = await client.put("/_sim/offers/NEW-SKU/stock", json={"stock": 9})
    by_id = await client.get(f"/_sim/offers/{added.json()['id']}/stock")
    missing = await client.get("/_sim/offers/NOPE/stock")

    assert added.status_code == 201
    assert (duplicate.status_code, spaced.status_code) == (409, 409)
    assert written.json() == {"id": added.json()["id"], "sku": "NEW-SKU", "stock": 9}
    assert by_id.json()["stock"] == 9
    assert missing.status_code == 404
    assert state.stock_of("NEW-SKU") == 9
    assert state.stats()["total_requests"] == 0


async def test_control_api_places_orders_that_lower_stock(
    client: httpx.AsyncClient, state: RefurbedSimulatorState
) -> None:
    state.set_stock("SKU-0000001", 2)

    placed = await client.post(
        "/_sim/orders", json={"items": [{"offer": "SKU-0000001", "units": 2}]}
    )
    short = await client.post("/_sim/orders", json={"items": [{"offer": "SKU-0000001"}]})
    unknown = await client.post("/_sim/orders", json={"items": [{"offer": "NOPE"}]})
    order_id, item_id = placed.json()["id"], placed.json()["items"][0]["id"]
    cancelled = await client.post(
        f"/_sim/orders/{order_id}/items/{item_id}/state",
        json={"state": "CANCELLED", "restock": True},
    )
    listed = await client.get("/_sim/orders")

    assert placed.status_code == 201
    assert len(placed.json()["items"]) == 2
    assert (short.status_code, unknown.status_code) == (409, 404)
    assert cancelled.json()["items"][0]["state"] == "CANCELLED"
    assert state.stock_of("SKU-0000001") == 1
    assert [o["id"] for o in listed.json()] == [order_id]


async def test_control_api_faults_holds_config_and_stats(
    client: httpx.AsyncClient, state: RefurbedSimulatorState
) -> None:
    await client.post("/_sim/faults", json={"path_prefix": f"{OFFERS}/GetOffer", "kind": "503"})
    faulted = await client.post(f"{OFFERS}/GetOffer", json={"identifier": {"sku": "SKU-0000001"}})
    hold = (await client.post("/_sim/holds", json={"path_prefix": OFFERS})).json()
    released = await client.post(f"/_sim/holds/{hold['hold_id']}/release")
    changed = await client.patch("/_sim/config", json={"requests_per_window": 50, "latency_ms": 0})
    refused = await client.patch("/_sim/config", json={"offers": 5})
    stats = (await client.get("/_sim/stats")).json()

    assert faulted.status_code == 503
    assert released.json()["released"] is True
    assert changed.json()["requests_per_window"] == 50
    assert "token" not in changed.json()
    assert refused.status_code == 422
    assert stats["by_method"] == {"OfferService/GetOffer": 1}
    assert (await client.post("/_sim/stats/reset")).status_code == 204


def test_running_simulator_serves_over_http_and_stops() -> None:
    with RunningRefurbedSimulator(make_config()) as sim:
        sim.state.set_stock("SKU-0000001", 21)
        sim.place_order([("SKU-0000001", 1)])
        response = httpx.post(
            f"{sim.base_url}{OFFERS}/GetOffer",
            json={"identifier": {"sku": "SKU-0000001"}},
            headers=CLIENT_HEADERS,
        )
        url = sim.base_url

    assert response.json()["offer"]["stock"] == 20
    assert not sim.running
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{url}{OFFERS}/GetOffer", json={}, headers=CLIENT_HEADERS)


def test_stopping_does_not_wait_for_a_call_in_a_timeout_fault() -> None:
    sim = RunningRefurbedSimulator(make_config(timeout_fault_s=3600)).start()
    try:
        sim.state.fail_next(kind="timeout")
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{sim.base_url}{OFFERS}/ListOffers", json={}, headers=CLIENT_HEADERS, timeout=0.2
            )
    finally:
        sim.stop()

    assert not sim.running


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
        ]
    )  # fmt: skip
    config = config_from_args(args)

    assert args.port == 9100
    assert (config.offers, config.latency_ms) == (5000, 25)
    assert (config.requests_per_window, config.rate_limit_window_s) == (200, 10.0)
    assert (config.fault_rate, config.seed, config.token) == (0.05, 7, "t")


def test_simulator_main_with_kind_refurbed_runs_the_refurbed_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import simulator.__main__ as backmarket_cli
    import simulator.refurbed.__main__ as refurbed_cli

    calls = []
    monkeypatch.setattr(
        refurbed_cli, "run", lambda config, host, port: calls.append((config, port))
    )
    monkeypatch.setattr(backmarket_cli, "run", lambda *a, **k: pytest.fail("Back Market started"))
    backmarket_cli.main(["--kind", "refurbed", "--port", "9101", "--listings", "10"])

    assert calls[0][0].offers == 10
    assert calls[0][1] == 9101


def test_demo_skus_match_the_back_market_simulators_and_add_refurbed_only_ones() -> None:
    skus = demo_offer_skus(3, refurbed_only=2)

    assert skus == ["SKU-0000001", "SKU-0000002", "SKU-0000003", "RFB-ONLY-001", "RFB-ONLY-002"]


def test_demo_simulator_holds_one_offer_per_given_sku_in_order() -> None:
    with running_demo_refurbed_simulator(["B-2", "A-1"]) as sim:
        response = httpx.post(
            f"{sim.base_url}{OFFERS}/ListOffers",
            json={},
            headers={"Authorization": f"Plain {sim.config.token}"},
        )

    assert [o["sku"] for o in response.json()["offers"]] == ["B-2", "A-1"]
    assert response.headers["X-RateLimit-Limit"] == "200"
