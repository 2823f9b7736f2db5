"""Unit tests of the Back Market client against respx routes; time is faked, nothing sleeps."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from itertools import pairwise
from typing import Any

import httpx
import pytest
import respx
from prometheus_client import REGISTRY
from pydantic import SecretStr

from app.config import Settings
from app.services.backmarket import (
    BackMarketClient,
    BackMarketError,
    BackMarketUnavailable,
    BadResponse,
    IncompleteFeed,
    Listing,
    ListingNotFound,
    ListingPage,
    OutcomeUnknown,
    RateLimited,
    Unauthorized,
    listing_from_api,
)

BASE = "https://bm.test"
TOKEN = "tok-S3CRET-9f8e7d6c5b4a"
USER_AGENT = "BM-Tests-StockSync;tests@example.com"
LISTING_PATH = r"^/ws/listings/(?P<ref>[^/]+)$"


def listing_json(number: int, *, quantity: int = 5) -> dict[str, Any]:
    return {
        "id": f"00000000-0000-4000-8000-{number:012d}",
        "listing_id": number,
        "product_id": "6d4ad966-db97-4d88-b409-b28cc2a0f8c9",
        "sku": f"SKU-{number}",
        "title": "iPhone",
        "quantity": quantity,
        "price": "100.00",
        "currency": "EUR",
        "publication_state": 2,
        "statuscode": 200,
    }


def client_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "backmarket_base_url": BASE,
        "backmarket_token": SecretStr(TOKEN),
        "backmarket_user_agent": USER_AGENT,
        "backmarket_markets": ["fr-fr", "de-de"],
        "backmarket_requests_per_10s": 10_000,
        "backmarket_max_attempts": 3,
        "backmarket_page_concurrency": 4,
    }
    values.update(overrides)
    return Settings(**values)


class FakeTime:
    """A monotonic clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class FakeCatalogue:
    """GET /ws/listings like Back Market's paginator, with scripted faults per page."""

    def __init__(self, total: int, *, cap: int = 50) -> None:
        self.listings = [listing_json(number) for number in range(total)]
        self.cap = cap
        self.faults: dict[int, list[Callable[[httpx.Request], httpx.Response]]] = {}
        self.broken: dict[int, Callable[[httpx.Request], httpx.Response]] = {}
        self.short: dict[int, int] = {}
        self.next_override: dict[int, str | None] = {}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        page = int(request.url.params.get("page", "1"))
        if page in self.broken:
            return self.broken[page](request)
        if self.faults.get(page):
            return self.faults[page].pop(0)(request)
        size = min(int(request.url.params.get("page-size", "10")), self.cap)
        start = (page - 1) * size
        if start >= len(self.listings) and page > 1:
            return httpx.Response(404, json={"detail": "Invalid page."})
        results = self.listings[start : start + size]
        results = results[: len(results) - self.short.get(page, 0)]
        next_url: str | None = None
        if start + size < len(self.listings):
            next_url = f"{BASE}/ws/listings?page={page + 1}&page-size={size}"
        next_url = self.next_override.get(page, next_url)
        body = {"count": len(self.listings), "next": next_url, "previous": None, "results": results}
        return httpx.Response(200, json=body)


def answer(status: int, **kwargs: Any) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, **kwargs)


def bot_challenge() -> httpx.Response:
    return httpx.Response(403, json={"errors": [{"code": "bot-need-challenge", "message": "x"}]})


def html(status: int) -> httpx.Response:
    return httpx.Response(
        status,
        text="<!DOCTYPE html><html>Just a moment...</html>",
        headers={"content-type": "text/html"},
    )


async def read_feed(
    client: BackMarketClient, market: str = "fr-fr", **kwargs: Any
) -> tuple[list[ListingPage], BackMarketError | None]:
    pages: list[ListingPage] = []
    try:
        async for page in client.iter_listing_pages(market, **kwargs):
            pages.append(page)
    except BackMarketError as exc:
        return pages, exc
    return pages, None


# -- Listing ----------------------------------------------------------------------------------


def test_listing_from_api_coerces_integer_strings() -> None:
    body = {"id": "abc", "listing_id": "42", "quantity": "7", "sku": 123, "publication_state": "2"}

    listing = listing_from_api(body)

    assert listing == Listing(id="abc", listing_id=42, sku="123", quantity=7, state=2)


@pytest.mark.parametrize(
    "body",
    [
        {"quantity": 1},
        {"id": "", "quantity": 1},
        {"id": 12, "quantity": 1},
        {"id": "abc"},
        {"id": "abc", "quantity": None},
        {"id": "abc", "quantity": "many"},
        {"id": "abc", "quantity": True},
        {"id": "abc", "quantity": 1.5},
    ],
)
def test_listing_from_api_rejects_missing_or_unusable_id_or_quantity(body: dict[str, Any]) -> None:
    with pytest.raises(BadResponse):
        listing_from_api(body)


