"""The locks: named locks (scoped names, exclusion, waiting) and the per-variation lock's
process gate, which lets sections in by the connections they use."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db import is_mysql
from app.services.locks import (
    DEFAULT_SECTION_CONNECTIONS,
    MAX_BASE_NAME,
    MAX_LOCK_NAME,
    HeldLock,
    HeldVariation,
    LockBusy,
    NamedLocks,
    engine_lock_name,
    hold_variation,
    server_lock_name,
    variation_lock_name,
)


def hold(
    engine: AsyncEngine,
    settings: Settings,
    variation_id: int,
    *,
    wait: float,
    connections: int = DEFAULT_SECTION_CONNECTIONS,
) -> AbstractAsyncContextManager[HeldVariation]:
    return hold_variation(
        engine=engine,
        locks=NamedLocks(engine),
        settings=settings,
        variation_id=variation_id,
        wait_seconds=wait,
        connections=connections,
    )


async def assert_no_room(
    engine: AsyncEngine, settings: Settings, variation_id: int, *, connections: int
) -> None:
    """A section of `variation_id` is refused (LockBusy) within a short wait: no room left."""
    with pytest.raises(LockBusy):
        async with hold(engine, settings, variation_id, wait=0.05, connections=connections):
            pass


async def test_one_connection_sections_run_up_to_the_pool_size_at_once(
    engine: AsyncEngine, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(database_pool_size=4)

    async with AsyncExitStack() as stack:
        for variation_id in range(1, 5):
            await stack.enter_async_context(
                hold(engine, settings, variation_id, wait=1, connections=1)
            )
        await assert_no_room(engine, settings, 5, connections=1)


async def test_two_connection_sections_count_twice(
    engine: AsyncEngine, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(database_pool_size=4)

    async with AsyncExitStack() as stack:
        for variation_id in (1, 2):
            await stack.enter_async_context(hold(engine, settings, variation_id, wait=1))
        await assert_no_room(engine, settings, 3, connections=1)


async def test_a_two_connection_section_is_not_overtaken_by_one_connection_sections(
    engine: AsyncEngine, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(database_pool_size=2)
    order: list[str] = []
    release_first = asyncio.Event()

    async def section(name: str, variation_id: int, connections: int, until: asyncio.Event) -> None:
        async with hold(engine, settings, variation_id, wait=5, connections=connections):
            order.append(name)
            await until.wait()

    done = asyncio.Event()
    done.set()
    first = asyncio.create_task(section("first", 1, 1, release_first))
    await asyncio.sleep(0.05)
    two = asyncio.create_task(section("two", 2, 2, done))
    await asyncio.sleep(0.05)
    # One connection of the budget is free, but the two-connection section queues first.
    one = asyncio.create_task(section("one", 3, 1, done))
    await asyncio.sleep(0.05)
    assert order == ["first"]

    release_first.set()
    await asyncio.gather(first, two, one)

    assert order == ["first", "two", "one"]


async def test_a_section_that_gave_up_waiting_leaves_the_queue(
    engine: AsyncEngine, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(database_pool_size=2)

    async with hold(engine, settings, 1, wait=1, connections=1):
        await assert_no_room(engine, settings, 2, connections=2)
        # Had the two-connection waiter stayed queued, this one would wait behind it.
        async with hold(engine, settings, 3, wait=0.05, connections=1):
            pass


async def test_a_section_let_in_from_the_queue_takes_its_connections_from_the_budget(
    engine: AsyncEngine, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(database_pool_size=2)
    release_first = asyncio.Event()
    release_second = asyncio.Event()
    second_in = asyncio.Event()

    async def first() -> None:
        async with hold(engine, settings, 1, wait=1, connections=1):
            await release_first.wait()

    async def second() -> None:
        async with hold(engine, settings, 2, wait=5, connections=2):
            second_in.set()
            await release_second.wait()

    tasks = [asyncio.create_task(first())]
    await asyncio.sleep(0.05)
    tasks.append(asyncio.create_task(second()))
    await asyncio.sleep(0.05)
    release_first.set()
    await asyncio.wait_for(second_in.wait(), 5)

    # The queued section holds both connections of the budget: nobody else gets in.
    with pytest.raises(LockBusy) as busy:
        async with hold(engine, settings, 3, wait=0.05, connections=1):
            pass
    assert busy.value.name == variation_lock_name(3)
    release_second.set()
    await asyncio.gather(*tasks)
    async with hold(engine, settings, 3, wait=0.05, connections=2):
        pass


async def test_a_waiter_for_a_held_variation_gives_up_with_the_variations_lock_name(
    engine: AsyncEngine, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(database_pool_size=4)

    async with hold(engine, settings, 7, wait=1, connections=1):
        started = time.monotonic()
        with pytest.raises(LockBusy) as busy:
            async with hold(engine, settings, 7, wait=0.2, connections=1):
                pass
        waited = time.monotonic() - started

    assert busy.value.name == "stock_sync:variation:7"
    assert 0.15 <= waited < 2
    async with hold(engine, settings, 7, wait=0.05, connections=1):
        pass


async def test_a_pool_of_one_still_lets_a_two_connection_section_in(
    engine: AsyncEngine, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(database_pool_size=1)

    async with hold(engine, settings, 1, wait=0.5, connections=2) as held:
        assert await held.still_held()
        async with held.connection() as conn:
            assert (await conn.execute(sa.text("SELECT 1"))).scalar_one() == 1
        await assert_no_room(engine, settings, 2, connections=1)


async def test_a_waiter_cancelled_just_as_it_is_let_in_gives_its_connections_back(
    engine: AsyncEngine, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(database_pool_size=2)
    entered: list[int] = []

    async def waiter() -> None:
        async with hold(engine, settings, 2, wait=5, connections=1):
            entered.append(2)

    async with hold(engine, settings, 1, wait=1, connections=2):
        task = asyncio.create_task(waiter())
        await asyncio.sleep(0.05)
    # Leaving the section let the waiter in; it is cancelled before it could run.
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert entered == []
    async with hold(engine, settings, 3, wait=0.05, connections=2):
        pass


async def test_a_waiter_cancelled_in_the_queue_takes_no_connections(
    engine: AsyncEngine, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(database_pool_size=2)

    async def waiter() -> None:
        async with hold(engine, settings, 2, wait=5, connections=1):
            pass

    async with hold(engine, settings, 1, wait=1, connections=2):
        task = asyncio.create_task(waiter())
        await asyncio.sleep(0.05)
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    # The budget is whole again, and no bigger: two connections, then nothing.
    async with hold(engine, settings, 3, wait=0.05, connections=2):
        await assert_no_room(engine, settings, 4, connections=1)


def test_lock_names_are_scoped_to_their_database_within_64_characters() -> None:
    name = "n" * MAX_BASE_NAME
    fits = "d" * (MAX_LOCK_NAME - MAX_BASE_NAME - 1)
    too_long = fits + "d"

    assert server_lock_name("stock_sync:bulk:1", database=None) == "stock_sync:bulk:1"
    assert server_lock_name("stock_sync:bulk:1", database="") == "stock_sync:bulk:1"
    assert server_lock_name("stock_sync:bulk:1", database="prod") == "stock_sync:bulk:1@prod"
    assert server_lock_name(name, database=fits) == f"{name}@{fits}"
    digest = hashlib.sha1(too_long.encode()).hexdigest()[:16]
    assert server_lock_name(name, database=too_long) == f"{name}@{digest}"
    assert len(server_lock_name(name, database="x" * 200)) <= MAX_LOCK_NAME
    with pytest.raises(ValueError, match=f"longer than {MAX_BASE_NAME} characters: 'n+'"):
        server_lock_name(name + "n", database=None)
    assert (MAX_LOCK_NAME, MAX_BASE_NAME) == (64, 40)


async def test_a_named_lock_is_named_after_the_database_it_locks(engine: AsyncEngine) -> None:
    locks = NamedLocks(engine)
    database = engine.url.database if is_mysql(engine) else None

    expected = server_lock_name("stock_sync:bulk:1", database=database)
    assert locks.server_name("stock_sync:bulk:1") == expected
    assert engine_lock_name("stock_sync:bulk:1", engine) == expected
    assert ("@" in expected) is is_mysql(engine)


async def test_a_named_lock_excludes_others_until_released(engine: AsyncEngine) -> None:
    first, second = NamedLocks(engine), NamedLocks(engine)

    async with first.hold("mut:a", timeout=0) as held:
        assert await held.still_held()
        assert first.is_held_locally("mut:a") is not is_mysql(engine)
        with pytest.raises(LockBusy) as busy:
            async with second.hold("mut:a", timeout=0):
                pass
        assert busy.value.name.startswith("mut:a")
        assert str(busy.value) == f"lock {busy.value.name!r} is held elsewhere"
        started = time.monotonic()
        with pytest.raises(LockBusy):
            async with second.hold("mut:a", timeout=0.3):
                pass
        assert time.monotonic() - started >= 0.25
        # Another name is another lock.
        async with second.hold("mut:b", timeout=0):
            pass

    assert not first.is_held_locally("mut:a")
    async with second.hold("mut:a", timeout=0):
        pass


async def test_a_waiter_gets_the_named_lock_as_soon_as_it_is_released(engine: AsyncEngine) -> None:
    locks = NamedLocks(engine)
    taken = asyncio.Event()

    async def holder() -> None:
        async with locks.hold("mut:w", timeout=0):
            taken.set()
            await asyncio.sleep(0.2)

    task = asyncio.create_task(holder())
    await taken.wait()
    started = time.monotonic()
    async with NamedLocks(engine).hold("mut:w", timeout=5):
        waited = time.monotonic() - started
    await task

    assert 0.1 <= waited < 3


async def test_on_mysql_the_lock_lives_on_its_own_connection_and_is_seen_lost(
    engine: AsyncEngine,
) -> None:
    if not is_mysql(engine):
        pytest.skip("GET_LOCK is MySQL/MariaDB only; SQLite's lock lives in the process")
    locks = NamedLocks(engine)
    server_name = locks.server_name("mut:m")

    async def used_by() -> Any:
        async with engine.connect() as conn:
            return (
                await conn.execute(sa.text("SELECT IS_USED_LOCK(:n)"), {"n": server_name})
            ).scalar()

    async with locks.hold("mut:m", timeout=0) as held:
        conn = held.connection
        assert conn is not None
        assert not conn.in_transaction()
        owner = (await conn.execute(sa.text("SELECT CONNECTION_ID()"))).scalar()
        assert await used_by() == owner
        assert await held.still_held()
        await conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": server_name})
        assert not await held.still_held()
    assert await used_by() is None


async def kill_connection(engine: AsyncEngine, connection_id: int) -> None:
    """KILL a server connection and wait until the server has dropped it."""
    gone = sa.text("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = :id")
    async with engine.connect() as other:
        await other.execute(sa.text(f"KILL {int(connection_id)}"))
        for _ in range(100):
            if not (await other.execute(gone, {"id": connection_id})).scalar():
                return
            await asyncio.sleep(0.02)


async def test_on_mysql_a_lock_on_a_dead_connection_is_not_held(engine: AsyncEngine) -> None:
    if not is_mysql(engine):
        pytest.skip("GET_LOCK is MySQL/MariaDB only; SQLite's lock lives in the process")

    async with engine.connect() as conn:
        connection_id = (await conn.execute(sa.text("SELECT CONNECTION_ID()"))).scalar()
        await conn.execute(sa.text("SELECT GET_LOCK('mut:dead', 0)"))
        await kill_connection(engine, int(connection_id))

        assert not await HeldLock("mut:dead", conn).still_held()


# `still_held` leaves the dead connection awaiting a rollback: leaving the lock must still
# work (RELEASE_LOCK then raises PendingRollbackError, not a DBAPIError).
async def test_on_mysql_a_lock_whose_connection_died_is_seen_lost_and_freed(
    engine: AsyncEngine,
) -> None:
    if not is_mysql(engine):
        pytest.skip("GET_LOCK is MySQL/MariaDB only; SQLite's lock lives in the process")
    locks = NamedLocks(engine)

    async with locks.hold("mut:k", timeout=0) as held:
        assert held.connection is not None
        owner = (await held.connection.execute(sa.text("SELECT CONNECTION_ID()"))).scalar()
        await held.connection.rollback()
        await kill_connection(engine, int(owner))
        assert not await held.still_held()
    # Leaving the block did not raise; the server freed the lock with the connection.
    async with NamedLocks(engine).hold("mut:k", timeout=0):
        pass
