"""Malformed Back Market answers at client level (respx): each has one defined outcome.

The table of outcomes is in the README ("Malformed answers → outcome"). Time is faked, nothing
sleeps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx

from app.services.backmarket import (
    BackMarketClient,
    BackMarketUnavailable,
    BadResponse,
    IncompleteFeed,
    OutcomeUnknown,
    listing_from_api,
)
from tests.services.test_backmarket_client import (
    BASE,
    LISTING_PATH,
    FakeCatalogue,
    FakeTime,
    answer,
    listing_json,
    read_feed,
)

ERROR_BODY_200 = {"error": {"code": "E008", "message": "Internal error"}, "requestId": "r-1"}


def page_body(
    listings: list[dict[str, Any]], *, count: int, next_page: int | None
) -> dict[str, Any]:
    next_url = None if next_page is None else f"{BASE}/ws/listings?page={next_page}&page-size=50"
    return {"count": count, "next": next_url, "previous": None, "results": listings}


def requests_for_page(catalogue: FakeCatalogue, page: int) -> int:
    return sum(1 for request in catalogue.requests if request.url.params["page"] == str(page))


# -- a 200 of the wrong shape on a read is retried like a 5xx -----------------------------------

BAD_SHAPES_200 = [
    pytest.param(ERROR_BODY_200, id="error-body"),
    pytest.param({"count": 150, "next": None, "previous": None}, id="no-results"),
    pytest.param({"count": 150, "next": None, "results": "none"}, id="results-not-a-list"),
    pytest.param({"next": None, "results": []}, id="no-count"),
    pytest.param([], id="a-list"),
    pytest.param(
        {"count": 150, "next": f"{BASE}/ws/listings?page=3", "results": []},
        id="empty-page-before-the-end",
    ),
]


@pytest.mark.parametrize("bad_body", BAD_SHAPES_200)
async def test_a_page_answering_200_with_a_bad_shape_once_is_retried_and_the_feed_completes(
    router: respx.Router, make_client: Callable[..., BackMarketClient], bad_body: Any
) -> None:
    catalogue = FakeCatalogue(150)
    catalogue.faults[2] = [answer(200, json=bad_body)]
    router.get("/ws/listings").mock(side_effect=catalogue)

    pages, error = await read_feed(make_client())

    assert error is None
    assert sorted(page.page for page in pages) == [1, 2, 3]
    assert requests_for_page(catalogue, 2) == 2
    assert [page.requests for page in pages if page.page == 2] == [2]


@pytest.mark.parametrize("bad_body", BAD_SHAPES_200)
async def test_a_page_answering_200_with_a_bad_shape_every_time_fails_as_bad_response(
    router: respx.Router, make_client: Callable[..., BackMarketClient], bad_body: Any
) -> None:
    catalogue = FakeCatalogue(150)
    catalogue.broken[2] = answer(200, json=bad_body)
    router.get("/ws/listings").mock(side_effect=catalogue)

    pages, error = await read_feed(make_client(backmarket_max_attempts=4))

    assert sorted(page.page for page in pages) == [1, 3]
    assert isinstance(error, IncompleteFeed)
    failure = error.failed_pages[2]
    assert type(failure) is BadResponse
    assert failure.attempts == requests_for_page(catalogue, 2) == 4
    assert "answered 200 but" in str(failure)


async def test_the_same_attempt_cap_and_backoff_apply_to_a_200_error_body_as_to_a_503(
    router: respx.Router, make_client: Callable[..., BackMarketClient], fake_time: FakeTime
) -> None:
    route = router.get(path__regex=LISTING_PATH).mock(
        side_effect=[httpx.Response(503)] * 3 + [httpx.Response(200, json=ERROR_BODY_200)] * 3
    )
    client = make_client()
    client.backoff_base_seconds = 1.0

    with pytest.raises(BackMarketUnavailable):
        await client.get_listing("x")
    sleeps_after_503 = list(fake_time.sleeps)
    with pytest.raises(BadResponse) as caught:
        await client.get_listing("x")
    sleeps_after_200 = fake_time.sleeps[len(sleeps_after_503) :]

    assert route.call_count == 6
    assert caught.value.attempts == 3
    assert caught.value.request_id == "r-1"
    assert "E008" in str(caught.value)
    # Full jitter under the same ceilings: 1 s, then 2 s.
    assert len(sleeps_after_503) == len(sleeps_after_200) == 2
    assert sleeps_after_200[0] <= 1.0 and sleeps_after_200[1] <= 2.0


async def test_get_listing_answering_200_with_an_error_body_once_is_retried(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    route = router.get(path__regex=LISTING_PATH).mock(
        side_effect=[
            httpx.Response(200, json=ERROR_BODY_200),
            httpx.Response(200, json=listing_json(4, quantity=9)),
        ]
    )

    listing = await make_client().get_listing("x")

    assert (listing.listing_id, listing.quantity) == (4, 9)
    assert route.call_count == 2


async def test_an_orders_page_answering_200_with_an_error_body_once_is_retried(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    orders_page = {"count": 0, "next": None, "previous": None, "results": []}
    route = router.get("/ws/orders").mock(
        side_effect=[
            httpx.Response(200, json=ERROR_BODY_200),
            httpx.Response(200, json=orders_page),
        ]
    )

    pages = [page async for page in make_client().iter_order_pages()]

    assert [(page.page, page.orders, page.requests) for page in pages] == [(1, [], 2)]
    assert route.call_count == 2


@pytest.mark.parametrize(
    "bad_body",
    [ERROR_BODY_200, {"statuscode": 200}, {**listing_json(1), "quantity": -3}],
    ids=["error-body", "not-a-listing", "negative-quantity"],
)
async def test_an_update_answering_200_with_a_bad_shape_is_never_retried_and_outcome_unknown(
    router: respx.Router, make_client: Callable[..., BackMarketClient], bad_body: Any
) -> None:
    route = router.post(path__regex=LISTING_PATH).mock(
        return_value=httpx.Response(200, json=bad_body)
    )
    read_back = router.get(path__regex=LISTING_PATH)

    with pytest.raises(OutcomeUnknown, match="may or may not have been applied"):
        await make_client(backmarket_max_attempts=5).update_listing("x", quantity=3)

    assert route.call_count == 1
    assert read_back.call_count == 0


# -- listings with missing or odd fields --------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "read_as"),
    [(12, 12), ("12", 12), (" 7 ", 7), (0, 0), ("0", 0)],
)
def test_a_quantity_that_is_an_integer_or_an_integer_string_is_read(
    quantity: Any, read_as: int
) -> None:
    assert listing_from_api({**listing_json(1), "quantity": quantity}).quantity == read_as


@pytest.mark.parametrize(
    "quantity", [-3, "-3", 12.0, 1.5, "12.0", "", None, True, [12], {"value": 12}]
)
def test_a_quantity_that_is_negative_a_float_or_not_a_number_is_unusable(quantity: Any) -> None:
    with pytest.raises(BadResponse, match="no usable 'quantity'"):
        listing_from_api({**listing_json(1), "quantity": quantity})


def test_a_listing_without_an_id_is_unusable_even_with_a_listing_id() -> None:
    body = listing_json(77)
    del body["id"]

    with pytest.raises(BadResponse, match="listing_id 77 has no usable 'id'"):
        listing_from_api(body)


def test_a_listing_without_a_listing_id_is_read_by_its_uuid() -> None:
    body = listing_json(1)
    del body["listing_id"]

    assert listing_from_api(body).listing_id is None


def test_prices_sent_as_numbers_do_not_matter_to_a_listing() -> None:
    body = {**listing_json(1, quantity=4), "price": 100.5, "min_price": 90, "max_price": None}

    assert listing_from_api(body).quantity == 4


@pytest.mark.parametrize(
    "broken",
    [
        {"quantity": None},
        {"quantity": -3},
        {"quantity": 2.5},
        {"quantity": "many"},
        {"id": None},
    ],
    ids=["no-quantity", "negative", "float", "text", "no-id"],
)
async def test_an_unusable_listing_is_left_out_of_its_page_and_named_and_the_rest_is_kept(
    router: respx.Router, make_client: Callable[..., BackMarketClient], broken: dict[str, Any]
) -> None:
    catalogue = FakeCatalogue(150)
    bad = catalogue.listings[60]
    catalogue.listings[60] = {**bad, **broken}
    router.get("/ws/listings").mock(side_effect=catalogue)

    pages, error = await read_feed(make_client())

    ids = {listing.id for page in pages for listing in page.listings}
    assert len(ids) == 149
    assert bad["id"] not in ids
    # Not retried: the answer is fine, one listing in it is not.
    assert requests_for_page(catalogue, 2) == 1
    assert isinstance(error, IncompleteFeed)
    assert error.failed_pages == {}
    assert list(error.unusable) == [2]
    [reason] = error.unusable[2]
    assert reason.startswith("page 2 result 10: listing")
    assert "1 unusable listings left out" in str(error)


async def test_a_page_of_listings_with_numeric_prices_and_string_quantities_completes(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    catalogue = FakeCatalogue(60)
    for number, body in enumerate(catalogue.listings):
        body.update(price=99.9, min_price=80, quantity=str(number % 7))
    router.get("/ws/listings").mock(side_effect=catalogue)

    pages, error = await read_feed(make_client())

    assert error is None
    quantities = sorted(listing.quantity for page in pages for listing in page.listings)
    assert quantities == sorted(number % 7 for number in range(60))


# -- a listing on two pages ----------------------------------------------------------------------


async def test_a_listing_on_two_pages_is_yielded_once_as_first_read_and_named_as_repeated(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    listings = [listing_json(number) for number in range(100)]
    repeated = {**listings[49], "quantity": 1}
    pages_served = {
        # The catalogue shifted by one between page 1 and page 2: listing 49 is on both.
        "1": page_body(listings[:50], count=100, next_page=2),
        "2": page_body([repeated, *listings[50:99]], count=100, next_page=3),
        "3": page_body(listings[99:], count=100, next_page=None),
    }
    router.get("/ws/listings").mock(
        side_effect=lambda request: httpx.Response(
            200, json=pages_served[request.url.params["page"]]
        )
    )

    pages, error = await read_feed(make_client())

    assert error is None
    by_page = {page.page: page for page in pages}
    assert by_page[2].repeated == [listings[49]["id"]]
    assert len(by_page[2].listings) == 49
    yielded = [listing for page in pages for listing in page.listings]
    assert len(yielded) == len({listing.id for listing in yielded}) == 100
    [kept] = [listing for listing in yielded if listing.id == listings[49]["id"]]
    assert kept.quantity == listings[49]["quantity"]


# -- `next` --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "foreign",
    [
        "https://elsewhere.example/ws/listings?page=2&page-size=50",
        "https://bm.test.elsewhere.example/ws/listings?page=2&page-size=50",
        "https://bm.test:8443/ws/listings?page=2&page-size=50",
    ],
)
async def test_a_next_link_to_another_host_is_refused_and_never_requested(
    router: respx.Router, make_client: Callable[..., BackMarketClient], foreign: str
) -> None:
    catalogue = FakeCatalogue(50)
    catalogue.next_override[1] = foreign
    router.get("/ws/listings").mock(side_effect=catalogue)

    pages, error = await read_feed(make_client())

    assert [page.page for page in pages] == [1]
    assert len(router.calls) == len(catalogue.requests) == 1
    assert isinstance(error, IncompleteFeed)
    assert type(error.failed_pages[2]) is BadResponse
    assert "another host" in str(error.failed_pages[2])
    assert "not followed" in str(error.failed_pages[2])


async def test_a_next_link_that_is_not_a_url_is_refused(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    catalogue = FakeCatalogue(50)
    catalogue.next_override[1] = "http://[::1/ws/listings?page=2"
    router.get("/ws/listings").mock(side_effect=catalogue)

    pages, error = await read_feed(make_client())

    assert [page.page for page in pages] == [1]
    assert isinstance(error, IncompleteFeed)
    assert "'next' is not a URL" in str(error.failed_pages[2])


# -- `count` changing, empty pages -------------------------------------------------------------


async def test_a_count_that_shrinks_during_the_read_leaves_the_feed_incomplete(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    catalogue = FakeCatalogue(120)

    def delete_one_after_page_one(request: httpx.Request) -> httpx.Response:
        # Listing 0 (on page 1, already read) is deleted: every later listing moves up one
        # place, so listing 50 slides onto page 1 and is never read.
        if request.url.params["page"] == "2" and len(catalogue.listings) == 120:
            del catalogue.listings[0]
        return catalogue(request)

    router.get("/ws/listings").mock(side_effect=delete_one_after_page_one)

    pages, error = await read_feed(make_client(), concurrency=1)

    assert len(pages) == 3
    assert isinstance(error, IncompleteFeed)
    assert (error.expected, error.received, error.smallest_count) == (120, 119, 119)
    assert "'count' changed during the read (between 119 and 120)" in str(error)


async def test_a_count_that_grows_at_the_front_during_the_read_leaves_the_feed_incomplete(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    catalogue = FakeCatalogue(100)

    def insert_one_after_page_one(request: httpx.Request) -> httpx.Response:
        # A new listing at the front pushes listing 49 onto page 2 and the last one onto a
        # page 3 that `next` announces; the new one itself is never read.
        if request.url.params["page"] == "2" and len(catalogue.listings) == 100:
            catalogue.listings.insert(0, listing_json(500))
        return catalogue(request)

    router.get("/ws/listings").mock(side_effect=insert_one_after_page_one)

    pages, error = await read_feed(make_client())

    assert sorted(page.page for page in pages) == [1, 2, 3]
    assert [page.repeated for page in pages if page.page == 2] == [[listing_json(49)["id"]]]
    assert isinstance(error, IncompleteFeed)
    assert (error.expected, error.received) == (101, 100)


async def test_an_empty_last_page_that_its_own_count_explains_is_not_retried(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    catalogue = FakeCatalogue(120)
    # Page 2 counts 50 now: the catalogue shrank, the page is rightly empty.
    catalogue.broken[2] = answer(200, json=page_body([], count=50, next_page=None))
    router.get("/ws/listings").mock(side_effect=catalogue)

    pages, error = await read_feed(make_client(), concurrency=1)

    assert requests_for_page(catalogue, 2) == 1
    assert sorted(page.page for page in pages) == [1, 2, 3]
    assert isinstance(error, IncompleteFeed)
    assert error.failed_pages == {}
    assert (error.expected, error.received) == (120, 70)


async def test_an_empty_first_page_whose_count_promises_listings_fails_after_retries(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    route = router.get("/ws/listings").mock(
        return_value=httpx.Response(200, json=page_body([], count=120, next_page=None))
    )

    pages, error = await read_feed(make_client())

    assert pages == []
    assert type(error) is BadResponse
    assert error.attempts == route.call_count == 3


# -- 202 on update -------------------------------------------------------------------------------


async def test_a_202_whose_body_shows_the_old_quantity_is_confirmed_by_reading_back(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    post = router.post(path__regex=LISTING_PATH).mock(
        return_value=httpx.Response(202, json=listing_json(3, quantity=5))
    )
    read_back = router.get(path__regex=LISTING_PATH).mock(
        return_value=httpx.Response(200, json=listing_json(3, quantity=11))
    )

    listing = await make_client().update_listing("x", quantity=11)

    assert listing.quantity == 11
    assert (post.call_count, read_back.call_count) == (1, 1)


@pytest.mark.parametrize(
    "accepted",
    [httpx.Response(202), httpx.Response(202, json=listing_json(3, quantity=5))],
    ids=["empty", "old-listing"],
)
async def test_a_202_that_the_read_back_does_not_confirm_is_outcome_unknown(
    router: respx.Router, make_client: Callable[..., BackMarketClient], accepted: httpx.Response
) -> None:
    post = router.post(path__regex=LISTING_PATH).mock(return_value=accepted)
    router.get(path__regex=LISTING_PATH).mock(
        return_value=httpx.Response(200, json=listing_json(3, quantity=5))
    )

    with pytest.raises(OutcomeUnknown, match="still shows quantity 5, not 11") as caught:
        await make_client(backmarket_max_attempts=5).update_listing("x", quantity=11)

    assert post.call_count == 1
    assert caught.value.status == 202


async def test_a_202_read_back_that_answers_200_with_an_error_body_once_is_retried(
    router: respx.Router, make_client: Callable[..., BackMarketClient]
) -> None:
    router.post(path__regex=LISTING_PATH).mock(return_value=httpx.Response(202))
    read_back = router.get(path__regex=LISTING_PATH).mock(
        side_effect=[
            httpx.Response(200, json=ERROR_BODY_200),
            httpx.Response(200, json=listing_json(3, quantity=11)),
        ]
    )

    listing = await make_client().update_listing("x", quantity=11)

    assert listing.quantity == 11
    assert read_back.call_count == 2
