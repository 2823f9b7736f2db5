"""Authorization: Basic <token> and the documented User-Agent."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from simulator import SimulatorState
from tests.simulator.conftest import client_for


@pytest.mark.parametrize(
    "authorization", [None, "Basic wrong-token", "Bearer test-token", "test-token"]
)
async def test_missing_or_wrong_token_is_401_error_response(
    app: FastAPI, authorization: str | None
) -> None:
    async with client_for(app) as http:
        if authorization is None:
            del http.headers["Authorization"]
        else:
            http.headers["Authorization"] = authorization
        response = await http.get("/ws/listings")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert response.headers["cf-ray"].endswith("-CDG")


async def test_bad_user_agent_is_served_but_counted(app: FastAPI, state: SimulatorState) -> None:
    async with client_for(app, **{"User-Agent": "python-httpx/0.28"}) as http:
        bad = await http.get("/ws/listings")
    async with client_for(app) as http:
        good = await http.get("/ws/listings")

    assert bad.status_code == good.status_code == 200
    assert state.stats()["bad_user_agent"] == 1


@pytest.mark.parametrize(
    ("user_agent", "documented"),
    [
        ("BM-Ebay-Invoices;contact@ebay.com", True),
        ("BM-bouygues-automations;contact@bouygues.fr", True),
        ("BM-Acme;ops@acme.test", False),
        ("Acme-Sync;ops@acme.test", False),
        ("BM-Acme-Sync", False),
        ("BM-Acme-Sync;not-an-email", False),
    ],
)
def test_user_agent_form(user_agent: str, documented: bool) -> None:
    from simulator.state import is_documented_user_agent

    assert is_documented_user_agent(user_agent) is documented
