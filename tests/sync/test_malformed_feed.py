"""Malformed Back Market answers end to end: the service against the simulator, with the
simulator's answers tampered with on their way back where the simulator cannot produce them."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from tests.conftest import ServiceHarness, running_harness
from tests.quantity.support import add_linked_listing
from tests.sync.support import add_stock, add_variation, link, stock_row, sync

pytestmark = pytest.mark.watcher_off(
    "counts the simulator's requests; a scheduled orders read would be one more"
)

PageRewrite = Callable[[int, dict[str, Any]], dict[str, Any]]
UpdateAnswer = Callable[[httpx.Request], httpx.Response | None]


class Tampering(httpx.AsyncBaseTransport):
    """The simulator, with listing pages rewritten and updates answered before it sees them."""

    def __init__(self, simulator_app: FastAPI) -> None:
        self.inner = httpx.ASGITransport(app=simulator_app)
        self.rewrite_page: PageRewrite | None = None
        self.answer_update: UpdateAnswer | None = None
        self.updates_answered = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        is_update = request.method == "POST" and request.url.path.startswith("/ws/listings/")
        if is_update and self.answer_update is not None:
            answered = self.answer_update(request)
            if answered is not None:
                self.updates_answered += 1
                return answered
        response = await self.inner.handle_async_request(request)
        is_page = request.method == "GET" and request.url.path == "/ws/listings"
        if not (is_page and self.rewrite_page is not None and response.status_code == 200):
            return response
        body = json.loads(await response.aread())
        page = int(request.url.params.get("page", "1"))
        return httpx.Response(200, json=self.rewrite_page(page, body))


@pytest.fixture
def tampering(simulator_app: FastAPI) -> Tampering:
    return Tampering(simulator_app)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # One page at a time, so a rewrite of page 3 can rely on page 2 having been read.
    return {
        "backmarket_requests_per_10s": 10_000,
        "backmarket_max_attempts": 2,
        "backmarket_page_concurrency": 1,
    }


@pytest.fixture
async def service(
    engine: AsyncEngine,
    make_settings: Callable[..., Settings],
    settings_overrides: dict[str, Any],
    simulator_app: FastAPI,
    tampering: Tampering,
) -> AsyncIterator[ServiceHarness]:
    """As tests/conftest.py's `service`, with `tampering` between the client and the simulator."""
    async with running_harness(
        make_settings(**settings_overrides), tampering, simulator_app
    ) as harness:
        yield harness


def live_quantity(service: Any, index: int) -> int:
    quantity: int = service.simulator.store.render(index, "fr-fr")["quantity"]
    return quantity


# -- a 200 with an error body -----------------------------------------------------------------


async def test_the_simulator_error200_fault_answers_an_error_body_with_status_200(
    simulator_app: FastAPI, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    simulator_app.state.sim.fail_next("/ws/listings", kind="error200", page=1)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=simulator_app), base_url="http://bm.test"
    ) as raw:
        response = await raw.get(
            "/ws/listings",
            params={"page": 1},
            headers={
                "Authorization": "Basic sim-token",
                "User-Agent": settings.backmarket_user_agent,
            },
        )

    assert response.status_code == 200
    assert response.json()["error"]["code"] == "E008"
    assert "requestId" in response.json()


async def test_a_page_answering_200_with_an_error_body_once_is_retried_and_the_run_completes(
    service: Any,
) -> None:
    simulator = service.simulator
    on_page_2 = await link(service.engine, simulator, 60, listed_stock=999)
    simulator.fail_next("/ws/listings", count=1, kind="error200", page=2)

    run = await sync(service)

    assert run["status"] == "completed", run["errors"]
    assert run["errors"] == []
    assert run["listings_seen"] == 120
    assert run["api_calls"] == simulator.stats()["total_requests"] == 4
    assert simulator.stats()["faults"] == {"error200": 1}
    row = await stock_row(service.engine, on_page_2.variation_id)
    assert row["listed_stock"] == live_quantity(service, 60)


async def test_a_page_answering_200_with_an_error_body_on_every_attempt_makes_the_run_partial(
    service: Any,
) -> None:
    simulator = service.simulator
    on_page_2 = await link(service.engine, simulator, 60, listed_stock=999)
    simulator.fail_next("/ws/listings", count=2, kind="error200", page=2)

    run = await sync(service)

    assert run["status"] == "partial"
    [failure] = run["errors"]
    assert (failure["kind"], failure["page"], failure["error"]) == ("page_failed", 2, "BadResponse")
    assert "E008" in failure["message"]
    assert (await stock_row(service.engine, on_page_2.variation_id))["listed_stock"] == 999


# -- unusable and repeated listings -------------------------------------------------------------


