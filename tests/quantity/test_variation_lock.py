"""The per-variation lock's process gate: sections are let in by the connections they use."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.services.locks import (
    DEFAULT_SECTION_CONNECTIONS,
    HeldVariation,
    LockBusy,
    NamedLocks,
    hold_variation,
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


async def test_one_connection_sections_run_up_to_the_pool_size_at_once(
    engine: AsyncEngine, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(database_pool_size=4)

    async with AsyncExitStack() as stack:
        for variation_id in range(1, 5):
            await stack.enter_async_context(
                hold(engine, settings, variation_id, wait=1, connections=1)
            )
        with pytest.raises(LockBusy):
            async with hold(engine, settings, 5, wait=0.05, connections=1):
                pass


async def test_two_connection_sections_count_twice(
    engine: AsyncEngine, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(database_pool_size=4)

    async with AsyncExitStack() as stack:
        for variation_id in (1, 2):
            await stack.enter_async_context(hold(engine, settings, variation_id, wait=1))
        with pytest.raises(LockBusy):
            async with hold(engine, settings, 3, wait=0.05, connections=1):
                pass


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
        with pytest.raises(LockBusy):
            async with hold(engine, settings, 2, wait=0.05, connections=2):
                pass
        # Had the two-connection waiter stayed queued, this one would wait behind it.
        async with hold(engine, settings, 3, wait=0.05, connections=1):
            pass
