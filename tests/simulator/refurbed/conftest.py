"""Fixtures for the Refurbed simulator's tests: an in-process app and a client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from simulator.refurbed import (
    RefurbedSimulatorConfig,
    RefurbedSimulatorState,
    create_refurbed_simulator_app,
)
from tests.simulator.conftest import FakeWallClock

TOKEN = "refurbed-test-token"
CLIENT_HEADERS = {"Authorization": f"Plain {TOKEN}", "Accept": "application/json"}
OFFERS = "/refb.merchant.v1.OfferService"
ORDERS = "/refb.merchant.v1.OrderService"


def make_config(**overrides: Any) -> RefurbedSimulatorConfig:
    return RefurbedSimulatorConfig(**{"offers": 250, "token": TOKEN, **overrides})


def client_for(app: FastAPI, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://refurbed.test",
        headers={**CLIENT_HEADERS, **headers},
    )


@pytest.fixture
def wall_clock() -> FakeWallClock:
    return FakeWallClock()


@pytest.fixture
def config() -> RefurbedSimulatorConfig:
    return make_config()


@pytest.fixture
def app(config: RefurbedSimulatorConfig, wall_clock: FakeWallClock) -> FastAPI:
    return create_refurbed_simulator_app(config, wall_clock=wall_clock)


@pytest.fixture
def state(app: FastAPI) -> RefurbedSimulatorState:
    sim: RefurbedSimulatorState = app.state.sim
    return sim


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as http:
        yield http
