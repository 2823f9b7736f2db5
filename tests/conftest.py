"""Shared fixtures: a migrated database on SQLite always and on MariaDB when TEST_MYSQL_URL is set.

Each backend's database is created and migrated once per session; every test starts from
empty tables (plus marketplace 1 'BackMarket' and 4 'Refurbed').
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from hypothesis import Phase
from hypothesis import settings as hypothesis_settings
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import MarketplaceVariables, Settings
from app.db import create_engine
from app.migrate import run_migrations
from simulator.app import create_simulator_app
from simulator.config import SimulatorConfig

TEST_MYSQL_URL = os.environ.get("TEST_MYSQL_URL")
MYSQL_SKIP_REASON = "TEST_MYSQL_URL is not set (e.g. mysql+aiomysql://root@127.0.0.1:3306/test)"
SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"

# `--hypothesis-profile=mutmut` (setup.cfg [mutmut]): a mutant is killed by the first failing
# example, so the minutes Hypothesis spends shrinking it are skipped.
hypothesis_settings.register_profile("mutmut", phases=[Phase.explicit, Phase.reuse, Phase.generate])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "watcher_off(reason): the service runs without its orders watcher (the reason says why)",
    )


DATA_TABLES = (
    "marketplace_stock_history",
    "marketplace_stock",
    "stock_sync_logs",
    "idempotency_keys",
    "backmarket_listing_updates",
    "backmarket_order_lines",
    "backmarket_stock_additions",
    "backmarket_order_watch",
    "variation",
    "marketplace",
)


def mysql_database_url(suffix: str) -> str:
    """A database of its own beside TEST_MYSQL_URL's, named `<db>_<suffix>`."""
    assert TEST_MYSQL_URL is not None
    url = make_url(TEST_MYSQL_URL)
    return url.set(database=f"{url.database}_{suffix}").render_as_string(hide_password=False)


async def recreate_mysql_database(url: str) -> None:
    target = make_url(url)
    server = create_engine(
        target.set(database=make_url(TEST_MYSQL_URL or url).database).render_as_string(
            hide_password=False
        )
    )
    async with server.begin() as conn:
        await conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{target.database}`"))
        await conn.execute(sa.text(f"CREATE DATABASE `{target.database}`"))
    await server.dispose()


async def prepare_database(url: str) -> None:
    if url.startswith("mysql"):
        await recreate_mysql_database(url)
    engine = create_engine(url)
    await run_migrations(engine)
    await engine.dispose()


@pytest.fixture(scope="session")
def database_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    urls = {"sqlite": f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'stock_sync.db'}"}
    if TEST_MYSQL_URL:
        urls["mysql"] = mysql_database_url(f"stock_sync_{os.getpid()}")
    for url in urls.values():
        asyncio.run(prepare_database(url))
    yield urls
    if "mysql" in urls:
        asyncio.run(_drop_mysql_database(urls["mysql"]))


async def _drop_mysql_database(url: str) -> None:
    target = make_url(url)
    server = create_engine(TEST_MYSQL_URL or url)
    async with server.begin() as conn:
        await conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{target.database}`"))
    await server.dispose()


async def empty_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for table in DATA_TABLES:
            await conn.execute(sa.text(f"DELETE FROM {table}"))
        await conn.execute(
            sa.text("INSERT INTO marketplace (id, name) VALUES (1, 'BackMarket'), (4, 'Refurbed')")
        )


@pytest.fixture(params=["sqlite", "mysql"])
def db_url(request: pytest.FixtureRequest, database_urls: dict[str, str]) -> str:
    """The URL of a migrated database; the test runs once per backend."""
    if request.param not in database_urls:
        pytest.skip(MYSQL_SKIP_REASON)
    return database_urls[request.param]


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on emptied tables of the test's backend."""
    engine = create_engine(db_url)
    await empty_tables(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def watcher_off(request: pytest.FixtureRequest) -> bool:
    """Whether the service runs without its orders watcher: the watcher runs at its default
    (first poll at start-up) unless the test, its module (`pytestmark`) or its folder (an
    override of this fixture) says `@pytest.mark.watcher_off("why")`."""
    return request.node.get_closest_marker("watcher_off") is not None


@pytest.fixture
def make_settings(db_url: str, watcher_off: bool) -> Callable[..., Settings]:
    """Settings for the test's database; keyword overrides win."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": db_url,
            "backmarket_base_url": "http://bm.test",
            "backmarket_token": "sim-token",
            "backmarket_user_agent": "BM-Tests-StockSync;tests@example.com",
            "sync_interval_minutes": 0,
            "run_migrations_on_startup": False,
        }
        if watcher_off:
            values["order_sync_interval_seconds"] = 0
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    if not SHARED_DIR.is_dir():
        pytest.skip(f"{SHARED_DIR} (the project's shared/ folder) is not beside the repository")
    yield SHARED_DIR


# --- the service wired to an in-process simulator -------------------------------------------


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    """Override in a test module (or parametrize) for another catalogue or faults."""
    return SimulatorConfig(listings=120, seed=7)


@pytest.fixture
def simulator_app(simulator_config: SimulatorConfig) -> FastAPI:
    return create_simulator_app(simulator_config)


@pytest.fixture
def simulator(simulator_app: FastAPI) -> Any:
    """The simulator's state: its catalogue and control methods (set_quantity, hold, stats…)."""
    return simulator_app.state.sim


def unreachable_database_url(backend: str, tmp_path: Path) -> str:
    """A database URL of `backend` that cannot be connected to: no server on the port, or a
    SQLite file in a folder that does not exist."""
    if backend == "mysql":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        return f"mysql+aiomysql://root@127.0.0.1:{port}/stock_sync"
    return f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'stock_sync.db'}"


