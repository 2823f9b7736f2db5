"""The Refurbed simulator's answers validate against the published Swagger 2.0 document.

Each body is checked with jsonschema (draft 4, which Swagger 2.0 schemas follow) against
the definition the document names for that path and status: the 200 schema, or
`Status` for any error. Stricter than the document on two points, so the simulator
cannot drift: an object may carry only the properties its definition lists, and
``format: int64`` / ``int32`` / ``date-time`` are checked. ``x-nullable`` allows null.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from simulator.refurbed import RefurbedSimulatorState, create_refurbed_simulator_app
from tests.simulator.conftest import FakeWallClock
from tests.simulator.refurbed.conftest import OFFERS, ORDERS, client_for, make_config

# CI checks the repository out beside a copy of shared/.
SPEC_PATH = (
    Path(__file__).resolve().parents[3]
    / ".."
    / "shared"
    / "refurbed"
    / "refurbed-merchant-openapi.json"
)

pytestmark = pytest.mark.skipif(
    not SPEC_PATH.exists(), reason=f"Refurbed Swagger document not found at {SPEC_PATH}"
)

_INT64 = re.compile(r"-?\d+")


def _strict(schema: Any) -> Any:
    """The document's schema with x-nullable honoured and no undeclared properties."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: _strict(value) for key, value in schema.items() if not key.startswith("x-")}
    if "properties" in schema and "additionalProperties" not in schema:
        converted["additionalProperties"] = False
    if schema.get("x-nullable"):
        return {"anyOf": [{"type": "null"}, converted]}
    return converted


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker(formats=())

    @checker.checks("int64")
    def is_int64(value: object) -> bool:
        if isinstance(value, str):
            return _INT64.fullmatch(value) is not None and -(2**63) <= int(value) < 2**63
        return isinstance(value, int)

    @checker.checks("int32")
    def is_int32(value: object) -> bool:
        return not isinstance(value, int) or -(2**31) <= value < 2**31

    @checker.checks("date-time")
    def is_date_time(value: object) -> bool:
        if not isinstance(value, str):
            return True
        if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value):
            return False
        datetime.fromisoformat(value.replace("Z", "+00:00"))
        return True

    return checker


class Conformance:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.definitions = _strict(document["definitions"])
        self.checker = _format_checker()

    def definition_for(self, path: str, status: int) -> str:
        responses = self.document["paths"][path]["post"]["responses"]
        answer = responses.get(str(status), responses["default"])
        ref: str = answer["schema"]["$ref"]
        return ref.rsplit("/", 1)[-1]

    def check(self, response: httpx.Response) -> str:
        """Validate one answer; the definition it was checked against."""
        name = self.definition_for(response.request.url.path, response.status_code)
        schema = {"definitions": self.definitions, "$ref": f"#/definitions/{name}"}
        jsonschema.Draft4Validator(schema, format_checker=self.checker).validate(response.json())
        return name


@pytest.fixture(scope="module")
def conformance() -> Conformance:
    return Conformance(json.loads(SPEC_PATH.read_text()))


async def test_offer_answers_conform(
    conformance: Conformance, client: httpx.AsyncClient, state: RefurbedSimulatorState
) -> None:
    state.add_offer(sku="", stock=0, state="PENDING_REVIEW")
    answers = [
        await client.post(f"{OFFERS}/ListOffers", json={}),
        await client.post(
            f"{OFFERS}/ListOffers",
            json={
                "pagination": {"limit": 5, "starting_after": "70000013"},
                "sort": {"order": "DESC"},
            },
        ),
        await client.post(f"{OFFERS}/ListOffers", json={"filter": {"sku": {"any_of": ["x"]}}}),
        await client.post(f"{OFFERS}/GetOffer", json={"identifier": {"sku": "SKU-0000007"}}),
        await client.post(
            f"{OFFERS}/BatchGetOffers",
            json={"offers": [{"identifier": {"sku": "SKU-0000001"}}, {"identifier": {"id": "5"}}]},
        ),
        await client.post(
            f"{OFFERS}/UpdateOffer", json={"identifier": {"id": "70000000"}, "stock": 3}
        ),
        await client.post(
            f"{OFFERS}/BatchUpdateOffers",
            json={
                "offers": [
                    {"identifier": {"sku": "SKU-0000002"}, "stock": 1},
                    {"identifier": {"sku": "GONE"}, "stock": 1},
                    {"identifier": {}, "stock": 1},
                ]
            },
        ),
    ]

    checked = [conformance.check(response) for response in answers]
    assert all(r.status_code == 200 for r in answers)
    assert checked == [
        "ListOffersResponse",
        "ListOffersResponse",
        "ListOffersResponse",
        "GetOfferResponse",
        "BatchGetOffersResponse",
        "UpdateOfferResponse",
        "BatchUpdateOffersResponse",
    ]


