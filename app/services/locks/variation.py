"""One stock change at a time per variation, across every process, without draining the pool.

The cross-process lock is `NamedLocks` (MySQL/MariaDB: `GET_LOCK` on a connection of its
own; SQLite: an in-process lock). On MySQL every waiter would hold a pooled connection while
it waits, so 50 requests for one variation would take every connection and leave none for
the holder's own transaction: the pool would stall until its timeout. So, within a process:

1. waiters for the same variation queue on an `asyncio.Lock` first (no connection held), and
2. locked sections are let in while the connections they use at once fit in a budget of
   `database_pool_size` connections, which leaves the other half of the pool (size +
   overflow) to the rest of the service. A section says how many it uses: one when all its
   SQL runs through `HeldVariation.connection()` (on MySQL the lock's own connection, so no
   second checkout; refresh), two when it also runs short transactions on the engine
   (add-quantity). So a refresh, which holds its connection across a Back Market call,
   costs one connection of the budget, not two.

Only then is the database lock taken, for the cross-process part.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.config import Settings
from app.services.locks.named import HeldLock, LockBusy, NamedLocks

MIN_WAIT_SECONDS = 0.01
# A section that runs short transactions on the engine besides the lock's connection.
DEFAULT_SECTION_CONNECTIONS = 2


def variation_lock_name(variation_id: int) -> str:
    return f"stock_sync:variation:{variation_id}"


@dataclass(frozen=True, slots=True)
class HeldVariation:
    """The variation's lock, held; `connection()` runs the section's SQL."""

    lock: HeldLock
    engine: AsyncEngine

    async def still_held(self) -> bool:
        return await self.lock.still_held()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one short piece of the section's work; no transaction outlives it.

        On MySQL this is the connection that holds the lock: no pool checkout (with its
        pre-ping and reset round trips) per piece, and no second connection per section.
        Elsewhere (SQLite: the lock is in-process) a pooled connection, checked out for the
        piece only. Either way no transaction is left open when the block ends, so none is
        ever open across the Back Market call made between two pieces.
        """
        # The connection GET_LOCK ran on is never returned to the pool while the lock is
        # held, so running short transactions on it is safe (a commit or rollback does not
        # release a GET_LOCK lock).
        lock_conn = self.lock.connection
        if lock_conn is None:
            async with self.engine.connect() as conn:
                yield conn
            return
        try:
            yield lock_conn
        finally:
            if lock_conn.in_transaction():
                await lock_conn.rollback()


class _ConnectionBudget:
    """A first-come-first-served semaphore counted in connections.

    A section is let in when its connections fit and nobody queues before it, so a section
    needing two is never overtaken indefinitely by sections needing one.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, count: int, seconds: float, name: str) -> None:
        """Take `count` connections of the budget within `seconds`, else LockBusy."""
        if not self._waiters and self._free >= count:
            self._free -= count
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (count, waiter)
        self._waiters.append(entry)
        try:
            # A floor on the wait: with none, a timeout gives up even on a free budget.
            async with asyncio.timeout(max(seconds, MIN_WAIT_SECONDS)):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # Let in just as the wait ended: hand the connections on.
                self.release(count)
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
                # The queue's head may have changed: someone behind may fit now.
                self._admit()
            if isinstance(exc, TimeoutError):
                raise LockBusy(name) from None
            raise

    def release(self, count: int) -> None:
        self._free += count
        self._admit()

    def _admit(self) -> None:
        while self._waiters and self._free >= self._waiters[0][0]:
            count, waiter = self._waiters.popleft()
            if waiter.done():
                continue
            self._free -= count
            waiter.set_result(None)


@dataclass
class _Queue:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


@dataclass
class _ProcessGate:
    connections: _ConnectionBudget
    queues: dict[int, _Queue] = field(default_factory=dict)


# Keyed by engine: the gate protects that engine's pool, and dies with it.
_gates: weakref.WeakKeyDictionary[AsyncEngine, _ProcessGate] = weakref.WeakKeyDictionary()


def _gate_of(engine: AsyncEngine, settings: Settings) -> _ProcessGate:
    gate = _gates.get(engine)
    if gate is None:
        # Half of the pool (size + overflow), and room for one two-connection section.
        budget = max(DEFAULT_SECTION_CONNECTIONS, settings.database_pool_size)
        gate = _ProcessGate(connections=_ConnectionBudget(budget))
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
    connections: int = DEFAULT_SECTION_CONNECTIONS,
) -> AsyncIterator[HeldVariation]:
    """Hold the variation's lock; LockBusy when it could not be had within `wait_seconds`.

    `connections`: how many pooled connections the section uses at once, the lock's
    included; 1 only when all of its SQL runs through `HeldVariation.connection()`.
    """
    name = variation_lock_name(variation_id)
    gate = _gate_of(engine, settings)
    needed = max(1, min(connections, gate.connections.size))
    deadline = time.monotonic() + wait_seconds
    queue = gate.queues.setdefault(variation_id, _Queue())
    queue.users += 1
    try:
        await _acquire_within(queue.lock, wait_seconds, name)
        try:
            await gate.connections.acquire(needed, deadline - time.monotonic(), name)
            try:
                async with locks.hold(name, timeout=max(0.0, deadline - time.monotonic())) as held:
                    yield HeldVariation(lock=held, engine=engine)
            finally:
                gate.connections.release(needed)
        finally:
            queue.lock.release()
    finally:
        queue.users -= 1
        if queue.users == 0:
            gate.queues.pop(variation_id, None)


async def _acquire_within(primitive: asyncio.Lock, seconds: float, name: str) -> None:
    # A floor on the wait: with none, wait_for gives up even on a free lock once time is out.
    try:
        await asyncio.wait_for(primitive.acquire(), timeout=max(seconds, MIN_WAIT_SECONDS))
    except TimeoutError:
        raise LockBusy(name) from None
