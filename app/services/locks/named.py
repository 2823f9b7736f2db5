"""Named locks shared by every process on the same database.

MySQL/MariaDB: `GET_LOCK` held on a connection of its own for as long as the lock is held.
Such a lock belongs to the connection, so it is never run on a pooled connection that
goes back to the pool (or is recycled or pinged away) while the lock is meant to be held:
the connection is checked out for the lock's whole life and released explicitly.
SQLite (the embedded, single-process default): an in-process `asyncio.Lock` per name.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db import is_mysql

# MySQL limits lock names to 64 characters.
MAX_LOCK_NAME = 64
# Room left for the "@<database>" suffix that scopes a lock name to its database.
MAX_BASE_NAME = 40


def server_lock_name(name: str, *, database: str | None) -> str:
    """The name a lock has on the database server: `<name>@<database>`.

    GET_LOCK names are global to the whole server, so without the database in the name two
    databases on one server (production and staging, or test databases) would block each
    other. A long database name is replaced by a digest to stay within 64 characters.
    """
    if len(name) > MAX_BASE_NAME:
        raise ValueError(f"lock name longer than {MAX_BASE_NAME} characters: {name!r}")
    if not database:
        return name
    scoped = f"{name}@{database}"
    if len(scoped) > MAX_LOCK_NAME:
        scoped = f"{name}@{hashlib.sha1(database.encode()).hexdigest()[:16]}"
    return scoped


def engine_lock_name(name: str, engine: AsyncEngine | AsyncConnection) -> str:
    """`server_lock_name` for the database this engine or connection works on."""
    return server_lock_name(name, database=engine.engine.url.database if is_mysql(engine) else None)


# SQLite locks live in the process: shared by every NamedLocks of one database file, so an
# API run and a CLI run in the same process exclude each other too.
_local_locks: dict[tuple[str, str], _LocalLock] = {}


class LockBusy(Exception):
    """The lock is held by someone else and was not freed within the timeout."""

    def __init__(self, name: str) -> None:
        super().__init__(f"lock {name!r} is held elsewhere")
        self.name = name


class LockLost(Exception):
    """The database connection holding the lock went away, so the lock is no longer held."""


@dataclass
class HeldLock:
    name: str
    _conn: AsyncConnection | None = None

    @property
    def connection(self) -> AsyncConnection | None:
        """The connection holding the lock on MySQL (reusable for short transactions), else None."""
        return self._conn

    async def still_held(self) -> bool:
        """True while this process still holds the lock (checks the database on MySQL)."""
        if self._conn is None:
            return True
        try:
            owner = (
                await self._conn.execute(
                    sa.text("SELECT IS_USED_LOCK(:name) = CONNECTION_ID()"), {"name": self.name}
                )
            ).scalar()
        except sa.exc.DBAPIError:
            return False
        return bool(owner)


@dataclass
class _LocalLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class NamedLocks:
    """`async with locks.hold("name", timeout=0): ...` raises LockBusy when taken elsewhere."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._mysql = is_mysql(engine)

    def server_name(self, name: str) -> str:
        """The lock's name on the database server (scoped to this database)."""
        return engine_lock_name(name, self._engine)

    @asynccontextmanager
    async def hold(self, name: str, *, timeout: float) -> AsyncIterator[HeldLock]:
        if self._mysql:
            async with self._hold_mysql(self.server_name(name), timeout) as held:
                yield held
        else:
            async with self._hold_local(name, timeout) as held:
                yield held

    def is_held_locally(self, name: str) -> bool:
        entry = _local_locks.get(self._local_key(name))
        return entry is not None and entry.lock.locked()

    def _local_key(self, name: str) -> tuple[str, str]:
        return (self._engine.url.render_as_string(hide_password=True), name)

    @asynccontextmanager
    async def _hold_local(self, name: str, timeout: float) -> AsyncIterator[HeldLock]:
        key = self._local_key(name)
        entry = _local_locks.setdefault(key, _LocalLock())
        entry.users += 1
        try:
            if timeout <= 0:
                if entry.lock.locked():
                    raise LockBusy(name)
                await entry.lock.acquire()
            else:
                try:
                    await asyncio.wait_for(entry.lock.acquire(), timeout)
                except TimeoutError:
                    raise LockBusy(name) from None
            try:
                yield HeldLock(name)
            finally:
                entry.lock.release()
        finally:
            entry.users -= 1
            if entry.users == 0:
                _local_locks.pop(key, None)

    @asynccontextmanager
    async def _hold_mysql(self, name: str, timeout: float) -> AsyncIterator[HeldLock]:
        async with self._engine.connect() as conn:
            # GET_LOCK takes whole or fractional seconds; 0 means "try once".
            got = (
                await conn.execute(
                    sa.text("SELECT GET_LOCK(:name, :timeout)"),
                    {"name": name, "timeout": max(timeout, 0)},
                )
            ).scalar()
            # End the implicit transaction so the connection holds only the lock, no snapshot.
            await conn.commit()
            if got != 1:
                raise LockBusy(name)
            try:
                yield HeldLock(name, conn)
            finally:
                try:
                    await conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": name})
                    await conn.commit()
                except (sa.exc.DBAPIError, sa.exc.PendingRollbackError):
                    # The connection died (a failed `still_held` leaves it awaiting a
                    # rollback), and the server released the lock with it; make sure the pool
                    # does not hand this connection out again.
                    await conn.invalidate()
