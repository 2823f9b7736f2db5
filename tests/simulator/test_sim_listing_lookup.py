"""GET /ws/listings/{listingId} and /ws/listings/detail."""

from __future__ import annotations

import httpx

from simulator import SimulatorState


async def test_get_by_uuid_and_by_integer_id_give_the_same_listing(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    listing = state.listing("SKU-0000010")

    by_uuid = await client.get(f"/ws/listings/{listing['id']}")
    by_int = await client.get(f"/ws/listings/{listing['listing_id']}")

    assert by_uuid.status_code == by_int.status_code == 200
    assert by_uuid.json() == by_int.json() == {**listing, "statuscode": 200}


async def test_detail_by_sku_listing_id_or_id(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    listing = state.listing("SKU-0000007")

    answers = [
        (await client.get("/ws/listings/detail", params=params)).json()
        for params in (
            {"sku": "SKU-0000007"},
            {"sku": "sku-0000007"},
            {"listing_id": listing["listing_id"]},
            {"id": listing["id"]},
        )
    ]

    assert all(answer["id"] == listing["id"] for answer in answers)


async def test_unknown_listing_is_404_error_response(client: httpx.AsyncClient) -> None:
    unknown_uuid = await client.get("/ws/listings/7a97a1b6-547e-4718-bc72-5b84aca91b09")
    unknown_int = await client.get("/ws/listings/100001")
    unknown_sku = await client.get("/ws/listings/detail", params={"sku": "NOPE"})

    for response in (unknown_uuid, unknown_int, unknown_sku):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        assert response.headers["cf-ray"]


async def test_malformed_listing_id_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/ws/listings/not-an-id")

    assert response.status_code == 400


async def test_detail_without_criteria_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/ws/listings/detail")

    assert response.status_code == 400


async def test_removed_listing_disappears_everywhere(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    listing = state.listing("SKU-0000002")
    state.remove_listing(listing["id"])

    page = (await client.get("/ws/listings", params={"page-size": 50})).json()
    single = await client.get(f"/ws/listings/{listing['listing_id']}")

    assert page["count"] == 119
    assert listing["id"] not in {found["id"] for found in page["results"]}
    assert single.status_code == 404


async def test_added_listing_is_listed_and_found(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    added = state.add_listing(sku="MY-PHONE", quantity=4, prices={"fr-fr": "99.5"})

    found = (await client.get("/ws/listings/detail", params={"sku": "my-phone"})).json()
    by_id = (await client.get(f"/ws/listings/{added['id']}")).json()
    last_page = (await client.get("/ws/listings", params={"page": "last"})).json()

    assert found["id"] == by_id["id"] == added["id"]
    assert found["quantity"] == 4
    assert found["price"] == "99.50"
    assert last_page["count"] == 121
    assert last_page["results"][-1]["sku"] == "MY-PHONE"
