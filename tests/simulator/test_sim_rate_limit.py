"""The Cloudflare-like limit: N requests per 10 s, then 429 for 10 s."""

from __future__ import annotations

import httpx

from simulator import SimulatorState, create_simulator_app
from tests.simulator.conftest import FakeClock, client_for, make_config


def limited_app(clock: FakeClock, **overrides: object) -> tuple[httpx.AsyncClient, SimulatorState]:
    app = create_simulator_app(make_config(requests_per_10s=3, **overrides), clock=clock)
    return client_for(app), app.state.sim


async def statuses(http: httpx.AsyncClient, count: int) -> list[int]:
    return [(await http.get("/ws/listings")).status_code for _ in range(count)]


async def test_request_over_the_limit_is_429_and_blocks_for_10s(clock: FakeClock) -> None:
    http, state = limited_app(clock)
    async with http:
        first = await statuses(http, 4)
        clock.advance(9.9)
        still_blocked = await statuses(http, 1)
        clock.advance(0.2)
        after_block = await statuses(http, 1)

    assert first == [200, 200, 200, 429]
    assert still_blocked == [429]
    assert after_block == [200]
    assert state.stats()["status_429"] == 2


async def test_requests_spread_over_the_window_are_not_limited(clock: FakeClock) -> None:
    http, _ = limited_app(clock)
    async with http:
        answered = []
        for _ in range(9):
            answered += await statuses(http, 1)
            clock.advance(3.4)

    assert answered == [200] * 9


async def test_429_has_no_retry_after_by_default(clock: FakeClock) -> None:
    http, _ = limited_app(clock)
    async with http:
        await statuses(http, 3)
        refused = await http.get("/ws/listings")

    assert refused.status_code == 429
    assert "retry-after" not in refused.headers
    assert refused.json()["error"]["code"] == "too_many_requests"


async def test_429_can_send_retry_after_with_the_time_left(clock: FakeClock) -> None:
    http, _ = limited_app(clock, send_retry_after=True)
    async with http:
        await statuses(http, 4)
        clock.advance(6.5)
        refused = await http.get("/ws/listings")

    assert refused.headers["retry-after"] == "4"


async def test_control_api_is_never_rate_limited(clock: FakeClock) -> None:
    http, _ = limited_app(clock)
    async with http:
        await statuses(http, 4)
        control = [(await http.get("/_sim/stats")).status_code for _ in range(5)]

    assert control == [200] * 5
