"""Sales and cancellations on Back Market reach the database at the next poll: each listing
touched by an order line is read again once and written through the one stock writer."""

from __future__ import annotations

from typing import Any

import pytest

from tests.orders.support import (
    LISTING_READ,
    ORDERS_READ,
    calls,
    follow,
    listed_stock,
    order_sync_history,
    polled,
    seen_lines,
)


async def test_sales_on_several_listings_leave_each_stock_at_back_markets_in_one_poll(
    service: Any,
) -> None:
    sim = service.simulator
    twice, once, basket = [await follow(service, i, quantity=10) for i in (0, 1, 2)]
    first = sim.place_order(twice.listing_id, 1)
    second = sim.place_order(twice.listing_id, 2)
    single = sim.place_order(once.listing_id, 3)
    both = sim.place_basket([(basket.listing_id, 1), (once.listing_id, 1)])

    outcome = await polled(service)

    for followed in (twice, once, basket):
        expected = sim.quantity_of(followed.listing_id)
        assert await listed_stock(service.engine, followed.variation_id) == (expected, expected)
    assert [sim.quantity_of(f.listing_id) for f in (twice, once, basket)] == [7, 6, 9]
    assert [dict(row) for row in await order_sync_history(service.engine, twice.variation_id)] == [
        {
            "listed_stock_before": 10,
            "listed_stock_after": 7,
            "quantity_change": -3,
            "order_id": first.order_id,
            "order_item_id": first.line_id,
        }
    ]
    [once_row] = await order_sync_history(service.engine, once.variation_id)
    assert (once_row["order_id"], once_row["order_item_id"]) == (single.order_id, single.line_id)
    [basket_row] = await order_sync_history(service.engine, basket.variation_id)
    assert (basket_row["order_id"], basket_row["order_item_id"]) == (both.order_id, both.line_id)
    assert set(await seen_lines(service.engine)) == {
        first.line_id,
        second.line_id,
        single.line_id,
        *both.line_ids,
    }
    # One feed page and one read per listing, however many of its lines the poll brought.
    assert calls(sim, ORDERS_READ) == 1
    assert calls(sim, LISTING_READ) == 3
    assert (outcome.orders, outcome.new_lines, outcome.listings_refreshed) == (4, 5, 3)
    assert (outcome.calls, outcome.error) == (4, None)


async def test_a_sale_of_a_listing_no_variation_follows_is_recorded_without_a_listing_read(
    service: Any,
) -> None:
    sim = service.simulator
    followed = await follow(service, 0)
    stranger = sim.store.identity(5)
    sim.set_quantity(stranger.listing_id, 4)
    placed = sim.place_order(stranger.listing_id, 1)

    outcome = await polled(service)

    assert calls(sim, LISTING_READ) == 0
    assert (outcome.new_lines, outcome.listings_refreshed) == (1, 0)
    assert await seen_lines(service.engine) == {placed.line_id: 1}
    assert await listed_stock(service.engine, followed.variation_id) == (10, 10)


@pytest.mark.parametrize("state", [4, 5, 6], ids=["cancelled", "refunded", "refunded_shipped"])
async def test_a_cancelled_or_refunded_line_raises_the_stock_back_at_the_next_poll(
    service: Any, state: int
) -> None:
    sim = service.simulator
    followed = await follow(service, 3, quantity=5)
    placed = sim.place_order(followed.listing_id, 2)
    await polled(service)
    assert await listed_stock(service.engine, followed.variation_id) == (3, 3)

    sim.cancel_line(placed.order_id, placed.line_id, state)
    outcome = await polled(service)

    assert sim.quantity_of(followed.listing_id) == 5
    assert await listed_stock(service.engine, followed.variation_id) == (5, 5)
    assert [
        (row["quantity_change"], row["order_id"], row["order_item_id"])
        for row in await order_sync_history(service.engine, followed.variation_id)
    ] == [(-2, placed.order_id, placed.line_id), (2, placed.order_id, placed.line_id)]
    assert await seen_lines(service.engine) == {placed.line_id: state}
    assert outcome.listings_refreshed == 1


async def test_a_line_matches_a_variation_by_sku_when_no_variation_has_its_listing_id(
    service: Any,
) -> None:
    sim = service.simulator
    followed = await follow(service, 4, quantity=6, by="sku")
    placed = sim.place_order(followed.sku, 2)

    outcome = await polled(service)

    assert outcome.listings_refreshed == 1
    assert await listed_stock(service.engine, followed.variation_id) == (4, 4)
    [row] = await order_sync_history(service.engine, followed.variation_id)
    assert (row["quantity_change"], row["order_item_id"]) == (-2, placed.line_id)
    assert calls(sim, LISTING_READ) == 1


async def test_orders_over_several_feed_pages_are_all_read_and_each_listing_read_once(
    service: Any,
) -> None:
    sim = service.simulator
    one, other = await follow(service, 0, quantity=40), await follow(service, 1, quantity=40)
    for _ in range(30):
        sim.place_order(one.listing_id, 1)
        sim.place_order(other.listing_id, 1)

    outcome = await polled(service)

    assert calls(sim, ORDERS_READ) == 2  # 60 orders, 50 a page
    assert calls(sim, LISTING_READ) == 2
    assert (outcome.orders, outcome.new_lines, outcome.calls) == (60, 60, 4)
    assert await listed_stock(service.engine, one.variation_id) == (10, 10)
    assert await listed_stock(service.engine, other.variation_id) == (10, 10)
    assert len(await seen_lines(service.engine)) == 60


async def test_an_order_back_market_lists_only_once_paid_is_applied_at_the_poll_after_payment(
    service: Any,
) -> None:
    sim = service.simulator
    followed = await follow(service, 0, quantity=5)
    hidden = sim.place_order(followed.listing_id, 1, hidden=True)

    unseen = await polled(service)
    assert (unseen.orders, unseen.listings_refreshed) == (0, 0)
    # Back Market lowered the quantity already; the database cannot know yet.
    assert await listed_stock(service.engine, followed.variation_id) == (5, 5)

    sim.pay_order(hidden.order_id)
    outcome = await polled(service)

    assert outcome.listings_refreshed == 1
    assert await listed_stock(service.engine, followed.variation_id) == (4, 4)
    [row] = await order_sync_history(service.engine, followed.variation_id)
    assert row["order_item_id"] == hidden.line_id
