"""The watcher on its own schedule: an app started with ORDER_SYNC_INTERVAL_SECONDS=1 brings a
sale into the database without anyone asking (a bounded wait, not a timing assertion)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.main import create_app
from app.services.orders import watcher as watcher_module
from tests.orders.support import (
    another_process,
    follow,
    listed_stock,
    order_sync_history,
    polled,
    seen_lines,
)

GENEROUS_WAIT_S = 60.0


async def wait_until(check: Callable[[], Any], *, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GENEROUS_WAIT_S
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not happen within {GENEROUS_WAIT_S} s")
        await asyncio.sleep(0.05)


async def test_the_scheduled_watcher_brings_a_sale_into_the_database_on_its_own(
    engine: AsyncEngine,
    make_settings: Callable[..., Settings],
    simulator_app: FastAPI,
    simulator: Any,
) -> None:
    settings = make_settings(backmarket_requests_per_10s=10_000, order_sync_interval_seconds=1)
    followed = await follow(SimpleNamespace(simulator=simulator, engine=engine), 0, quantity=5)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=simulator_app), base_url=settings.backmarket_base_url
    ) as backmarket_http:
        app = create_app(settings, backmarket_http=backmarket_http)
        async with (
            LifespanManager(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://stock-sync.test"
            ) as http,
        ):

            async def status() -> dict[str, Any]:
                response = await http.get("/sync/orders")
                assert response.status_code == 200, response.text
                body: dict[str, Any] = response.json()
                return body

            async def polled_once() -> bool:
                return (await status())["last_poll"] is not None

            async def sale_shown() -> bool:
                return await listed_stock(engine, followed.variation_id) == (3, 3)

            await wait_until(polled_once, what="a first scheduled poll")
            placed = simulator.place_order(followed.listing_id, 2)
            await wait_until(sale_shown, what="the sale reaching the database")
            shown = await status()

    assert (shown["enabled"], shown["interval_seconds"]) == (True, 1)
    assert shown["watermark"] is not None
    [row] = await order_sync_history(engine, followed.variation_id)
    assert (row["quantity_change"], row["order_item_id"]) == (-2, placed.line_id)


async def test_stopping_the_app_during_a_scheduled_poll_ends_the_poll_and_keeps_nothing(
    engine: AsyncEngine,
    make_settings: Callable[..., Settings],
    simulator_app: FastAPI,
    simulator: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The poll held in the simulator outlasts the watcher's grace, well within the lifespan
    # manager's shutdown timeout.
    monkeypatch.setattr(watcher_module, "SHUTDOWN_GRACE_SECONDS", 0.5)
    settings = make_settings(backmarket_requests_per_10s=10_000, order_sync_interval_seconds=60)
    followed = await follow(SimpleNamespace(simulator=simulator, engine=engine), 0, quantity=5)
    placed = simulator.place_order(followed.listing_id, 1)
    hold = simulator.hold("/ws/listings/", method="GET")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=simulator_app), base_url=settings.backmarket_base_url
    ) as backmarket_http:
        app = create_app(settings, backmarket_http=backmarket_http)
        async with LifespanManager(app):
            # The poll at start-up has read the orders and waits on the listing read.
            await simulator.wait_held(hold)
        polls_left = [
            task
            for task in asyncio.all_tasks()
            if task.get_name() == "orders watcher poll" and not task.done()
        ]
    simulator.release(hold)

    assert polls_left == []
    assert hold.held == 0
    assert await seen_lines(engine) == {}
    assert await listed_stock(engine, followed.variation_id) == (5, 5)
    async with another_process(settings, simulator_app) as restarted:
        outcome = await polled(restarted)
    assert outcome.listings_refreshed == 1
    assert await listed_stock(engine, followed.variation_id) == (4, 4)
    assert await seen_lines(engine) == {placed.line_id: 1}
