"""One behaviour suite, run against every marketplace adapter and its simulator.

Each test speaks only the `Marketplace` protocol; how to reach a simulator and what legitimately
differs between marketplaces is in `harness` (the `marketplace` fixture runs each test once per
adapter). Time is faked: retries and 429 pauses move the adapter's clock, nothing sleeps.
"""

from __future__ import annotations

import math
from contextlib import aclosing
from datetime import UTC, datetime, timedelta

import pytest

from app.services.marketplace import (
    BadResponse,
    IncompleteFeed,
    Listing,
    ListingRef,
    Marketplace,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from tests.marketplaces.harness import MAX_ATTEMPTS, AdapterUnderTest, Operation

# The adapters' pause after a 429 without Retry-After or reset, for these tests (fake seconds).
SHORT_PAUSE = 2.0
# Longer than either adapter will wait (max_retry_wait_seconds, 60 s): not slept through.
LONG_PAUSE = 120.0


async def read_every_listing(adapter: Marketplace) -> dict[str, list[str]]:
    """Every listing id of every feed, in the order read (repeats kept, to be seen)."""
    ids: dict[str, list[str]] = {}
    for feed in adapter.feeds:
        async with aclosing(adapter.iter_listing_pages(feed)) as pages:
            ids[feed] = [listing.id async for page in pages for listing in page.listings]
    return ids


async def listing_of(marketplace: AdapterUnderTest, index: int) -> Listing:
    return await marketplace.adapter.get_listing(ListingRef(sku=marketplace.sku(index)))


def test_the_suite_runs_against_an_adapter_of_the_protocol(marketplace: AdapterUnderTest) -> None:
    assert isinstance(marketplace.adapter, Marketplace)
    assert marketplace.adapter.kind == marketplace.name


async def test_every_listing_is_read_once_in_the_fewest_calls(
    marketplace: AdapterUnderTest,
) -> None:
    ids_by_feed = await read_every_listing(marketplace.adapter)

    assert marketplace.adapter.requests_total == marketplace.feed_floor()
    for feed, ids in ids_by_feed.items():
        assert len(ids) == len(set(ids)) == marketplace.catalogue_size, feed


async def test_every_listing_read_carries_its_sku_and_stock(marketplace: AdapterUnderTest) -> None:
    feed = marketplace.adapter.feeds[0]
    async with aclosing(marketplace.adapter.iter_listing_pages(feed)) as pages:
        listings = [listing async for page in pages for listing in page.listings]

    skus = {listing.sku for listing in listings}
    assert skus == {marketplace.sku(index) for index in range(marketplace.catalogue_size)}
    sample = listings[17]
    assert sample.sku is not None
    assert sample.quantity == await marketplace.stock_of(sample.sku)


async def test_a_listing_is_read_by_its_stored_reference_and_else_by_its_sku(
    marketplace: AdapterUnderTest,
) -> None:
    by_sku = await marketplace.adapter.get_listing(ListingRef(sku=marketplace.sku(6)))
    by_reference = await marketplace.adapter.get_listing(ListingRef(reference=by_sku.id))
    # The stored reference wins over a SKU that names another listing.
    by_both = await marketplace.adapter.get_listing(
        ListingRef(reference=by_sku.id, sku=marketplace.sku(7))
    )

    assert by_sku.sku == marketplace.sku(6)
    assert by_reference == by_sku
    assert by_both == by_sku
    assert by_sku.quantity == await marketplace.stock_of(marketplace.sku(6))


@pytest.mark.parametrize("which", ["reference", "sku"])
async def test_a_listing_the_marketplace_does_not_know_is_not_found_at_once(
    marketplace: AdapterUnderTest, which: str
) -> None:
    ref = (
        ListingRef(reference=marketplace.unknown_reference)
        if which == "reference"
        else ListingRef(sku="SKU-NOT-SOLD-HERE")
    )

    with pytest.raises(NotFound):
        await marketplace.adapter.get_listing(ref)
    assert marketplace.adapter.requests_total == 1


@pytest.mark.parametrize("which", ["reference", "sku"])
async def test_set_quantity_is_absolute_and_answers_the_listing(
    marketplace: AdapterUnderTest, which: str
) -> None:
    sku = marketplace.sku(11)
    before = await marketplace.stock_of(sku)
    ref = ListingRef(sku=sku)
    if which == "reference":
        ref = ListingRef(reference=(await marketplace.adapter.get_listing(ref)).id)
    target = before + 7

    answered = await marketplace.adapter.set_quantity(ref, quantity=target)
    again = await marketplace.adapter.set_quantity(ref, quantity=target)

    assert (answered.sku, answered.quantity) == (sku, target)
    assert again.quantity == target
    assert await marketplace.stock_of(sku) == target


async def test_set_quantity_of_an_unknown_listing_is_not_found(
    marketplace: AdapterUnderTest,
) -> None:
    with pytest.raises(NotFound):
        await marketplace.adapter.set_quantity(
            ListingRef(reference=marketplace.unknown_reference), quantity=3
        )


async def test_several_listings_are_read_in_as_few_calls_as_the_marketplace_allows(
    marketplace: AdapterUnderTest,
) -> None:
    refs = [ListingRef(sku=marketplace.sku(index)) for index in range(120)]
    missing = ListingRef(sku="SKU-NOT-SOLD-HERE")

    found = await marketplace.adapter.get_listings([*refs, missing])

    assert set(found) == set(refs)
    assert all(found[ref].sku == ref.sku for ref in refs)
    assert marketplace.adapter.requests_total == math.ceil(
        (len(refs) + 1) / marketplace.listings_per_read_call
    )


async def test_an_order_placed_since_a_moment_is_read_with_its_units_and_listing(
    marketplace: AdapterUnderTest,
) -> None:
    sku = marketplace.sku(20)
    since = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=1)
    await marketplace.place_order(sku, units=2)

    lines = [
        line
        async for page in marketplace.adapter.read_order_lines(since=since)
        for line in page.lines
    ]

    ordered = [line for line in lines if line.sku == sku]
    assert sum(line.quantity for line in ordered) == 2
    assert all(line.sold for line in ordered)
    # The reference an order line carries reads back the listing that was sold.
    for reference in {line.listing_ref for line in ordered}:
        assert reference is not None
        read = await marketplace.adapter.get_listing(ListingRef(reference=reference))
        assert read.sku == sku


