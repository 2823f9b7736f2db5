"""Accept-Language picks the market: per-market prices, one global quantity."""

from __future__ import annotations

import httpx

from simulator import EU_MARKETS, SimulatorState, create_simulator_app
from tests.simulator.conftest import client_for, make_config


async def test_default_config_serves_the_14_eu_markets(client: httpx.AsyncClient) -> None:
    for market in EU_MARKETS:
        response = await client.get("/ws/listings", headers={"Accept-Language": market})
        assert response.status_code == 200, market
    assert len(EU_MARKETS) == 14


async def test_market_sets_currency_and_price_but_quantity_is_global(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    state.set_quantity("SKU-0000003", 17)
    shown = {
        market: (
            await client.get(
                "/ws/listings/detail?sku=SKU-0000003", headers={"Accept-Language": market}
            )
        ).json()
        for market in ("fr-fr", "en-gb", "sv-se", "de-de")
    }

    assert {market: listing["currency"] for market, listing in shown.items()} == {
        "fr-fr": "EUR",
        "en-gb": "GBP",
        "sv-se": "SEK",
        "de-de": "EUR",
    }
    assert len({listing["price"] for listing in shown.values()}) == 4
    assert {listing["quantity"] for listing in shown.values()} == {17}
    assert all(isinstance(listing["price"], str) for listing in shown.values())


async def test_missing_accept_language_means_fr_fr(client: httpx.AsyncClient) -> None:
    plain = (await client.get("/ws/listings/detail?sku=SKU-0000001")).json()
    french = (
        await client.get(
            "/ws/listings/detail?sku=SKU-0000001", headers={"Accept-Language": "fr-fr"}
        )
    ).json()

    assert plain == french


async def test_unknown_market_is_400_error_response(client: httpx.AsyncClient) -> None:
    response = await client.get("/ws/listings", headers={"Accept-Language": "en-us"})

    assert response.status_code == 400
    assert set(response.json()) == {"error", "requestId"}


async def test_price_update_changes_one_market_only(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    before = state.listing("SKU-0000004", "de-de")["price"]

    response = await client.post(
        "/ws/listings/100021", json={"price": "199.9"}, headers={"Accept-Language": "fr-fr"}
    )

    assert response.json()["price"] == "199.90"
    assert state.listing("SKU-0000004", "de-de")["price"] == before


async def test_partial_coverage_lists_each_listing_in_its_home_market_at_least() -> None:
    app = create_simulator_app(make_config(listings=300, market_coverage=0.3))
    seen: dict[str, int] = {}
    async with client_for(app) as http:
        for market in EU_MARKETS:
            url: str | None = "/ws/listings?page-size=50"
            while url is not None:
                page = (await http.get(url, headers={"Accept-Language": market})).json()
                for listing in page["results"]:
                    seen[listing["id"]] = seen.get(listing["id"], 0) + 1
                url = page["next"]

    assert len(seen) == 300
    # With 30% coverage a listing is in its home market plus ~4 of the 13 others.
    assert 300 * 2 < sum(seen.values()) < 300 * 8


async def test_full_coverage_lists_every_listing_in_every_market(
    client: httpx.AsyncClient,
) -> None:
    counts = {
        market: (await client.get("/ws/listings", headers={"Accept-Language": market})).json()[
            "count"
        ]
        for market in ("fr-fr", "it-it", "fi-fi")
    }

    assert set(counts.values()) == {120}
