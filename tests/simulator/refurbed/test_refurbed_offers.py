"""OfferService: cursor pages, filters, single and batch reads, absolute stock updates."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from simulator.refurbed import RefurbedSimulatorState
from simulator.refurbed.store import OFFER_ID_BASE, OFFER_ID_STRIDE
from tests.simulator.refurbed.conftest import OFFERS


async def list_offers(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post(f"{OFFERS}/ListOffers", json=body)


async def test_paging_to_the_end_takes_ceil_n_over_100_calls_and_sees_every_offer_once(
    client: httpx.AsyncClient, state: RefurbedSimulatorState
) -> None:
    seen: list[str] = []
    cursor: str | None = None
    calls = 0
    while True:
        pagination: dict[str, Any] = {"limit": 100}
        if cursor is not None:
            pagination["starting_after"] = cursor
        page = (await list_offers(client, pagination=pagination)).json()
        calls += 1
        seen += [offer["id"] for offer in page["offers"]]
        if not page["has_more"]:
            break
        cursor = page["offers"][-1]["id"]

    assert calls == math.ceil(250 / 100) == 3
    assert len(seen) == len(set(seen)) == 250
    assert [int(i) for i in seen] == sorted(int(i) for i in seen)
    assert state.stats()["by_method"] == {"OfferService/ListOffers": 3}


async def test_a_catalogue_of_exactly_a_page_ends_with_has_more_false(
    client: httpx.AsyncClient,
) -> None:
    first = (await list_offers(client, pagination={"limit": 50})).json()
    last_cursor = str(OFFER_ID_BASE + OFFER_ID_STRIDE * 199)
    final = (await list_offers(client, pagination={"starting_after": last_cursor})).json()

    assert (len(first["offers"]), first["has_more"]) == (50, True)
    assert (len(final["offers"]), final["has_more"]) == (50, False)


async def test_default_limit_is_100_and_ids_are_int64_strings(client: httpx.AsyncClient) -> None:
    page = (await list_offers(client)).json()

    assert len(page["offers"]) == 100
    assert page["offers"][0]["id"] == str(OFFER_ID_BASE)
    assert isinstance(page["offers"][0]["stock"], int)


@pytest.mark.parametrize("limit", [0, 101, -1, "many"])
async def test_a_limit_outside_1_to_100_is_invalid_argument(
    client: httpx.AsyncClient, limit: object
) -> None:
    response = await list_offers(client, pagination={"limit": limit})

    assert response.status_code == 400
    assert response.json()["code"] == 3
    assert set(response.json()) == {"code", "message", "details"}


async def test_both_cursors_at_once_are_invalid_argument(client: httpx.AsyncClient) -> None:
    response = await list_offers(
        client, pagination={"starting_after": "70000013", "ending_before": "70000130"}
    )

    assert (response.status_code, response.json()["code"]) == (400, 3)


async def test_ending_before_gives_the_page_just_before_the_cursor(
    client: httpx.AsyncClient,
) -> None:
    cursor = OFFER_ID_BASE + OFFER_ID_STRIDE * 10
    page = (await list_offers(client, pagination={"limit": 3, "ending_before": str(cursor)})).json()

    assert [int(o["id"]) for o in page["offers"]] == [
        OFFER_ID_BASE + OFFER_ID_STRIDE * i for i in (7, 8, 9)
    ]
    assert page["has_more"] is True


async def test_descending_order_pages_from_the_highest_id(client: httpx.AsyncClient) -> None:
    first = (
        await list_offers(client, pagination={"limit": 2}, sort={"by": "ID", "order": "DESC"})
    ).json()
    second = (
        await list_offers(
            client,
            pagination={"limit": 2, "starting_after": first["offers"][-1]["id"]},
            sort={"order": "DESC"},
        )
    ).json()

    ids = [int(o["id"]) for o in first["offers"] + second["offers"]]
    assert ids == [OFFER_ID_BASE + OFFER_ID_STRIDE * i for i in (249, 248, 247, 246)]


async def test_sorting_by_anything_but_id_is_refused_as_unimplemented(
    client: httpx.AsyncClient,
) -> None:
    response = await list_offers(client, sort={"by": "STOCK"})

    assert (response.status_code, response.json()["code"]) == (501, 12)


async def test_sku_filter_any_of_none_of_and_contains(client: httpx.AsyncClient) -> None:
    any_of = (
        await list_offers(client, filter={"sku": {"any_of": ["SKU-0000003", "SKU-0000001", "x"]}})
    ).json()
    contains = (await list_offers(client, filter={"sku": {"contains": "SKU-000024"}})).json()
    none_of = (
        await list_offers(
            client,
            pagination={"limit": 3},
            filter={"sku": {"none_of": ["SKU-0000001", "SKU-0000002"]}},
        )
    ).json()

    assert [o["sku"] for o in any_of["offers"]] == ["SKU-0000001", "SKU-0000003"]
    assert [o["sku"] for o in contains["offers"]] == [f"SKU-000024{d}" for d in range(10)]
    assert [o["sku"] for o in none_of["offers"]] == ["SKU-0000003", "SKU-0000004", "SKU-0000005"]


async def test_id_filter_takes_int64_strings_and_numbers(client: httpx.AsyncClient) -> None:
    wanted = [OFFER_ID_BASE + OFFER_ID_STRIDE * 5, OFFER_ID_BASE]
    page = (
        await list_offers(client, filter={"id": {"any_of": [str(wanted[0]), wanted[1]]}})
    ).json()

    assert [int(o["id"]) for o in page["offers"]] == sorted(wanted)
    assert page["has_more"] is False


async def test_stock_range_and_state_filters(
    client: httpx.AsyncClient, state: RefurbedSimulatorState
) -> None:
    for offer in ("SKU-0000001", "SKU-0000002", "SKU-0000003"):
        state.set_stock(offer, 1000)
    state.set_stock("SKU-0000002", 1001)

    ranged = (await list_offers(client, filter={"stock": {"ge": 1000, "lt": 1001}})).json()
    rejected = (await list_offers(client, filter={"state": {"any_of": ["REJECTED"]}})).json()

    assert [o["sku"] for o in ranged["offers"]] == ["SKU-0000001", "SKU-0000003"]
    assert rejected == {"offers": [], "has_more": False}


async def test_a_filter_the_simulator_does_not_implement_is_refused(
    client: httpx.AsyncClient,
) -> None:
    response = await list_offers(client, filter={"grading": {"any_of": ["A"]}})

    assert (response.status_code, response.json()["code"]) == (501, 12)
    assert "grading" in response.json()["message"]


async def test_get_offer_by_id_or_sku_and_not_found(client: httpx.AsyncClient) -> None:
    by_sku = await client.post(f"{OFFERS}/GetOffer", json={"identifier": {"sku": "SKU-0000002"}})
    by_id = await client.post(
        f"{OFFERS}/GetOffer", json={"identifier": {"id": by_sku.json()["offer"]["id"]}}
    )
    missing = await client.post(f"{OFFERS}/GetOffer", json={"identifier": {"sku": "sku-0000002"}})

    assert by_sku.status_code == by_id.status_code == 200
    assert by_id.json() == by_sku.json()
    assert (missing.status_code, missing.json()["code"]) == (404, 5)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"identifier": {}},
        {"identifier": {"id": "70000000", "sku": "SKU-0000001"}},
        {"identifier": {"id": "seventy"}},
        {"identifier": "SKU-0000001"},
    ],
)
async def test_a_missing_or_double_identifier_is_invalid_argument(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await client.post(f"{OFFERS}/GetOffer", json=body)

    assert (response.status_code, response.json()["code"]) == (400, 3)


async def test_batch_get_answers_each_entry_in_request_order(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{OFFERS}/BatchGetOffers",
        json={
            "offers": [
                {"identifier": {"sku": "SKU-0000009"}},
                {"identifier": {"sku": "GONE"}},
                {"identifier": {"id": str(OFFER_ID_BASE)}},
            ]
        },
    )

    results = response.json()["results"]
    assert response.status_code == 200
    assert [r["status"]["code"] for r in results] == [0, 5, 0]
    assert results[0]["offer"]["sku"] == "SKU-0000009"
    assert "offer" not in results[1]
    assert results[2]["offer"]["sku"] == "SKU-0000001"


@pytest.mark.parametrize("entries", [0, 51])
async def test_a_batch_of_0_or_more_than_50_is_invalid_argument(
    client: httpx.AsyncClient, entries: int
) -> None:
    offers = [{"identifier": {"sku": "SKU-0000001"}} for _ in range(entries)]
    got = await client.post(f"{OFFERS}/BatchGetOffers", json={"offers": offers})
    updated = await client.post(
        f"{OFFERS}/BatchUpdateOffers", json={"offers": [{**o, "stock": 1} for o in offers]}
    )

    assert (got.status_code, got.json()["code"]) == (400, 3)
    assert (updated.status_code, updated.json()["code"]) == (400, 3)


async def test_update_offer_sets_stock_absolutely_and_answers_the_offer(
    client: httpx.AsyncClient, state: RefurbedSimulatorState
) -> None:
    state.set_stock("SKU-0000004", 9)

    response = await client.post(
        f"{OFFERS}/UpdateOffer", json={"identifier": {"sku": "SKU-0000004"}, "stock": 2}
    )

    assert response.status_code == 200
    assert response.json()["offer"]["sku"] == "SKU-0000004"
    assert response.json()["offer"]["stock"] == 2
    assert state.stock_of("SKU-0000004") == 2
    assert state.stats()["updates"][0] | {"at": None} == {
        "rpc": "OfferService/UpdateOffer",
        "identifier": {"sku": "SKU-0000004"},
        "stock": 2,
        "code": 0,
        "at": None,
    }


@pytest.mark.parametrize("stock", [-1, "two", 2**32, 1.5])
async def test_update_with_a_stock_that_is_no_uint32_is_invalid_and_changes_nothing(
    client: httpx.AsyncClient, state: RefurbedSimulatorState, stock: object
) -> None:
    state.set_stock("SKU-0000004", 9)

    response = await client.post(
        f"{OFFERS}/UpdateOffer", json={"identifier": {"sku": "SKU-0000004"}, "stock": stock}
    )

    assert (response.status_code, response.json()["code"]) == (400, 3)
    assert state.stock_of("SKU-0000004") == 9


async def test_update_of_an_unknown_offer_is_not_found(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{OFFERS}/UpdateOffer", json={"identifier": {"id": "1"}, "stock": 2}
    )

    assert (response.status_code, response.json()["code"]) == (404, 5)


async def test_batch_update_is_applied_entry_by_entry_with_results_in_request_order(
    client: httpx.AsyncClient, state: RefurbedSimulatorState
) -> None:
    response = await client.post(
        f"{OFFERS}/BatchUpdateOffers",
        json={
            "offers": [
                {"identifier": {"sku": "SKU-0000001"}, "stock": 7},
                {"identifier": {"sku": "NOT-THERE"}, "stock": 3},
                {"identifier": {"id": str(OFFER_ID_BASE + OFFER_ID_STRIDE)}, "stock": "0"},
                {"identifier": {"sku": "SKU-0000003"}, "stock": -4},
            ]
        },
    )

    results = response.json()["results"]
    assert response.status_code == 200
    assert [r["status"]["code"] for r in results] == [0, 5, 0, 3]
    assert [r.get("offer", {}).get("stock") for r in results] == [7, None, 0, None]
    assert (state.stock_of("SKU-0000001"), state.stock_of("SKU-0000002")) == (7, 0)
    assert [u["code"] for u in state.stats()["updates"]] == [0, 5, 0, 3]


async def test_updating_fields_other_than_stock_is_refused_as_unimplemented(
    client: httpx.AsyncClient, state: RefurbedSimulatorState
) -> None:
    before = state.stock_of("SKU-0000001")
    response = await client.post(
        f"{OFFERS}/UpdateOffer",
        json={"identifier": {"sku": "SKU-0000001"}, "stock": 5, "reference_price": "10.00"},
    )

    assert (response.status_code, response.json()["code"]) == (501, 12)
    assert state.stock_of("SKU-0000001") == before


async def test_unknown_rpc_and_wrong_http_method_answer_status_bodies(
    client: httpx.AsyncClient,
) -> None:
    unknown = await client.post(f"{OFFERS}/DeleteEverything", json={})
    wrong_method = await client.get(f"{OFFERS}/ListOffers")
    not_json = await client.post(f"{OFFERS}/ListOffers", content=b"{oops")

    assert (unknown.status_code, unknown.json()["code"]) == (404, 5)
    assert (wrong_method.status_code, wrong_method.json()["code"]) == (405, 12)
    assert (not_json.status_code, not_json.json()["code"]) == (400, 3)