async def test_orders_placed_before_the_moment_are_not_read(marketplace: AdapterUnderTest) -> None:
    await marketplace.place_order(marketplace.sku(21), units=1)
    since = datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=1)

    lines = [
        line
        async for page in marketplace.adapter.read_order_lines(since=since)
        for line in page.lines
    ]

    assert lines == []


async def test_a_refused_token_is_unauthorized_and_not_retried(
    marketplace: AdapterUnderTest,
) -> None:
    refused = marketplace.build(token="not-the-token")
    try:
        with pytest.raises(Unauthorized) as raised:
            await refused.get_listing(ListingRef(sku=marketplace.sku(1)))
        assert refused.requests_total == 1
        assert "not-the-token" not in str(raised.value)
    finally:
        await refused.aclose()


async def test_server_errors_after_the_retries_are_unavailable(
    marketplace: AdapterUnderTest,
) -> None:
    reference = (await listing_of(marketplace, 2)).id
    sent = marketplace.adapter.requests_total
    await marketplace.fail_next(
        Operation.READ_ONE, marketplace.faults.server_error, count=MAX_ATTEMPTS
    )

    with pytest.raises(Unavailable):
        await marketplace.adapter.get_listing(ListingRef(reference=reference))

    assert marketplace.adapter.requests_total - sent == MAX_ATTEMPTS


async def test_a_server_error_then_an_answer_is_a_success(marketplace: AdapterUnderTest) -> None:
    reference = (await listing_of(marketplace, 2)).id
    sent = marketplace.adapter.requests_total
    await marketplace.fail_next(Operation.READ_ONE, marketplace.faults.server_error)

    read = await marketplace.adapter.get_listing(ListingRef(reference=reference))

    assert read.sku == marketplace.sku(2)
    assert marketplace.adapter.requests_total - sent == 2


async def test_a_429_on_a_read_pauses_the_account_then_the_read_succeeds(
    marketplace: AdapterUnderTest,
) -> None:
    reference = (await listing_of(marketplace, 3)).id
    marketplace.set_rate_limit_pause(SHORT_PAUSE)
    await marketplace.fail_next(Operation.READ_ONE, marketplace.faults.too_many_requests)
    started = marketplace.time.now
    sent = marketplace.adapter.requests_total

    read = await marketplace.adapter.get_listing(ListingRef(reference=reference))

    assert read.sku == marketplace.sku(3)
    assert marketplace.adapter.requests_total - sent == 2
    # The second attempt went out only once the account's pause was over.
    assert marketplace.time.now - started >= SHORT_PAUSE
    assert marketplace.adapter.paused_for() == 0


async def test_a_429_on_an_update_pauses_the_account_and_is_sent_again_only_where_safe(
    marketplace: AdapterUnderTest,
) -> None:
    sku = marketplace.sku(4)
    before = await marketplace.stock_of(sku)
    marketplace.set_rate_limit_pause(SHORT_PAUSE)
    await marketplace.fail_next(Operation.UPDATE, marketplace.faults.too_many_requests)
    reference = (await listing_of(marketplace, 4)).id
    sent = marketplace.adapter.requests_total

    if marketplace.retries_update_after_429:
        started = marketplace.time.now
        answered = await marketplace.adapter.set_quantity(
            ListingRef(reference=reference), quantity=before + 1
        )
        assert answered.quantity == before + 1
        assert await marketplace.stock_of(sku) == before + 1
        assert marketplace.adapter.requests_total - sent == 2
        assert marketplace.time.now - started >= SHORT_PAUSE
    else:
        with pytest.raises(RateLimited) as raised:
            await marketplace.adapter.set_quantity(
                ListingRef(reference=reference), quantity=before + 1
            )
        assert raised.value.retry_after == SHORT_PAUSE
        assert marketplace.adapter.paused_for() > 0
        assert await marketplace.stock_of(sku) == before
        assert marketplace.adapter.requests_total - sent == 1


