"""The engine helpers: retrying a write that lost a lock conflict, reads beside a writer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import create_engine, describe_error, in_transaction, is_retryable_conflict, reading


def mysql_error(code: int) -> sa.exc.OperationalError:
    return sa.exc.OperationalError("UPDATE …", {}, Exception(code, "simulated"))


def test_deadlock_and_lock_wait_timeout_count_as_retryable_conflicts() -> None:
    assert is_retryable_conflict(mysql_error(1213))
    assert is_retryable_conflict(mysql_error(1205))
    assert not is_retryable_conflict(mysql_error(1062))
    assert not is_retryable_conflict(ValueError("not a database error"))


async def test_in_transaction_runs_the_work_again_after_a_deadlock(tmp_path: object) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/db.sqlite")
    attempts: list[int] = []

    async def work(conn: AsyncConnection) -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise mysql_error(1213)
        return int((await conn.execute(sa.text("SELECT 41 + 1"))).scalar_one())

    try:
        assert await in_transaction(engine, work) == 42
    finally:
        await engine.dispose()
    assert len(attempts) == 2


async def test_in_transaction_gives_up_on_other_errors_at_once(tmp_path: object) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/db.sqlite")
    attempts: list[int] = []

    async def work(conn: AsyncConnection) -> None:
        attempts.append(1)
        raise mysql_error(1062)

    try:
        with pytest.raises(sa.exc.OperationalError):
            await in_transaction(engine, work)
    finally:
        await engine.dispose()
    assert len(attempts) == 1


async def test_a_read_on_sqlite_answers_the_last_commit_while_a_writer_holds_its_transaction(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/db.sqlite")
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE stock (id INTEGER PRIMARY KEY, listed INT)"))
            await conn.execute(sa.text("INSERT INTO stock VALUES (1, 5)"))

        async def read() -> int:
            async with reading(engine) as conn:
                return int((await conn.execute(sa.text("SELECT listed FROM stock"))).scalar_one())

        async with engine.begin() as writer:  # BEGIN IMMEDIATE: holds SQLite's write lock
            await writer.execute(sa.text("UPDATE stock SET listed = 9"))
            # The writer commits only once the read is done: a read that queued for the
            # write lock would wait for the busy timeout (30 s) here, then fail.
            pending = asyncio.ensure_future(read())
            done, _ = await asyncio.wait({pending}, timeout=10)
            assert pending in done, "the read waited for the writer's transaction"
            assert pending.result() == 5

        assert await read() == 9
    finally:
        await engine.dispose()


def test_a_database_error_is_described_by_the_drivers_error_and_the_start_of_its_statement() -> (
    None
):
    statement = "INSERT INTO marketplace_stock (variation_id, listed_stock) VALUES " + ", ".join(
        ["(%s, %s)"] * 500
    )
    error = sa.exc.OperationalError(
        statement, list(range(1000)), Exception(2013, "Lost connection to server during query")
    )

    described = describe_error(error)

    assert described.startswith("Exception: (2013, 'Lost connection to server during query')")
    assert "(during: INSERT INTO marketplace_stock (variation_id, listed_stock) VALUES" in described
    assert len(described) < 200
    assert "999" not in described  # no parameters
    assert describe_error(RuntimeError("bug")) == "RuntimeError: bug"