async def test_order_pages_conform(
    conformance: Conformance,
    client: httpx.AsyncClient,
    state: RefurbedSimulatorState,
    wall_clock: FakeWallClock,
) -> None:
    state.set_stock("SKU-0000001", 10)
    state.set_stock("SKU-0000002", 10)
    state.place_order([("SKU-0000001", 1)])
    wall_clock.advance(0.125)
    mixed = state.place_order([("SKU-0000001", 1), ("SKU-0000002", 2)])
    order_id, items = int(mixed["id"]), [int(i["id"]) for i in mixed["items"]]
    state.set_item_state(order_id, items[0], "ACCEPTED")
    state.set_item_state(order_id, items[0], "SHIPPED")
    state.set_item_state(order_id, items[1], "REJECTED", restock=True)

    answers = [
        await client.post(f"{ORDERS}/ListOrders", json={}),
        await client.post(
            f"{ORDERS}/ListOrders",
            json={
                "pagination": {"limit": 1},
                "filter": {"released_at": {"gt": "2024-05-01T12:00:00Z"}},
            },
        ),
        await client.post(
            f"{ORDERS}/ListOrders", json={"filter": {"released_at": {"lt": "2000-01-01T00:00:00Z"}}}
        ),
    ]

    assert [conformance.check(r) for r in answers] == ["ListOrdersResponse"] * 3
    assert [len(r.json()["orders"]) for r in answers] == [2, 1, 0]


async def test_error_answers_are_status_bodies(
    conformance: Conformance, client: httpx.AsyncClient, state: RefurbedSimulatorState
) -> None:
    state.fail_next(f"{OFFERS}/UpdateOffer", kind="500")
    state.fail_next(f"{ORDERS}/ListOrders", kind="503")
    state.fail_next(f"{OFFERS}/BatchGetOffers", kind="429")
    answers = [
        await client.post(f"{OFFERS}/GetOffer", json={"identifier": {"sku": "GONE"}}),
        await client.post(f"{OFFERS}/ListOffers", json={"pagination": {"limit": 500}}),
        await client.post(f"{OFFERS}/ListOffers", json={"sort": {"by": "NAME"}}),
        await client.post(f"{OFFERS}/UpdateOffer", json={"identifier": {"id": "1"}, "stock": 1}),
        await client.post(f"{ORDERS}/ListOrders", json={}),
        await client.post(f"{OFFERS}/BatchGetOffers", json={"offers": []}),
        await client.post(f"{OFFERS}/GetOffer", json={}, headers={"Authorization": "Bearer x"}),
    ]

    assert [conformance.check(r) for r in answers] == ["Status"] * len(answers)
    assert [r.status_code for r in answers] == [404, 400, 501, 500, 503, 429, 401]


async def test_rate_limit_and_timeout_answers_are_status_bodies(
    conformance: Conformance, wall_clock: FakeWallClock
) -> None:
    app = create_refurbed_simulator_app(
        make_config(requests_per_window=1, timeout_fault_s=0), wall_clock=wall_clock
    )
    app.state.sim.fail_next(f"{OFFERS}/GetOffer", kind="timeout")
    async with client_for(app) as http:
        timed_out = await http.post(f"{OFFERS}/GetOffer", json={})
        limited = await http.post(f"{OFFERS}/ListOffers", json={})

    assert [conformance.check(r) for r in (timed_out, limited)] == ["Status", "Status"]
    assert (timed_out.status_code, limited.status_code) == (504, 429)


async def test_the_wrong_shape_fault_fails_validation(
    conformance: Conformance, client: httpx.AsyncClient, state: RefurbedSimulatorState
) -> None:
    state.fail_next(kind="wrong_shape", count=2)
    for path in (f"{OFFERS}/ListOffers", f"{ORDERS}/ListOrders"):
        response = await client.post(path, json={})

        assert response.status_code == 200
        with pytest.raises(jsonschema.ValidationError):
            conformance.check(response)


@pytest.mark.parametrize(
    ("field", "value", "complaint"),
    [
        ("id", 70000000, "is not of type 'string'"),
        ("id", "70-000", "is not a 'int64'"),
        ("stock", "3", "is not of type 'integer'"),
        ("state", "LIVE", "is not one of"),
        ("quantity", 3, "Additional properties"),
        ("created_at", "2023-01-02 09:00:00", "is not a 'date-time'"),
    ],
)
async def test_the_validator_rejects_an_offer_off_the_document(
    conformance: Conformance, client: httpx.AsyncClient, field: str, value: object, complaint: str
) -> None:
    real = await client.post(f"{OFFERS}/GetOffer", json={"identifier": {"sku": "SKU-0000001"}})
    forged_body = {"offer": {**real.json()["offer"], field: value}}
    forged = httpx.Response(200, json=forged_body, request=real.request)

    with pytest.raises(jsonschema.ValidationError, match=re.escape(complaint)):
        conformance.check(forged)
