"""One stock change at a time per variation, across every process, without draining the pool.

The cross-process lock is `NamedLocks` (MySQL/MariaDB: `GET_LOCK` on a connection of its
own; SQLite: an in-process lock). On MySQL every waiter would hold a pooled connection while
it waits, so 50 requests for one variation would take every connection and leave none for
the holder's own transaction: the pool would stall until its timeout. So, within a process:

1. waiters for the same variation queue on an `asyncio.Lock` first (no connection held), and
2. at most `database_pool_size // 2` locked sections run at once, each needing at most two
   connections (the lock's and one short transaction at a time), which leaves the other half
   of the pool (size + overflow) to the rest of the service.

Only then is the database lock taken, for the cross-process part.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.services.locks import HeldLock, LockBusy, NamedLocks

MIN_WAIT_SECONDS = 0.01


def variation_lock_name(variation_id: int) -> str:
    return f"stock_sync:variation:{variation_id}"


@dataclass
class _Queue:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


@dataclass
class _ProcessGate:
    sections: asyncio.Semaphore
    queues: dict[int, _Queue] = field(default_factory=dict)


# Keyed by engine: the gate protects that engine's pool, and dies with it.
_gates: weakref.WeakKeyDictionary[AsyncEngine, _ProcessGate] = weakref.WeakKeyDictionary()


def _gate_of(engine: AsyncEngine, settings: Settings) -> _ProcessGate:
    gate = _gates.get(engine)
    if gate is None:
        gate = _ProcessGate(sections=asyncio.Semaphore(max(1, settings.database_pool_size // 2)))
        _gates[engine] = gate
    return gate


@asynccontextmanager
async def hold_variation(
    *,
    engine: AsyncEngine,
    locks: NamedLocks,
    settings: Settings,
    variation_id: int,
    wait_seconds: float,
) -> AsyncIterator[HeldLock]:
    """Hold the variation's lock; LockBusy when it could not be had within `wait_seconds`."""
    name = variation_lock_name(variation_id)
    gate = _gate_of(engine, settings)
    deadline = time.monotonic() + wait_seconds
    queue = gate.queues.setdefault(variation_id, _Queue())
    queue.users += 1
    try:
        await _acquire_within(queue.lock, wait_seconds, name)
        try:
            await _acquire_within(gate.sections, deadline - time.monotonic(), name)
            try:
                async with locks.hold(name, timeout=max(0.0, deadline - time.monotonic())) as held:
                    yield held
            finally:
                gate.sections.release()
        finally:
            queue.lock.release()
    finally:
        queue.users -= 1
        if queue.users == 0:
            gate.queues.pop(variation_id, None)


async def _acquire_within(
    primitive: asyncio.Lock | asyncio.Semaphore, seconds: float, name: str
) -> None:
    # A floor on the wait: with none, wait_for gives up even on a free lock once time is out.
    try:
        await asyncio.wait_for(primitive.acquire(), timeout=max(seconds, MIN_WAIT_SECONDS))
    except TimeoutError:
        raise LockBusy(name) from None