async def test_an_unusable_listing_is_left_out_the_rest_applied_and_the_run_partial(
    service: Any, tampering: Tampering
) -> None:
    simulator = service.simulator
    unusable = await link(service.engine, simulator, 60, listed_stock=999)
    beside_it = await link(service.engine, simulator, 61, listed_stock=999)
    gone = await add_variation(service.engine, reference_uuid=str(uuid.uuid4()))
    await add_stock(service.engine, variation_id=gone, listed_stock=5)

    def negative_quantity(page: int, body: dict[str, Any]) -> dict[str, Any]:
        if page == 2:
            body["results"][10]["quantity"] = -3
        return body

    tampering.rewrite_page = negative_quantity

    run = await sync(service)

    assert run["status"] == "partial"
    assert run["markets"]["fr-fr"]["status"] == "partial"
    [entry] = [e for e in run["errors"] if e["kind"] == "unusable_listing"]
    assert (entry["market"], entry["page"]) == ("fr-fr", 2)
    assert unusable.listing_uuid in entry["message"]
    assert "-3" in entry["message"]
    assert run["listings_seen"] == 119
    # Page 2 was read once: the answer was fine, one listing in it was not.
    assert run["api_calls"] == 3
    assert (await stock_row(service.engine, unusable.variation_id))["listed_stock"] == 999
    beside = await stock_row(service.engine, beside_it.variation_id)
    assert beside["listed_stock"] == live_quantity(service, 61)
    # An incomplete feed proves nothing about absent listings.
    assert run["not_found"] == 0
    assert (await stock_row(service.engine, gone))["listed_stock"] == 5


async def test_a_listing_on_two_pages_is_applied_once_as_first_read_and_recorded(
    service: Any, tampering: Tampering
) -> None:
    simulator = service.simulator
    repeated = await link(service.engine, simulator, 49, listed_stock=999)
    pushed_on = await link(service.engine, simulator, 50, listed_stock=999)
    kept: dict[int, dict[str, Any]] = {}

    def shift_by_one(page: int, body: dict[str, Any]) -> dict[str, Any]:
        # As if the catalogue moved by one between pages: page 2 starts with page 1's last
        # listing (with another quantity), and its own first listing slides to page 3.
        results = body["results"]
        if page == 1:
            kept[49] = dict(results[49])
        elif page == 2:
            kept[50] = results[0]
            results[0] = {**kept[49], "quantity": kept[49]["quantity"] + 40}
        elif page == 3:
            results.insert(0, kept[50])
        return body

    tampering.rewrite_page = shift_by_one

    run = await sync(service)

    assert run["status"] == "completed", run["errors"]
    assert run["listings_seen"] == 120
    assert run["markets"]["fr-fr"]["repeated_listings"] == 1
    [entry] = [e for e in run["errors"] if e["kind"] == "repeated_listing"]
    assert (entry["page"], entry["listings"]) == (2, [repeated.listing_uuid])
    row = await stock_row(service.engine, repeated.variation_id)
    assert row["listed_stock"] == kept[49]["quantity"]
    assert (await stock_row(service.engine, pushed_on.variation_id))["listed_stock"] == (
        kept[50]["quantity"]
    )


# -- 202 on update ------------------------------------------------------------------------------


async def test_add_quantity_after_an_unconfirmed_202_is_outcome_unknown_and_a_keyed_retry_settles(
    service: Any, tampering: Tampering
) -> None:
    listing = await add_linked_listing(service, variation_id=301, quantity=5)
    # Back Market accepts the update and applies it later: the read-back still shows 5.
    tampering.answer_update = lambda request: httpx.Response(202)
    path = f"/variations/{listing.variation_id}/add-quantity"
    headers = {"Idempotency-Key": "malformed-202-1"}

    first = await service.http.post(path, json={"quantity": 3}, headers=headers)

    assert first.status_code == 504, first.text
    assert "may or may not have been applied" in first.json()["detail"]
    assert tampering.updates_answered == 1
    # Nothing is recorded as applied: neither 8 nor the unconfirmed 5 of the read-back.
    assert await stock_row(service.engine, listing.variation_id) is None

    # Back Market applies it; the retry with the same key finds 8 and sends nothing more.
    service.simulator.set_quantity(listing.id, 8)
    tampering.answer_update = None
    retry = await service.http.post(path, json={"quantity": 3}, headers=headers)

    assert retry.status_code == 200, retry.text
    assert retry.json()["quantity"] == 8
    assert tampering.updates_answered == 1
    sent_to_simulator = service.simulator.stats()["by_endpoint"]
    assert not [key for key in sent_to_simulator if key.startswith("POST ")]
    assert (await stock_row(service.engine, listing.variation_id))["listed_stock"] == 8
