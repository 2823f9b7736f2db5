"""The engine helpers: retrying a write that lost a lock conflict."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import create_engine, in_transaction, is_retryable_conflict


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