# -- headers ----------------------------------------------------------------------------------


async def test_every_request_carries_auth_user_agent_accept_content_type_and_market(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    router.get("/ws/listings").mock(side_effect=FakeCatalogue(3))
    router.get(path__regex=LISTING_PATH).mock(
        return_value=httpx.Response(200, json=listing_json(1))
    )
    router.post(path__regex=LISTING_PATH).mock(
        return_value=httpx.Response(200, json=listing_json(1))
    )
    client = make_client()

    await read_feed(client, "de-de")
    await client.get_listing("x", market="de-de")
    await client.update_listing("x", quantity=1, market="de-de")

    assert len(router.calls) == 3
    for call in router.calls:
        headers = call.request.headers
        assert headers["authorization"] == f"Basic {TOKEN}"
        assert headers["user-agent"] == USER_AGENT
        assert headers["accept"] == "application/json"
        assert headers["content-type"] == "application/json"
        assert headers["accept-language"] == "de-de"


async def test_accept_language_defaults_to_the_first_configured_market(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    route = router.get(path__regex=LISTING_PATH).mock(
        return_value=httpx.Response(200, json=listing_json(1))
    )

    await make_client(backmarket_markets=["it-it", "fr-fr"]).get_listing("x")

    assert route.calls.last.request.headers["accept-language"] == "it-it"


async def test_no_authorization_header_is_sent_when_no_token_is_configured(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    route = router.get(path__regex=LISTING_PATH).mock(return_value=httpx.Response(401, json={}))

    with pytest.raises(Unauthorized):
        await make_client(backmarket_token=None).get_listing("x")

    assert "authorization" not in route.calls.last.request.headers


# -- listing pages ----------------------------------------------------------------------------


async def test_listing_pages_are_requested_with_the_hyphenated_page_size_parameter(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    catalogue = FakeCatalogue(120)
    router.get("/ws/listings").mock(side_effect=catalogue)

    await read_feed(make_client())

    first = catalogue.requests[0].url.params
    assert (first["page"], first["page-size"]) == ("1", "50")
    assert "page_size" not in first


async def test_iter_listing_pages_yields_every_page_and_every_listing_once(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    router.get("/ws/listings").mock(side_effect=FakeCatalogue(120))

    pages, error = await read_feed(make_client())

    assert error is None
    assert sorted(page.page for page in pages) == [1, 2, 3]
    assert {page.pages_expected for page in pages} == {3}
    assert {page.count for page in pages} == {120}
    assert {page.market for page in pages} == {"fr-fr"}
    ids = [listing.id for page in pages for listing in page.listings]
    assert len(ids) == len(set(ids)) == 120


async def test_empty_catalogue_yields_one_empty_page_and_completes(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    router.get("/ws/listings").mock(side_effect=FakeCatalogue(0))

    pages, error = await read_feed(make_client())

    assert error is None
    assert [(page.page, page.listings, page.pages_expected) for page in pages] == [(1, [], 1)]


async def test_pages_expected_follows_the_page_size_the_server_actually_served(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    router.get("/ws/listings").mock(side_effect=FakeCatalogue(35, cap=10))

    pages, error = await read_feed(make_client())

    assert error is None
    assert sorted(page.page for page in pages) == [1, 2, 3, 4]
    assert {page.pages_expected for page in pages} == {4}


async def test_pages_after_the_first_are_fetched_concurrently_up_to_the_bound(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    catalogue = FakeCatalogue(500)
    in_flight = peak = 0

    async def slow_page(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        for _ in range(5):
            await asyncio.sleep(0)
        in_flight -= 1
        return catalogue(request)

    router.get("/ws/listings").mock(side_effect=slow_page)

    pages, error = await read_feed(make_client(), concurrency=3)

    assert error is None
    assert len(pages) == 10
    assert peak == 3


async def test_pages_are_yielded_as_they_arrive_not_in_page_order(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    catalogue = FakeCatalogue(150)

    async def page_two_is_slow(request: httpx.Request) -> httpx.Response:
        if request.url.params["page"] == "2":
            for _ in range(20):
                await asyncio.sleep(0)
        return catalogue(request)

    router.get("/ws/listings").mock(side_effect=page_two_is_slow)

    pages, error = await read_feed(make_client())

    assert error is None
    assert [page.page for page in pages] == [1, 3, 2]


async def test_last_page_with_a_next_link_is_followed_on_our_base_url_with_our_headers(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    catalogue = FakeCatalogue(100)

    def grow_after_page_one(request: httpx.Request) -> httpx.Response:
        # Page 1 counts 100 (2 pages); a 101st listing arrives before page 2 is read. (A `next`
        # naming another host is refused: tests/services/test_malformed_answers.py.)
        if request.url.params["page"] == "2":
            catalogue.listings.append(listing_json(100))
            catalogue.next_override[2] = "http://BM.test/ws/listings?page=3&page-size=50"
        return catalogue(request)

    router.get("/ws/listings").mock(side_effect=grow_after_page_one)

    pages, error = await read_feed(make_client())

    assert error is None
    assert sorted(page.page for page in pages) == [1, 2, 3]
    followed = catalogue.requests[-1]
    assert followed.url.host == "bm.test"
    assert followed.url.params["page"] == "3"
    assert followed.headers["authorization"] == f"Basic {TOKEN}"
    assert followed.headers["accept-language"] == "fr-fr"
    assert [page.pages_expected for page in pages if page.page == 3] == [3]


@pytest.mark.parametrize(
    "next_url",
    [f"{BASE}/ws/orders?page=2", f"{BASE}/ws/listings?page=1", f"{BASE}/ws/listings"],
)
async def test_a_next_link_that_leaves_the_listings_or_goes_back_is_not_followed(
    router: respx.Router, make_client: Callable[..., BackMarketClient], next_url: str
) -> None:
    catalogue = FakeCatalogue(50)
    catalogue.next_override[1] = next_url
    router.get("/ws/listings").mock(side_effect=catalogue)

    pages, error = await read_feed(make_client())

    assert [page.page for page in pages] == [1]
    assert len(catalogue.requests) == 1
    assert isinstance(error, IncompleteFeed)
    assert isinstance(error.failed_pages[2], BadResponse)


async def test_an_empty_followed_page_that_points_further_ends_the_feed_as_incomplete(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    catalogue = FakeCatalogue(50)
    catalogue.next_override[1] = f"{BASE}/ws/listings?page=2&page-size=50"
    endless = {"count": 50, "next": f"{BASE}/ws/listings?page=3", "previous": None, "results": []}
    catalogue.broken[2] = answer(200, json=endless)
    router.get("/ws/listings").mock(side_effect=catalogue)

    pages, error = await read_feed(make_client())

    assert [page.page for page in pages] == [1, 2]
    assert len(catalogue.requests) == 2
    assert isinstance(error, IncompleteFeed)
    assert isinstance(error.failed_pages[2], BadResponse)


@pytest.mark.parametrize(
    ("failure", "error_type"),
    [
        (answer(503, json={"error": {"code": "down", "message": "down"}}), BackMarketUnavailable),
        (answer(429, json={"error": {"code": "rate", "message": "slow down"}}), RateLimited),
        (answer(200, json={"error": {"code": "oops", "message": "not a page"}}), BadResponse),
        (answer(200, json={"count": 150, "next": None}), BadResponse),
    ],
)
async def test_a_failed_page_does_not_stop_the_others_and_incomplete_feed_comes_last(
    router: respx.Router,
    make_client: Callable[..., BackMarketClient],
    failure: Callable[[httpx.Request], httpx.Response],
    error_type: type[BackMarketError],
) -> None:
    catalogue = FakeCatalogue(250)
    catalogue.broken[3] = failure
    router.get("/ws/listings").mock(side_effect=catalogue)

    pages, error = await read_feed(make_client())

    assert sorted(page.page for page in pages) == [1, 2, 4, 5]
    assert isinstance(error, IncompleteFeed)
    assert (error.market, error.expected, error.received) == ("fr-fr", 250, 200)
    assert list(error.failed_pages) == [3]
    assert isinstance(error.failed_pages[3], error_type)


async def test_a_short_page_without_failures_raises_incomplete_feed(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    catalogue = FakeCatalogue(120)
    catalogue.short[2] = 1
    router.get("/ws/listings").mock(side_effect=catalogue)

    pages, error = await read_feed(make_client())

    assert len(pages) == 3
    assert isinstance(error, IncompleteFeed)
    assert (error.failed_pages, error.expected, error.received) == ({}, 120, 119)


@pytest.mark.parametrize(
    ("failure", "error_type"),
    [
        (httpx.Response(401, json={"error": {"code": "auth", "message": "no"}}), Unauthorized),
        (httpx.Response(503), BackMarketUnavailable),
        (httpx.Response(200, json={"count": 3, "next": None, "previous": None}), BadResponse),
        (httpx.Response(200, json={"error": {"code": "x", "message": "y"}}), BadResponse),
        (httpx.Response(200, json=[]), BadResponse),
    ],
)
async def test_page_one_failing_raises_its_typed_error_and_yields_nothing(
    router: respx.Router,
    make_client: Callable[..., BackMarketClient],
    failure: httpx.Response,
    error_type: type[BackMarketError],
) -> None:
    router.get("/ws/listings").mock(return_value=failure)

    pages, error = await read_feed(make_client())

    assert pages == []
    assert type(error) is error_type


async def test_closing_the_page_iterator_early_stops_the_background_fetches(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    catalogue = FakeCatalogue(1000)

    async def slow_page(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0)
        return catalogue(request)

    router.get("/ws/listings").mock(side_effect=slow_page)

    async with aclosing(make_client().iter_listing_pages("fr-fr", concurrency=2)) as pages:
        async for page in pages:
            if page.page != 1:
                break
    sent_when_closed = len(catalogue.requests)
    for _ in range(20):
        await asyncio.sleep(0)

    assert len(catalogue.requests) == sent_when_closed < 20


async def test_fetched_at_is_utc_and_taken_before_the_successful_attempt_was_sent(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    catalogue = FakeCatalogue(3)
    catalogue.faults[1] = [answer(503)]
    arrivals: list[datetime] = []

    def timed(request: httpx.Request) -> httpx.Response:
        arrivals.append(datetime.now(UTC))
        return catalogue(request)

    router.get("/ws/listings").mock(side_effect=timed)

    pages, _ = await read_feed(make_client())

    fetched_at = pages[0].fetched_at
    assert fetched_at.utcoffset() == timedelta(0)
    assert arrivals[0] <= fetched_at <= arrivals[1]
    assert pages[0].requests == 2


# -- the request budget -----------------------------------------------------------------------


def assert_no_window_exceeds(send_times: list[float], budget: int, window: float = 10.0) -> None:
    ordered = sorted(send_times)
    for first, later in zip(ordered, ordered[budget:], strict=False):
        assert later - first >= window, f"{budget + 1} requests within {later - first:.2f}s"


async def test_no_ten_second_window_ever_holds_more_than_the_budget(
    router: respx.Router, make_client: Callable[..., BackMarketClient], fake_time: FakeTime
) -> None:
    send_times: list[float] = []

    def record(request: httpx.Request, ref: str) -> httpx.Response:
        send_times.append(fake_time.now)
        return httpx.Response(200, json=listing_json(int(ref)))

    router.get(path__regex=LISTING_PATH).mock(side_effect=record)
    client = make_client(backmarket_requests_per_10s=5)

    listings = await asyncio.gather(*(client.get_listing(number) for number in range(12)))

    assert len(listings) == 12
    assert_no_window_exceeds(send_times, budget=5)
    # The budget is used, not wasted: the sixth request goes as soon as the window allows.
    assert sorted(send_times)[5] - min(send_times) < 10.5


async def test_a_burst_after_an_idle_spell_still_gets_only_the_budget_per_window(
    router: respx.Router, make_client: Callable[..., BackMarketClient], fake_time: FakeTime
) -> None:
    # A leaky bucket would have refilled during the idle spell and let a second full budget
    # through inside the same 10 s as the first one.
    send_times: list[float] = []

    def record(request: httpx.Request, ref: str) -> httpx.Response:
        send_times.append(fake_time.now)
        return httpx.Response(200, json=listing_json(int(ref)))

    router.get(path__regex=LISTING_PATH).mock(side_effect=record)
    client = make_client(backmarket_requests_per_10s=5)

    await asyncio.gather(*(client.get_listing(number) for number in range(5)))
    fake_time.now += 9.0
    await asyncio.gather(*(client.get_listing(number) for number in range(10)))

    assert len(send_times) == 15
    assert_no_window_exceeds(send_times, budget=5)


async def test_the_budget_is_shared_by_pages_gets_and_updates_of_every_market(
    router: respx.Router, make_client: Callable[..., BackMarketClient], fake_time: FakeTime
) -> None:
    send_times: list[float] = []
    catalogue = FakeCatalogue(120)

    def record(request: httpx.Request, **_: str) -> httpx.Response:
        send_times.append(fake_time.now)
        if request.url.path == "/ws/listings":
            return catalogue(request)
        return httpx.Response(200, json=listing_json(1))

    router.get("/ws/listings").mock(side_effect=record)
    router.route(path__regex=LISTING_PATH).mock(side_effect=record)
    client = make_client(backmarket_requests_per_10s=4)

    await asyncio.gather(
        read_feed(client, "fr-fr"),
        read_feed(client, "de-de"),
        client.get_listing("a"),
        client.get_listing("b", market="de-de"),
        client.update_listing("a", quantity=1),
        client.update_listing("b", quantity=2, market="de-de"),
    )

    assert len(send_times) == 10
    assert_no_window_exceeds(send_times, budget=4)


async def test_after_a_429_the_whole_client_waits_retry_after_before_sending_anything(
    router: respx.Router, make_client: Callable[..., BackMarketClient], fake_time: FakeTime
) -> None:
    router.get(path__regex=LISTING_PATH).mock(
        return_value=httpx.Response(429, headers={"Retry-After": "3"})
    )
    catalogue = FakeCatalogue(3)
    send_times: list[float] = []

    def record(request: httpx.Request) -> httpx.Response:
        send_times.append(fake_time.now)
        return catalogue(request)

    router.get("/ws/listings").mock(side_effect=record)
    client = make_client(backmarket_max_attempts=1)
    rate_limited_at = fake_time.now

    with pytest.raises(RateLimited) as caught:
        await client.get_listing("x")
    await read_feed(client, "de-de")

    assert caught.value.retry_after == 3.0
    assert send_times == [pytest.approx(rate_limited_at + 3.0, abs=0.01)]


async def test_a_429_without_retry_after_pauses_the_whole_client_ten_seconds(
    router: respx.Router, make_client: Callable[..., BackMarketClient], fake_time: FakeTime
) -> None:
    send_times: list[float] = []

    def record(request: httpx.Request, ref: str) -> httpx.Response:
        send_times.append(fake_time.now)
        if ref == "first":
            return httpx.Response(429, json={"error": {"code": "rate", "message": "slow"}})
        return httpx.Response(200, json=listing_json(1))

    router.get(path__regex=LISTING_PATH).mock(side_effect=record)
    client = make_client(backmarket_max_attempts=1)

    with pytest.raises(RateLimited) as caught:
        await client.get_listing("first")
    await client.get_listing("second")

    assert caught.value.retry_after == 10.0
    assert send_times[1] - send_times[0] == pytest.approx(10.0, abs=0.01)


async def test_a_retry_after_http_date_is_honoured(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    in_thirty_seconds = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    router.get(path__regex=LISTING_PATH).mock(
        return_value=httpx.Response(429, headers={"Retry-After": in_thirty_seconds})
    )
    client = make_client(backmarket_max_attempts=1)

    with pytest.raises(RateLimited) as caught:
        await client.get_listing("x")

    assert caught.value.retry_after is not None
    assert 28.0 <= caught.value.retry_after <= 30.0
    assert 28.0 <= client.paused_for() <= 30.0


async def test_a_pause_longer_than_the_wait_cap_fails_calls_at_once_without_sending(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    route = router.get(path__regex=LISTING_PATH).mock(
        return_value=httpx.Response(429, headers={"Retry-After": "3600"})
    )
    client = make_client(backmarket_max_attempts=5)

    with pytest.raises(RateLimited) as first:
        await client.get_listing("x")
    with pytest.raises(RateLimited) as second:
        await client.get_listing("y")

    assert first.value.attempts == 1
    assert second.value.attempts == 0
    assert route.call_count == 1


# -- retries ----------------------------------------------------------------------------------


async def test_5xx_is_retried_with_exponential_full_jitter_backoff_then_unavailable(
    router: respx.Router, make_client: Callable[..., BackMarketClient], fake_time: FakeTime
) -> None:
    route = router.get(path__regex=LISTING_PATH).mock(return_value=httpx.Response(503))
    client = make_client(backmarket_max_attempts=4)

    with pytest.raises(BackMarketUnavailable) as caught:
        await client.get_listing("x")

    assert (caught.value.status, caught.value.attempts, route.call_count) == (503, 4, 4)
    assert len(fake_time.sleeps) == 3
    for retry, slept in enumerate(fake_time.sleeps):
        assert 0.0 <= slept <= client.backoff_base_seconds * 2**retry


async def test_a_5xx_retry_after_is_honoured_for_that_request(
    router: respx.Router, make_client: Callable[..., BackMarketClient], fake_time: FakeTime
) -> None:
    router.get(path__regex=LISTING_PATH).mock(
        side_effect=[
            httpx.Response(503, headers={"Retry-After": "7"}),
            httpx.Response(200, json=listing_json(1)),
        ]
    )

    await make_client().get_listing("x")

    assert fake_time.sleeps == [7.0]


async def test_429_on_every_attempt_raises_rate_limited_with_retry_after(
    router: respx.Router, make_client: Callable[..., BackMarketClient], fake_time: FakeTime
) -> None:
    send_times: list[float] = []

    def limited(request: httpx.Request, ref: str) -> httpx.Response:
        send_times.append(fake_time.now)
        return httpx.Response(429, headers={"Retry-After": "2"})

    router.get(path__regex=LISTING_PATH).mock(side_effect=limited)

    with pytest.raises(RateLimited) as caught:
        await make_client().get_listing("x")

    assert (caught.value.retry_after, caught.value.attempts, caught.value.status) == (2.0, 3, 429)
    assert all(later - first >= 2.0 for first, later in pairwise(send_times))


@pytest.mark.parametrize(
    "first_answer",
    [
        httpx.Response(500),
        httpx.Response(502),
        httpx.Response(429),
        httpx.ReadTimeout,
        httpx.ConnectTimeout,
        httpx.ConnectError,
        httpx.RemoteProtocolError,
        bot_challenge(),
        html(403),
        html(200),
    ],
    ids=lambda value: getattr(value, "__name__", None) or repr(value),
)
async def test_get_listing_is_retried_after_a_transient_failure(
    router: respx.Router, make_client: Callable[..., BackMarketClient], first_answer: Any
) -> None:
    route = router.get(path__regex=LISTING_PATH).mock(
        side_effect=[first_answer, httpx.Response(200, json=listing_json(4))]
    )

    listing = await make_client().get_listing("x")

    assert listing.listing_id == 4
    assert route.call_count == 2


@pytest.mark.parametrize(
    "failure",
    [httpx.ReadTimeout, httpx.ConnectError, bot_challenge(), html(403), html(200), html(502)],
    ids=lambda value: getattr(value, "__name__", None) or repr(value),
)
async def test_a_persistent_transient_failure_ends_as_unavailable_after_max_attempts(
    router: respx.Router, make_client: Callable[..., BackMarketClient], failure: Any
) -> None:
    route = router.get(path__regex=LISTING_PATH).mock(side_effect=[failure] * 3)

    with pytest.raises(BackMarketUnavailable) as caught:
        await make_client().get_listing("x")

    assert caught.value.attempts == route.call_count == 3


@pytest.mark.parametrize(
    ("response", "error_type"),
    [
        (
            httpx.Response(401, json={"error": {"code": "unauthenticated", "message": "x"}}),
            Unauthorized,
        ),
        (
            httpx.Response(403, json={"error": {"code": "not-a-merchant", "message": "x"}}),
            Unauthorized,
        ),
        (
            httpx.Response(404, json={"error": {"code": "not-found", "message": "x"}}),
            ListingNotFound,
        ),
        (httpx.Response(400, json="parameter quantity is invalid"), BadResponse),
        (httpx.Response(422, json={"error": {"code": "invalid", "message": "x"}}), BadResponse),
    ],
)
async def test_answers_that_cannot_improve_are_not_retried(
    router: respx.Router,
    make_client: Callable[..., BackMarketClient],
    response: httpx.Response,
    error_type: type[BackMarketError],
) -> None:
    route = router.get(path__regex=LISTING_PATH).mock(return_value=response)

    with pytest.raises(BackMarketError) as caught:
        await make_client().get_listing("x")

    assert type(caught.value) is error_type
    assert (caught.value.status, caught.value.attempts, route.call_count) == (
        response.status_code,
        1,
        1,
    )


async def test_a_plain_string_400_body_is_quoted_in_the_error_message(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    router.post(path__regex=LISTING_PATH).mock(
        return_value=httpx.Response(400, json="parameter quantity is invalid")
    )

    with pytest.raises(BadResponse, match="parameter quantity is invalid"):
        await make_client().update_listing("x", quantity=1)


@pytest.mark.parametrize(
    ("response", "request_id"),
    [
        (
            httpx.Response(
                404, json={"error": {"code": "x", "message": "y"}, "requestId": "req-1"}
            ),
            "req-1",
        ),
        (httpx.Response(404, headers={"cf-ray": "8c1d2e-CDG"}), "8c1d2e-CDG"),
    ],
)
async def test_errors_carry_the_request_id_from_the_body_or_the_cf_ray_header(
    router: respx.Router,
    make_client: Callable[..., BackMarketClient],
    response: httpx.Response,
    request_id: str,
) -> None:
    router.get(path__regex=LISTING_PATH).mock(return_value=response)

    with pytest.raises(ListingNotFound) as caught:
        await make_client().get_listing("x")

    assert caught.value.request_id == request_id
    assert caught.value.endpoint == "GET /ws/listings/{listingId}"
    assert request_id in str(caught.value)


# -- update_listing ---------------------------------------------------------------------------


async def test_update_listing_posts_only_the_quantity_and_returns_the_answered_listing(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    listing_uuid = listing_json(9)["id"]
    route = router.post(f"/ws/listings/{listing_uuid}").mock(
        return_value=httpx.Response(200, json=listing_json(9, quantity=7))
    )

    listing = await make_client().update_listing(listing_uuid, quantity=7)

    assert (listing.id, listing.quantity) == (listing_uuid, 7)
    assert route.calls.last.request.content == b'{"quantity":7}'


async def test_update_listing_by_integer_listing_id_puts_it_in_the_path(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    route = router.post("/ws/listings/4567").mock(
        return_value=httpx.Response(200, json=listing_json(4567))
    )

    await make_client().update_listing(4567, quantity=0)

    assert route.call_count == 1


async def test_update_listing_accepts_a_202_with_a_listing_body(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    router.post(path__regex=LISTING_PATH).mock(
        return_value=httpx.Response(202, json=listing_json(3, quantity=11))
    )
    read_back = router.get(path__regex=LISTING_PATH)

    listing = await make_client().update_listing("x", quantity=11)

    assert listing.quantity == 11
    assert read_back.call_count == 0


@pytest.mark.parametrize(
    "accepted", [httpx.Response(202), httpx.Response(202, json={"statuscode": 202})]
)
async def test_update_listing_reads_the_listing_back_after_a_202_without_a_listing_body(
    router: respx.Router, make_client: Callable[..., BackMarketClient], accepted: httpx.Response
) -> None:
    router.post(path__regex=LISTING_PATH).mock(return_value=accepted)
    read_back = router.get(path__regex=LISTING_PATH).mock(
        return_value=httpx.Response(200, json=listing_json(3, quantity=11))
    )

    listing = await make_client().update_listing("x", quantity=11, market="de-de")

    assert listing.quantity == 11
    assert read_back.call_count == 1
    assert read_back.calls.last.request.headers["accept-language"] == "de-de"


@pytest.mark.parametrize(
    "refusal",
    [
        httpx.Response(429),
        httpx.ConnectError,
        httpx.ConnectTimeout,
        bot_challenge(),
        html(403),
    ],
    ids=lambda value: getattr(value, "__name__", None) or repr(value),
)
async def test_update_listing_is_retried_when_the_post_surely_was_not_processed(
    router: respx.Router, make_client: Callable[..., BackMarketClient], refusal: Any
) -> None:
    route = router.post(path__regex=LISTING_PATH).mock(
        side_effect=[refusal, httpx.Response(200, json=listing_json(1, quantity=3))]
    )

    listing = await make_client().update_listing("x", quantity=3)

    assert listing.quantity == 3
    assert route.call_count == 2


@pytest.mark.parametrize(
    "lost_answer",
    [
        httpx.ReadTimeout,
        httpx.WriteTimeout,
        httpx.RemoteProtocolError,
        httpx.ReadError,
        httpx.Response(500),
        httpx.Response(503),
        html(502),
        html(200),
        httpx.Response(200, json={"error": {"code": "x", "message": "y"}}),
    ],
    ids=lambda value: getattr(value, "__name__", None) or repr(value),
)
async def test_update_listing_raises_outcome_unknown_without_retrying_when_the_post_may_have_landed(
    router: respx.Router, make_client: Callable[..., BackMarketClient], lost_answer: Any
) -> None:
    route = router.post(path__regex=LISTING_PATH).mock(side_effect=[lost_answer])

    with pytest.raises(OutcomeUnknown) as caught:
        await make_client(backmarket_max_attempts=5).update_listing("x", quantity=3)

    assert route.call_count == 1
    assert caught.value.attempts == 1
    assert caught.value.endpoint == "POST /ws/listings/{listingId}"


async def test_update_listing_202_whose_read_back_fails_is_outcome_unknown(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    router.post(path__regex=LISTING_PATH).mock(return_value=httpx.Response(202))
    router.get(path__regex=LISTING_PATH).mock(return_value=httpx.Response(503))

    with pytest.raises(OutcomeUnknown, match="accepted"):
        await make_client().update_listing("x", quantity=3)


@pytest.mark.parametrize("quantity", [-1, True, 2.0, "3"])
async def test_update_listing_rejects_a_bad_quantity_without_sending(
    router: respx.Router, make_client: Callable[..., BackMarketClient], quantity: Any
) -> None:
    route = router.post(path__regex=LISTING_PATH)

    with pytest.raises(ValueError):
        await make_client().update_listing("x", quantity=quantity)

    assert route.call_count == 0


# -- counting ---------------------------------------------------------------------------------


async def test_stats_count_requests_by_endpoint_template_and_outcome(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    router.get(path__regex=LISTING_PATH).mock(
        side_effect=[
            httpx.Response(503),
            httpx.ConnectError,
            httpx.Response(200, json=listing_json(1)),
            httpx.Response(404),
        ]
    )
    router.post(path__regex=LISTING_PATH).mock(side_effect=[httpx.ReadTimeout])
    client = make_client()

    await client.get_listing("a")
    with pytest.raises(ListingNotFound):
        await client.get_listing("b")
    with pytest.raises(OutcomeUnknown):
        await client.update_listing("c", quantity=1)

    assert client.stats() == {
        "GET /ws/listings/{listingId} 503": 1,
        "GET /ws/listings/{listingId} connect_error": 1,
        "GET /ws/listings/{listingId} 200": 1,
        "GET /ws/listings/{listingId} 404": 1,
        "POST /ws/listings/{listingId} timeout": 1,
    }
    assert client.requests_total == 5


async def test_the_prometheus_counter_counts_requests_by_endpoint_and_outcome(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    router.get("/ws/listings").mock(side_effect=FakeCatalogue(60))
    labels = {"marketplace_id": "1", "endpoint": "GET /ws/listings", "outcome": "200"}
    before = REGISTRY.get_sample_value("backmarket_requests_total", labels) or 0.0

    await read_feed(make_client())

    assert REGISTRY.get_sample_value("backmarket_requests_total", labels) == before + 2


# -- secrets and logs -------------------------------------------------------------------------


async def test_the_token_never_appears_in_logs_even_at_debug(
    router: respx.Router,
    make_client: Callable[..., BackMarketClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    echo = {"error": {"code": "bad", "message": f"token Basic {TOKEN} refused"}}
    router.get(path__regex=LISTING_PATH).mock(
        side_effect=[httpx.Response(503, json=echo), httpx.ConnectError(f"Basic {TOKEN}")] * 2
    )

    with pytest.raises(BackMarketUnavailable):
        await make_client().get_listing("x")

    assert caplog.records
    assert TOKEN not in caplog.text
    assert all(TOKEN not in record.getMessage() for record in caplog.records)


async def test_the_token_never_appears_in_any_kind_of_error(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    echo = f"your token is {TOKEN}"
    body = {"error": {"code": "x", "message": echo}, "requestId": "r"}
    router.get(path__regex=r"^/ws/listings/429$").mock(return_value=httpx.Response(429, json=body))
    router.get(path__regex=r"^/ws/listings/503$").mock(return_value=httpx.Response(503, json=body))
    router.get(path__regex=r"^/ws/listings/404$").mock(return_value=httpx.Response(404, json=body))
    router.get(path__regex=r"^/ws/listings/401$").mock(return_value=httpx.Response(401, json=body))
    router.get(path__regex=r"^/ws/listings/400$").mock(return_value=httpx.Response(400, json=echo))
    router.get(path__regex=r"^/ws/listings/200$").mock(return_value=httpx.Response(200, json=body))
    router.post(path__regex=LISTING_PATH).mock(side_effect=httpx.ReadTimeout(echo))
    catalogue = FakeCatalogue(100)
    catalogue.broken[2] = answer(400, json=echo)
    router.get("/ws/listings").mock(side_effect=catalogue)
    client = make_client(backmarket_max_attempts=2)

    errors: list[BackMarketError] = []
    for ref in ("429", "503", "404", "401", "400", "200"):
        with pytest.raises(BackMarketError) as caught:
            await client.get_listing(ref)
        errors.append(caught.value)
    with pytest.raises(OutcomeUnknown) as unknown:
        await client.update_listing("x", quantity=1)
    errors.append(unknown.value)
    _, incomplete = await read_feed(client)
    assert incomplete is not None
    errors.append(incomplete)

    kinds = {type(error) for error in errors}
    assert kinds == {
        RateLimited,
        BackMarketUnavailable,
        ListingNotFound,
        Unauthorized,
        BadResponse,
        OutcomeUnknown,
        IncompleteFeed,
    }
    for error in errors:
        assert TOKEN not in str(error)
        assert TOKEN not in repr(error)
    assert any("[token]" in str(error) for error in errors)


async def test_the_token_never_appears_in_the_client_repr_or_stats(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    router.get(path__regex=LISTING_PATH).mock(
        return_value=httpx.Response(200, json=listing_json(1))
    )
    client = make_client()

    await client.get_listing("x")

    assert TOKEN not in repr(client)
    assert TOKEN not in str(client.stats())


async def test_each_request_is_logged_once_at_debug_with_method_path_status_and_elapsed(
    router: respx.Router,
    make_client: Callable[..., BackMarketClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="app.services.backmarket")
    router.get(path__regex=LISTING_PATH).mock(
        return_value=httpx.Response(200, json=listing_json(1))
    )

    await make_client().get_listing("abc")

    lines = [r.getMessage() for r in caplog.records if r.name == "app.services.backmarket"]
    assert len(lines) == 1
    assert caplog.records[-1].levelno == logging.DEBUG
    assert lines[0].startswith("GET /ws/listings/abc [fr-fr] -> 200 in ")
    assert lines[0].split(" in ")[1].startswith("0.")


async def test_retries_are_logged_at_warning(
    router: respx.Router,
    make_client: Callable[..., BackMarketClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="app.services.backmarket")
    router.get(path__regex=LISTING_PATH).mock(
        side_effect=[httpx.Response(502), httpx.Response(200, json=listing_json(1))]
    )

    await make_client().get_listing("abc")

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "502" in warnings[0]
    assert "attempt 2 of 3" in warnings[0]


# -- the HTTP client's life -------------------------------------------------------------------


async def test_aclose_leaves_an_http_client_that_was_handed_in_open(
    http: httpx.AsyncClient, make_client: Callable[..., BackMarketClient]
) -> None:
    await make_client().aclose()

    assert not http.is_closed


async def test_a_client_without_http_builds_one_from_settings_and_closes_it() -> None:
    settings = client_settings(
        backmarket_connect_timeout_seconds=2.0, backmarket_read_timeout_seconds=9.0
    )
    client = BackMarketClient(settings)
    with respx.mock(base_url=BASE) as mock:
        route = mock.get(path__regex=LISTING_PATH).mock(
            return_value=httpx.Response(200, json=listing_json(1))
        )
        await client.get_listing("x")

    http = client._http
    assert route.calls.last.request.url.host == "bm.test"
    assert (http.timeout.connect, http.timeout.read) == (2.0, 9.0)
    await client.aclose()
    assert http.is_closed
