"""GET /healthz, /readyz and /metrics, and which of them API_KEYS protects."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.main import create_app
from tests.conftest import unreachable_database_url

pytestmark = pytest.mark.watcher_off("no simulator here: a poll would wait on an unreachable host")

API_KEY = "k-7f3a9c2e"


def service_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings built from arguments only, so the developer's environment cannot change them."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "backmarket_base_url": "http://bm.test",
        "backmarket_token": "sim-token",
        "backmarket_user_agent": "BM-Tests-StockSync;tests@example.com",
        "sync_interval_minutes": 0,
        "order_sync_interval_seconds": 0,
        "run_migrations_on_startup": False,
        "api_keys": [],
        "cors_origins": [],
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://stock-sync.test"
        ) as client,
    ):
        yield client


@pytest.fixture
def sqlite_url(database_urls: dict[str, str]) -> str:
    """The session's migrated SQLite database, for behaviour that does not depend on the backend."""
    return database_urls["sqlite"]


async def test_healthz_answers_200(sqlite_url: str) -> None:
    async with running_service(service_settings(sqlite_url)) as client:
        response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_answers_200_when_the_database_is_reachable(
    make_settings: Callable[..., Settings],
) -> None:
    async with running_service(make_settings(api_keys=[])) as client:
        response = await client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["database"] == "ok"


@pytest.mark.parametrize("backend", ["mysql", "sqlite"])
async def test_readyz_answers_503_with_the_reason_when_the_database_is_unreachable(
    backend: str, tmp_path: Path
) -> None:
    url = unreachable_database_url(backend, tmp_path)

    async with running_service(service_settings(url)) as client:
        response = await client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["database"].startswith("unreachable: ")
    assert len(body["database"]) > len("unreachable: ")


async def test_healthz_and_readyz_stay_open_when_api_keys_are_set(
    make_settings: Callable[..., Settings],
) -> None:
    async with running_service(make_settings(api_keys=[API_KEY])) as client:
        healthz = await client.get("/healthz")
        readyz = await client.get("/readyz")

    assert healthz.status_code == 200
    assert readyz.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"X-API-Key": "wrong-key"},
        {"Authorization": API_KEY},
    ],
    ids=["no-key", "wrong-bearer", "wrong-x-api-key", "key-without-bearer"],
)
async def test_metrics_answers_401_without_a_valid_key_when_api_keys_are_set(
    sqlite_url: str, headers: dict[str, str]
) -> None:
    async with running_service(service_settings(sqlite_url, api_keys=[API_KEY])) as client:
        response = await client.get("/metrics", headers=headers)

    assert response.status_code == 401
    assert "detail" in response.json()


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": f"Bearer {API_KEY}"}, {"X-API-Key": API_KEY}],
    ids=["bearer", "x-api-key"],
)
async def test_metrics_answers_200_with_a_valid_key_when_api_keys_are_set(
    sqlite_url: str, headers: dict[str, str]
) -> None:
    settings = service_settings(sqlite_url, api_keys=["other-key", API_KEY])
    async with running_service(settings) as client:
        response = await client.get("/metrics", headers=headers)

    assert response.status_code == 200


async def test_metrics_answers_prometheus_text_format(sqlite_url: str) -> None:
    async with running_service(service_settings(sqlite_url)) as client:
        response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = list(text_string_to_metric_families(response.text))
    assert families
    assert "# TYPE " in response.text
