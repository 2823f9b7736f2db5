"""The client under test: respx behind it, time faked (nothing sleeps)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import respx

from app.services.backmarket import BackMarketClient
from tests.services.test_backmarket_client import BASE, FakeTime, client_settings


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(base_url=BASE, assert_all_called=False)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
async def http(router: respx.Router) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=BASE, transport=httpx.MockTransport(router.async_handler)
    ) as client:
        yield client


@pytest.fixture
def make_client(http: httpx.AsyncClient, fake_time: FakeTime) -> Callable[..., BackMarketClient]:
    def build(**overrides: Any) -> BackMarketClient:
        return BackMarketClient(
            client_settings(**overrides), http=http, sleep=fake_time.sleep, clock=fake_time.clock
        )

    return build
