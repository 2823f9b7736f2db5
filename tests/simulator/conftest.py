"""Fixtures for the simulator's own tests: an in-process app and a client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from simulator import SimulatorConfig, SimulatorState, create_simulator_app

TOKEN = "test-token"
CLIENT_HEADERS = {
    "Authorization": f"Basic {TOKEN}",
    "User-Agent": "BM-StockSync-SimulatorTests;qa@example.com",
    "Accept": "application/json",
}


class FakeClock:
    """Monotonic time that moves only when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeWallClock:
    """Calendar time (for order dates) that moves only when a test says so."""

    def __init__(self, start: datetime = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_config(**overrides: Any) -> SimulatorConfig:
    return SimulatorConfig(**{"listings": 120, "token": TOKEN, **overrides})


def client_for(app: FastAPI, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://bm.test",
        headers={**CLIENT_HEADERS, **headers},
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def wall_clock() -> FakeWallClock:
    return FakeWallClock()


@pytest.fixture
def config() -> SimulatorConfig:
    return make_config()


@pytest.fixture
def app(config: SimulatorConfig, clock: FakeClock, wall_clock: FakeWallClock) -> FastAPI:
    return create_simulator_app(config, clock=clock, wall_clock=wall_clock)


@pytest.fixture
def state(app: FastAPI) -> SimulatorState:
    sim: SimulatorState = app.state.sim
    return sim


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as http:
        yield http