@dataclass
class ServiceHarness:
    app: FastAPI
    http: httpx.AsyncClient
    settings: Settings
    engine: AsyncEngine
    simulator: Any


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module to change the service's settings.

    By default: two attempts, so "after the client's retries" is exercised quickly, and a
    request budget far above what tests send, so the client never paces them.
    """
    return {"backmarket_requests_per_10s": 10_000, "backmarket_max_attempts": 2}


@pytest.fixture
async def service(
    engine: AsyncEngine,
    make_settings: Callable[..., Settings],
    settings_overrides: dict[str, Any],
    simulator_app: FastAPI,
) -> AsyncIterator[ServiceHarness]:
    """The running service (lifespan included) talking to the in-process simulator."""
    settings = make_settings(**settings_overrides)
    async with running_harness(
        settings, httpx.ASGITransport(app=simulator_app), simulator_app
    ) as harness:
        yield harness


# A second Back Market account (say, the US platform), configured beside marketplace 1.
SECOND_ACCOUNT = 7


@dataclass
class TwoAccounts:
    """The service with marketplace 1 on `service.simulator` and marketplace 7, a second Back
    Market account, on a simulator of its own (`second`)."""

    service: ServiceHarness
    second: Any


@pytest.fixture
def second_simulator_app() -> FastAPI:
    return create_simulator_app(SimulatorConfig(listings=60, seed=11))


@pytest.fixture
async def two_accounts(
    engine: AsyncEngine,
    make_settings: Callable[..., Settings],
    settings_overrides: dict[str, Any],
    simulator_app: FastAPI,
    second_simulator_app: FastAPI,
) -> AsyncIterator[TwoAccounts]:
    settings = make_settings(
        **settings_overrides,
        marketplaces={
            SECOND_ACCOUNT: MarketplaceVariables(
                kind="backmarket",
                token="sim-token",
                base_url="http://bm-us.test",
                requests_per_10s=10_000,
            )
        },
    )
    async with running_harness(
        settings,
        httpx.ASGITransport(app=simulator_app),
        simulator_app,
        marketplace_transports={SECOND_ACCOUNT: httpx.ASGITransport(app=second_simulator_app)},
    ) as harness:
        yield TwoAccounts(service=harness, second=second_simulator_app.state.sim)


@asynccontextmanager
async def running_harness(
    settings: Settings,
    backmarket_transport: httpx.AsyncBaseTransport,
    simulator_app: FastAPI,
    *,
    marketplace_transports: Mapping[int, httpx.AsyncBaseTransport] | None = None,
) -> AsyncIterator[ServiceHarness]:
    """The app with its lifespan, its Back Market client sent through `backmarket_transport`
    and any other configured marketplace's through `marketplace_transports` (by id)."""
    from app.main import create_app

    backmarket_http = httpx.AsyncClient(
        transport=backmarket_transport, base_url=settings.backmarket_base_url
    )
    bases = {config.id: config.base_url for config in settings.marketplace_settings()}
    marketplace_http = {
        marketplace_id: httpx.AsyncClient(transport=transport, base_url=bases[marketplace_id])
        for marketplace_id, transport in (marketplace_transports or {}).items()
    }
    app = create_app(settings, backmarket_http=backmarket_http, marketplace_http=marketplace_http)
    async with LifespanManager(app):
        # Tests assert behaviour, never timing: retries go at once.
        for adapter in app.state.container.ctx.marketplaces:
            if adapter.kind == "backmarket":
                adapter.client.backoff_base_seconds = 0.0
                adapter.client.backoff_cap_seconds = 0.0
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://stock-sync.test"
        ) as http:
            yield ServiceHarness(
                app=app,
                http=http,
                settings=settings,
                engine=app.state.container.ctx.engine,
                simulator=simulator_app.state.sim,
            )
    await backmarket_http.aclose()
    for http in marketplace_http.values():
        await http.aclose()
