"""GET /ws/orders: what it lists, its filters and pages, and the edge in front of it."""

from __future__ import annotations

from typing import Any

import httpx

from simulator import PlacedOrder, SimulatorState, create_simulator_app
from tests.simulator.conftest import FakeClock, FakeWallClock, client_for, make_config

LISTING = 100000


def place(state: SimulatorState, wall_clock: FakeWallClock, count: int) -> list[PlacedOrder]:
    """``count`` paid orders of one unit of LISTING, one second apart."""
    state.set_quantity(LISTING, count)
    placed = []
    for _ in range(count):
        placed.append(state.place_order(LISTING))
        wall_clock.advance(1)
    return placed


async def listed_ids(client: httpx.AsyncClient, **params: Any) -> list[int]:
    page = (await client.get("/ws/orders", params={"page-size": 50, **params})).json()
    return [order["order_id"] for order in page["results"]]


async def test_paid_order_is_listed_with_its_line(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    listing = state.listing(LISTING)
    state.set_quantity(LISTING, 5)

    placed = state.place_order(LISTING, 2)
    page = (await client.get("/ws/orders")).json()

    [order] = page["results"]
    assert (page["count"], page["next"], page["previous"]) == (1, None, None)
    assert order["order_id"] == placed.order_id
    assert order["state"] == 1
    assert order["country_code"] == "fr-fr"
    assert (
        order["date_creation"]
        == order["date_modification"]
        == order["date_payment"]
        == "2024-05-01T12:00:00.000000Z"
    )
    [line] = order["orderlines"]
    assert line["id"] == placed.line_id
    assert (line["listing"], line["listing_id"]) == (listing["sku"], listing["listing_id"])
    assert (line["quantity"], line["state"], line["price"]) == (2, 1, listing["price"])
    assert line["date_creation"] == order["date_creation"]


async def test_an_order_lowers_the_listing_quantity_when_placed(state: SimulatorState) -> None:
    state.set_quantity(LISTING, 5)

    state.place_order(LISTING, 2)
    state.place_order(LISTING, 1, hidden=True)

    assert state.quantity_of(LISTING) == 2


async def test_a_basket_has_one_line_per_listing(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    state.set_quantity(LISTING, 3)
    state.set_quantity("SKU-0000002", 3)

    placed = state.place_basket([(LISTING, 1), ("SKU-0000002", 3)])
    [order] = (await client.get("/ws/orders")).json()["results"]

    assert [line["id"] for line in order["orderlines"]] == list(placed.line_ids)
    assert [(line["listing"], line["quantity"]) for line in order["orderlines"]] == [
        ("SKU-0000001", 1),
        ("SKU-0000002", 3),
    ]
    assert (state.quantity_of(LISTING), state.quantity_of("SKU-0000002")) == (2, 0)


async def test_pages_are_linked_by_absolute_next_urls_that_keep_the_filters(
    client: httpx.AsyncClient, state: SimulatorState, wall_clock: FakeWallClock
) -> None:
    placed = place(state, wall_clock, 23)
    since = "2024-05-01T12:00:00Z"

    first = (
        await client.get("/ws/orders", params={"date_modification": since, "page-size": 10})
    ).json()
    second = (await client.get(first["next"])).json()
    third = (await client.get(second["next"])).json()

    assert first["count"] == 23
    assert first["next"] == (
        "http://bm.test/ws/orders?date_modification=2024-05-01T12%3A00%3A00Z&page=2&page-size=10"
    )
    assert second["previous"] == (
        "http://bm.test/ws/orders?date_modification=2024-05-01T12%3A00%3A00Z&page-size=10"
    )
    assert third["next"] is None
    read = [o["order_id"] for page in (first, second, third) for o in page["results"]]
    assert read == [p.order_id for p in placed]


async def test_page_size_defaults_to_10_and_is_capped_at_50(
    client: httpx.AsyncClient, state: SimulatorState, wall_clock: FakeWallClock
) -> None:
    place(state, wall_clock, 55)

    default = (await client.get("/ws/orders")).json()
    capped = (await client.get("/ws/orders", params={"page-size": 500})).json()

    assert (len(default["results"]), len(capped["results"])) == (10, 50)
    assert capped["next"] == "http://bm.test/ws/orders?page=2&page-size=500"


async def test_page_beyond_the_end_is_404_but_an_empty_first_page_is_not(
    client: httpx.AsyncClient,
) -> None:
    empty = await client.get("/ws/orders")
    beyond = await client.get("/ws/orders", params={"page": 2})

    assert empty.status_code == 200
    assert empty.json() == {"count": 0, "next": None, "previous": None, "results": []}
    assert beyond.status_code == 404


async def test_orders_come_by_modification_date_then_id(
    client: httpx.AsyncClient, state: SimulatorState, wall_clock: FakeWallClock
) -> None:
    first, second, third = place(state, wall_clock, 3)

    state.cancel_line(first.order_id, first.line_id)

    assert await listed_ids(client) == [second.order_id, third.order_id, first.order_id]


async def test_date_creation_means_created_at_or_after(
    client: httpx.AsyncClient, state: SimulatorState, wall_clock: FakeWallClock
) -> None:
    placed = place(state, wall_clock, 4)

    listed = await listed_ids(client, date_creation="2024-05-01T12:00:02Z")

    assert listed == [p.order_id for p in placed[2:]]


async def test_date_modification_means_modified_at_or_after(
    client: httpx.AsyncClient, state: SimulatorState, wall_clock: FakeWallClock
) -> None:
    first, second, third = place(state, wall_clock, 3)
    # Now 12:00:03: a cancellation of the first order is a modification.
    state.cancel_line(first.order_id, first.line_id)

    since_second = await listed_ids(client, date_modification="2024-05-01T12:00:01Z")
    since_cancel = await listed_ids(client, date_modification="2024-05-01T12:00:03Z")
    created_since_second = await listed_ids(client, date_creation="2024-05-01T12:00:01Z")

    assert since_second == [second.order_id, third.order_id, first.order_id]
    assert since_cancel == [first.order_id]
    assert created_since_second == [second.order_id, third.order_id]


async def test_dates_with_offsets_compare_as_instants(
    client: httpx.AsyncClient, state: SimulatorState, wall_clock: FakeWallClock
) -> None:
    placed = place(state, wall_clock, 3)

    # 14:00:01+02:00 is 12:00:01Z.
    listed = await listed_ids(client, date_modification="2024-05-01T14:00:01+02:00")

    assert listed == [p.order_id for p in placed[1:]]


async def test_a_date_that_is_not_rfc_3339_is_400(client: httpx.AsyncClient) -> None:
    # An unencoded "+" arrives as a space.
    plus_as_space = await client.get("/ws/orders?date_modification=2024-05-01T12:00:00+00:00")
    words = await client.get("/ws/orders", params={"date_creation": "yesterday"})

    assert (plus_as_space.status_code, words.status_code) == (400, 400)
    assert plus_as_space.json()["error"]["code"] == "invalid_request"


async def test_state_filter_lists_that_state_and_never_0_or_8(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    state.set_quantity(LISTING, 5)
    paid = state.place_order(LISTING)
    state.place_order(LISTING, hidden=True)
    unpaid = state.place_order(LISTING, hidden=True)
    state.fail_payment(unpaid.order_id)

    assert await listed_ids(client, state=1) == [paid.order_id]
    assert await listed_ids(client, state=0) == []
    assert await listed_ids(client, state=8) == []
    assert await listed_ids(client, state=9) == []
    assert (await client.get("/ws/orders", params={"state": 2})).status_code == 400


async def test_country_code_filter(client: httpx.AsyncClient, state: SimulatorState) -> None:
    state.set_quantity(LISTING, 5)
    french = state.place_order(LISTING)
    british = state.place_order(LISTING, market="en-gb")

    assert await listed_ids(client, country_code="en-gb") == [british.order_id]
    assert await listed_ids(client, country_code="fr-fr") == [french.order_id]
    assert state.order(british.order_id)["currency"] == "GBP"


async def test_a_poll_with_no_new_orders_costs_one_call(
    client: httpx.AsyncClient, state: SimulatorState, wall_clock: FakeWallClock
) -> None:
    place(state, wall_clock, 2)
    state.reset_stats()

    page = (
        await client.get("/ws/orders", params={"date_modification": "2024-05-01T13:00:00Z"})
    ).json()

    assert page["results"] == []
    assert state.stats()["total_requests"] == 1
    assert state.stats()["by_endpoint"] == {"GET /ws/orders 200": 1}


async def test_orders_need_the_token(app: Any) -> None:
    async with client_for(app, Authorization="Basic wrong") as http:
        response = await http.get("/ws/orders")

    assert response.status_code == 401


async def test_orders_share_the_rate_limit_with_listings(clock: FakeClock) -> None:
    app = create_simulator_app(make_config(requests_per_10s=3), clock=clock)
    async with client_for(app) as http:
        answered = [
            (await http.get("/ws/listings")).status_code,
            (await http.get("/ws/orders")).status_code,
            (await http.get("/ws/orders")).status_code,
            (await http.get("/ws/orders")).status_code,
        ]

    assert answered == [200, 200, 200, 429]
    assert app.state.sim.stats()["by_endpoint"]["GET /ws/orders 429"] == 1


async def test_queued_faults_apply_to_orders(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    state.fail_next("/ws/orders", kind="503")

    failed = await client.get("/ws/orders")
    recovered = await client.get("/ws/orders")

    assert (failed.status_code, recovered.status_code) == (503, 200)


async def test_truncate_gives_a_short_orders_page_that_is_not_the_last(
    client: httpx.AsyncClient, state: SimulatorState, wall_clock: FakeWallClock
) -> None:
    place(state, wall_clock, 12)
    state.fail_next("/ws/orders", kind="truncate")

    page = (await client.get("/ws/orders")).json()

    assert len(page["results"]) == 5
    assert page["next"] is not None
