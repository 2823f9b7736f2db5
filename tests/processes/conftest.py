"""Databases for the process tests: a SQLite file per test (copied from one migrated template),
and on MariaDB/MySQL (TEST_MYSQL_URL) a database of this suite's own, `<db>_proc_<pid>`,
migrated once and emptied before each test, so servers started here never meet another
test's data or locks (GET_LOCK names are scoped to the database)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import create_engine
from app.migrate import run_migrations
from tests.conftest import (
    MYSQL_SKIP_REASON,
    TEST_MYSQL_URL,
    empty_tables,
    mysql_database_url,
    recreate_mysql_database,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "processes: starts real server and simulator processes (runs by default)"
    )


async def _migrate(url: str) -> None:
    if url.startswith("mysql"):
        await recreate_mysql_database(url)
    engine = create_engine(url)
    await run_migrations(engine)
    await engine.dispose()


async def _drop(url: str) -> None:
    assert TEST_MYSQL_URL is not None
    server = create_engine(TEST_MYSQL_URL)
    async with server.begin() as conn:
        await conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{make_url(url).database}`"))
    await server.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("proc-template") / "stock_sync.db"
    asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def proc_mysql_url() -> Iterator[str | None]:
    if not TEST_MYSQL_URL:
        yield None
        return
    url = mysql_database_url(f"proc_{os.getpid()}")
    asyncio.run(_migrate(url))
    yield url
    asyncio.run(_drop(url))


@pytest.fixture(params=["sqlite", "mysql"])
def proc_db_url(
    request: pytest.FixtureRequest,
    sqlite_template: Path,
    proc_mysql_url: str | None,
    tmp_path: Path,
) -> str:
    """A migrated database the servers of one test share; the test runs once per backend."""
    if request.param == "sqlite":
        path = tmp_path / "stock_sync.db"
        shutil.copyfile(sqlite_template, path)
        return f"sqlite+aiosqlite:///{path}"
    if proc_mysql_url is None:
        pytest.skip(MYSQL_SKIP_REASON)
    return proc_mysql_url


@pytest.fixture
def proc_mysql_only(proc_mysql_url: str | None) -> str:
    """For tests that need a database shared by processes (SQLite's locks are per process)."""
    if proc_mysql_url is None:
        pytest.skip(MYSQL_SKIP_REASON)
    return proc_mysql_url


async def _emptied(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url)
    await empty_tables(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def proc_engine(proc_db_url: str) -> AsyncIterator[AsyncEngine]:
    """The test's own engine on the servers' database, tables emptied first."""
    async for engine in _emptied(proc_db_url):
        yield engine


@pytest.fixture
async def mysql_engine(proc_mysql_only: str) -> AsyncIterator[AsyncEngine]:
    async for engine in _emptied(proc_mysql_only):
        yield engine
