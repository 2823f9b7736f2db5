"""GET /ws/listings paging, as Django REST framework pages it."""

from __future__ import annotations

import httpx

from simulator import SimulatorConfig, SimulatorState, create_simulator_app
from tests.simulator.conftest import client_for, make_config


async def test_default_page_size_is_10_and_count_is_the_whole_catalogue(
    client: httpx.AsyncClient, config: SimulatorConfig
) -> None:
    page = (await client.get("/ws/listings")).json()

    assert page["count"] == config.listings
    assert len(page["results"]) == 10
    assert page["previous"] is None


async def test_page_size_above_50_is_capped_silently(client: httpx.AsyncClient) -> None:
    response = await client.get("/ws/listings", params={"page-size": 500})

    assert response.status_code == 200
    assert len(response.json()["results"]) == 50


async def test_page_size_with_underscore_is_ignored(client: httpx.AsyncClient) -> None:
    page = (await client.get("/ws/listings", params={"page_size": 50})).json()

    assert len(page["results"]) == 10


async def test_next_and_previous_are_absolute_and_keep_page_size(
    client: httpx.AsyncClient,
) -> None:
    page = (await client.get("/ws/listings", params={"page": 2, "page-size": 20})).json()

    assert page["next"] == "http://bm.test/ws/listings?page=3&page-size=20"
    # DRF drops page=1 from the first page's link.
    assert page["previous"] == "http://bm.test/ws/listings?page-size=20"


async def test_following_next_reads_every_listing_once_and_last_next_is_null(
    client: httpx.AsyncClient, config: SimulatorConfig
) -> None:
    ids: list[str] = []
    url: str | None = "/ws/listings?page-size=50"
    last_page: dict[str, object] = {}
    while url is not None:
        last_page = (await client.get(url)).json()
        ids.extend(listing["id"] for listing in last_page["results"])  # type: ignore[attr-defined]
        url = last_page["next"]  # type: ignore[assignment]

    assert len(ids) == len(set(ids)) == config.listings
    assert last_page["next"] is None
    assert len(last_page["results"]) == config.listings % 50  # type: ignore[arg-type]


async def test_page_beyond_the_end_is_404_invalid_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/ws/listings", params={"page": 99, "page-size": 50})

    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid page."
    assert "requestId" in response.json()


async def test_non_numeric_page_is_404_invalid_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/ws/listings", params={"page": "two"})

    assert response.status_code == 404


async def test_empty_catalogue_has_one_empty_page() -> None:
    async with client_for(create_simulator_app(make_config(listings=0))) as http:
        page = (await http.get("/ws/listings")).json()

    assert page == {"count": 0, "next": None, "previous": None, "results": []}


async def test_trailing_slash_is_the_same_endpoint(client: httpx.AsyncClient) -> None:
    response = await client.get("/ws/listings/", params={"page-size": 5})

    assert response.status_code == 200
    assert len(response.json()["results"]) == 5


async def test_filters_select_by_quantity_and_publication_state(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    state.set_quantity("SKU-0000001", 0)
    sold_out = (
        await client.get("/ws/listings", params={"max_quantity": 0, "page-size": 50})
    ).json()
    in_stock = (
        await client.get("/ws/listings", params={"min_quantity": 1, "page-size": 50})
    ).json()
    offline = (await client.get("/ws/listings", params={"publication_state": 3})).json()

    assert "SKU-0000001" in {listing["sku"] for listing in sold_out["results"]}
    assert all(listing["quantity"] == 0 for listing in sold_out["results"])
    assert all(listing["quantity"] >= 1 for listing in in_stock["results"])
    assert sold_out["count"] + in_stock["count"] == 120
    assert all(listing["publication_state"] == 3 for listing in offline["results"])


async def test_bad_filter_value_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/ws/listings", params={"min_quantity": "lots"})

    assert response.status_code == 400
    assert response.json()["error"]["code"]


async def test_public_base_url_replaces_host_in_links() -> None:
    app = create_simulator_app(make_config(public_base_url="https://www.backmarket.fr"))
    async with client_for(app) as http:
        page = (await http.get("/ws/listings")).json()

    assert page["next"] == "https://www.backmarket.fr/ws/listings?page=2"