async def test_a_429_pause_longer_than_the_adapter_waits_is_rate_limited_and_sends_nothing(
    marketplace: AdapterUnderTest,
) -> None:
    reference = (await listing_of(marketplace, 5)).id
    marketplace.set_rate_limit_pause(LONG_PAUSE)
    await marketplace.fail_next(Operation.READ_ONE, marketplace.faults.too_many_requests)
    sent = marketplace.adapter.requests_total

    with pytest.raises(RateLimited):
        await marketplace.adapter.get_listing(ListingRef(reference=reference))
    assert marketplace.adapter.paused_for() == pytest.approx(LONG_PAUSE)
    # Any call of the account while the pause lasts fails without being sent.
    with pytest.raises(RateLimited):
        await marketplace.adapter.set_quantity(ListingRef(reference=reference), quantity=1)

    assert marketplace.adapter.requests_total - sent == 1


async def test_an_update_whose_answer_is_lost_is_outcome_unknown_and_not_sent_again(
    marketplace: AdapterUnderTest,
) -> None:
    sku = marketplace.sku(8)
    target = await marketplace.stock_of(sku) + 5
    reference = (await listing_of(marketplace, 8)).id
    await marketplace.fail_next(Operation.UPDATE, marketplace.faults.lost_answer)
    sent = marketplace.adapter.requests_total

    with pytest.raises(OutcomeUnknown):
        await marketplace.adapter.set_quantity(ListingRef(reference=reference), quantity=target)

    assert marketplace.adapter.requests_total - sent == 1
    # The simulator did apply it: only reading back tells.
    assert await marketplace.stock_of(sku) == target
    assert (await marketplace.adapter.get_listing(ListingRef(reference=reference))).quantity == (
        target
    )


async def test_a_read_answered_200_of_the_wrong_shape_is_retried_then_succeeds(
    marketplace: AdapterUnderTest,
) -> None:
    reference = (await listing_of(marketplace, 9)).id
    await marketplace.fail_next(Operation.READ_ONE, marketplace.faults.wrong_shape)
    sent = marketplace.adapter.requests_total

    read = await marketplace.adapter.get_listing(ListingRef(reference=reference))

    assert read.sku == marketplace.sku(9)
    assert marketplace.adapter.requests_total - sent == 2


async def test_a_read_answered_200_of_the_wrong_shape_every_time_is_a_bad_response(
    marketplace: AdapterUnderTest,
) -> None:
    reference = (await listing_of(marketplace, 9)).id
    await marketplace.fail_next(
        Operation.READ_ONE, marketplace.faults.wrong_shape, count=MAX_ATTEMPTS
    )
    sent = marketplace.adapter.requests_total

    with pytest.raises(BadResponse):
        await marketplace.adapter.get_listing(ListingRef(reference=reference))

    assert marketplace.adapter.requests_total - sent == MAX_ATTEMPTS


async def test_a_later_page_failing_makes_the_feed_incomplete_after_the_pages_read(
    marketplace: AdapterUnderTest,
) -> None:
    feed = marketplace.adapter.feeds[0]
    await marketplace.fail_listing_page(3, marketplace.faults.server_error, count=MAX_ATTEMPTS)
    read: list[str] = []
    pages: list[int] = []

    with pytest.raises(IncompleteFeed) as raised:
        async with aclosing(marketplace.adapter.iter_listing_pages(feed)) as arrivals:
            async for page in arrivals:
                pages.append(page.page)
                read.extend(listing.id for listing in page.listings)

    incomplete = raised.value
    assert set(incomplete.failed_pages) == {3}
    assert isinstance(incomplete.failed_pages[3], Unavailable)
    assert 3 not in pages and {1, 2} <= set(pages)
    assert incomplete.received == len(read) == len(set(read))
    assert len(read) < marketplace.catalogue_size


async def test_the_first_page_failing_raises_its_own_error(marketplace: AdapterUnderTest) -> None:
    feed = marketplace.adapter.feeds[0]
    await marketplace.fail_listing_page(1, marketplace.faults.server_error, count=MAX_ATTEMPTS)

    with pytest.raises(Unavailable) as raised:
        async with aclosing(marketplace.adapter.iter_listing_pages(feed)) as arrivals:
            async for _ in arrivals:
                pass

    assert not isinstance(raised.value, IncompleteFeed)


async def test_a_sale_lowers_the_stock_the_adapter_reads(marketplace: AdapterUnderTest) -> None:
    sku = marketplace.sku(30)
    await marketplace.adapter.set_quantity(ListingRef(sku=sku), quantity=5)
    await marketplace.place_order(sku, units=2)

    assert (await marketplace.adapter.get_listing(ListingRef(sku=sku))).quantity == 3
