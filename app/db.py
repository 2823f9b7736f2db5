"""The async engine for SQLite (embedded default) and MySQL/MariaDB (production)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app.config import Settings

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Execution option of a connection that only reads (see `reading`).
READ_ONLY = "stock_sync_read_only"
CONFLICT_ATTEMPTS = 3

T = TypeVar("T")


def create_engine(settings: Settings | str, *, pool_size: int | None = None) -> AsyncEngine:
    """Build the engine; SQLite gets WAL, a busy timeout and IMMEDIATE write transactions."""
    url = settings if isinstance(settings, str) else settings.database_url
    size = pool_size or (10 if isinstance(settings, str) else settings.database_pool_size)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _configure_sqlite(engine)
        return engine
    engine = create_async_engine(
        url,
        # READ COMMITTED: the set-based stock writes lock the rows they read and no index gaps,
        # so writers of neighbouring variations do not deadlock on next-key locks.
        isolation_level="READ COMMITTED",
        pool_size=size,
        max_overflow=size,
        pool_pre_ping=True,
        pool_recycle=1800,
        pool_timeout=30,
    )
    _configure_mysql(engine)
    return engine


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when a transaction begins.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(READ_ONLY):
            # Reads only: a snapshot of the last commit (WAL), never waiting for a writer.
            connection.exec_driver_sql("BEGIN DEFERRED")
            return
        # A deferred transaction that reads then writes fails with SQLITE_BUSY when another
        # writer committed in between; IMMEDIATE takes the write lock up front and waits instead.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _configure_mysql(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SET time_zone = '+00:00'")
        cursor.close()


# MySQL/MariaDB: deadlock found, lock wait timeout. The transaction was rolled back whole and
# can be run again.
RETRYABLE_MYSQL_ERRORS = frozenset({1213, 1205})


def is_retryable_conflict(exc: BaseException) -> bool:
    """A write that lost a lock conflict and was rolled back, so running it again is safe."""
    args: tuple[object, ...] = tuple(getattr(getattr(exc, "orig", None), "args", ()))
    return bool(args) and args[0] in RETRYABLE_MYSQL_ERRORS


def is_mysql(engine: AsyncEngine | AsyncConnection) -> bool:
    return engine.dialect.name in ("mysql", "mariadb")


@asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for reads only. On SQLite its transaction is deferred, so a read during a
    bulk sync answers from the last commit instead of queueing behind the sync's write
    transactions; on MySQL/MariaDB (READ COMMITTED, no read locks) it is a plain connection."""
    async with engine.connect() as conn:
        yield await conn.execution_options(**{READ_ONLY: True})


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A short transaction: committed on success, rolled back on error."""
    async with engine.begin() as conn:
        yield conn


async def in_transaction(
    engine: AsyncEngine,
    work: Callable[[AsyncConnection], Awaitable[T]],
    *,
    attempts: int = CONFLICT_ATTEMPTS,
    on_conflict: Callable[[sa.exc.DBAPIError], None] | None = None,
) -> T:
    """Run `work` in a short transaction, again from scratch when it lost a lock conflict.

    For writes that must land: once something irreversible happened (Back Market already
    holds the new quantity) a deadlock must not become an error the caller retries, and a bulk
    sync batch that lost one must not fail its run. `work` may run more than once, so only
    what it returns may count, never state it changed on the way. `on_conflict` hears of each
    conflict about to be retried.
    """
    for attempt in range(1, attempts + 1):
        try:
            async with engine.begin() as conn:
                return await work(conn)
        except sa.exc.DBAPIError as exc:
            if attempt == attempts or not is_retryable_conflict(exc):
                raise
            if on_conflict is not None:
                on_conflict(exc)
    raise AssertionError("unreachable")


def describe_error(exc: BaseException, *, statement_chars: int = 80) -> str:
    """`Type: message` for a run's errors and answers. A database error is told by the driver's
    own error and the start of its statement, not SQLAlchemy's full text (the whole statement,
    its parameters and a link: kilobytes for a batch write)."""
    if isinstance(exc, sa.exc.StatementError) and exc.orig is not None:
        statement = " ".join((exc.statement or "").split())
        if len(statement) > statement_chars:
            statement = statement[:statement_chars] + "…"
        return f"{type(exc.orig).__name__}: {exc.orig} (during: {statement})"
    return f"{type(exc).__name__}: {exc}"


async def database_now(conn: AsyncConnection) -> Any:
    """The database's own clock (naive UTC), the clock that change times are written with."""
    if is_mysql(conn):
        return (await conn.execute(sa.text("SELECT UTC_TIMESTAMP(6)"))).scalar_one()
    from datetime import datetime

    raw = (await conn.execute(sa.text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')"))).scalar_one()
    return datetime.fromisoformat(raw)


def now_expression(conn: AsyncConnection | AsyncEngine) -> sa.ColumnElement[Any]:
    """SQL for "now" in the database clock, with sub-second precision."""
    if is_mysql(conn):
        return sa.func.utc_timestamp(6)
    return sa.func.strftime("%Y-%m-%d %H:%M:%f000", "now")


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(sa.text("SELECT 1"))
