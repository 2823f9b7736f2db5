"""The simulator's answers validate against Back Market's own OpenAPI document.

Validated with openapi-core (request matched to the spec's operation, response
checked against the documented status and schema).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from simulator import SimulatorState

# CI checks the repository out beside a copy of shared/.
SPEC_PATH = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "backmarket" / "backmarket-openapi.yml"
)

pytestmark = pytest.mark.skipif(
    not SPEC_PATH.exists(), reason=f"Back Market OpenAPI file not found at {SPEC_PATH}"
)


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    return OpenAPI.from_file_path(str(SPEC_PATH))


def assert_conforms(openapi: OpenAPI, response: httpx.Response) -> None:
    request = response.request
    openapi.validate_response(
        MockRequest(
            # The spec's own server; the simulator's host is not in its servers list.
            host_url="https://www.backmarket.fr",
            method=request.method,
            path=request.url.path,
            args=dict(request.url.params),
            headers=dict(request.headers),
            data=request.content,
        ),
        MockResponse(
            data=response.content,
            status_code=response.status_code,
            headers=dict(response.headers),
            content_type=response.headers["content-type"].split(";")[0],
        ),
    )


async def test_listing_page_conforms(openapi: OpenAPI, client: httpx.AsyncClient) -> None:
    for market in ("fr-fr", "en-gb", "sv-se"):
        response = await client.get(
            "/ws/listings", params={"page-size": 50}, headers={"Accept-Language": market}
        )
        assert_conforms(openapi, response)


async def test_single_listing_conforms_by_uuid_int_and_detail(
    openapi: OpenAPI, client: httpx.AsyncClient, state: SimulatorState
) -> None:
    listing = state.listing("SKU-0000009")

    for url in (
        f"/ws/listings/{listing['id']}",
        f"/ws/listings/{listing['listing_id']}",
        "/ws/listings/detail?sku=SKU-0000009",
    ):
        response = await client.get(url)
        assert response.status_code == 200
        assert_conforms(openapi, response)


async def test_update_response_conforms(openapi: OpenAPI, client: httpx.AsyncClient) -> None:
    response = await client.post("/ws/listings/100000", json={"quantity": "3", "price": 120})

    assert response.status_code == 200
    assert_conforms(openapi, response)


async def test_error_responses_conform(
    openapi: OpenAPI, client: httpx.AsyncClient, state: SimulatorState
) -> None:
    unknown = await client.get("/ws/listings/7a97a1b6-547e-4718-bc72-5b84aca91b09")
    bad_quantity = await client.post("/ws/listings/100000", json={"quantity": -2})
    state.fail_next("/ws/listings/", kind="429", method="POST")
    limited = await client.post("/ws/listings/100000", json={"quantity": 2})
    del client.headers["Authorization"]
    unauthenticated = await client.get("/ws/listings")

    statuses = []
    for response in (unknown, bad_quantity, limited, unauthenticated):
        statuses.append(response.status_code)
        assert_conforms(openapi, response)
    assert statuses == [404, 400, 429, 401]


async def test_orders_pages_conform(
    openapi: OpenAPI, client: httpx.AsyncClient, state: SimulatorState
) -> None:
    for ref in ("SKU-0000001", "SKU-0000002", "SKU-0000003"):
        state.set_quantity(ref, 5)
    state.place_order("SKU-0000001", 2)
    state.place_order("SKU-0000003", market="en-gb")
    basket = state.place_basket([("SKU-0000001", 1), ("SKU-0000002", 3)])
    state.cancel_line(basket.order_id, basket.line_ids[1], 5)
    state.pay_order(state.place_order("SKU-0000002", hidden=True).order_id)
    state.fail_payment(state.place_order("SKU-0000002", hidden=True).order_id)
    state.place_order("SKU-0000003", hidden=True)

    full = await client.get("/ws/orders", params={"page-size": 50})
    paged = await client.get("/ws/orders", params={"page-size": 2, "page": 2, "state": 1})
    filtered = await client.get(
        "/ws/orders",
        params={"date_modification": "2024-05-01T12:00:00Z", "date_creation": "2024-05-01"},
    )
    empty = await client.get("/ws/orders", params={"date_creation": "2030-01-01T00:00:00Z"})

    for response in (full, paged, filtered, empty):
        assert response.status_code == 200
        assert_conforms(openapi, response)
    assert full.json()["count"] == 4


async def test_orders_errors_conform(openapi: OpenAPI, client: httpx.AsyncClient) -> None:
    bad_state = await client.get("/ws/orders", params={"state": 2})
    bad_date = await client.get("/ws/orders", params={"date_creation": "soon"})
    beyond = await client.get("/ws/orders", params={"page": 3})

    for response in (bad_state, bad_date, beyond):
        assert_conforms(openapi, response)
    assert [r.status_code for r in (bad_state, bad_date, beyond)] == [400, 400, 404]


async def test_validator_rejects_an_order_off_the_spec(
    openapi: OpenAPI, client: httpx.AsyncClient, state: SimulatorState
) -> None:
    state.set_quantity("SKU-0000001", 1)
    state.place_order("SKU-0000001")
    real = await client.get("/ws/orders")
    page = real.json()
    page["results"][0]["orderlines"][0]["listing_id"] = "100000"
    forged = httpx.Response(200, json=page, request=real.request)

    with pytest.raises(Exception, match="is not of type 'integer'"):
        assert_conforms(openapi, forged)


async def test_validator_rejects_an_answer_off_the_spec(
    openapi: OpenAPI, client: httpx.AsyncClient
) -> None:
    real = await client.get("/ws/listings/100000")
    numeric_price = {**real.json(), "price": 250.34}
    forged = httpx.Response(200, json=numeric_price, request=real.request)

    with pytest.raises(Exception, match="is not of type 'string'"):
        assert_conforms(openapi, forged)
