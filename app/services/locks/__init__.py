"""Locks shared by every process on one database: named locks, and one variation at a time.

`named`: `NamedLocks` (GET_LOCK on MySQL/MariaDB, an in-process lock on SQLite) and the
lock names scoped to their database. `variation`: `hold_variation`, the per-variation lock
that queues waiters in the process first, so they do not drain the connection pool.
"""

from app.services.locks.named import (
    MAX_BASE_NAME,
    MAX_LOCK_NAME,
    HeldLock,
    LockBusy,
    LockLost,
    NamedLocks,
    engine_lock_name,
    server_lock_name,
)
from app.services.locks.variation import (
    DEFAULT_SECTION_CONNECTIONS,
    HeldVariation,
    hold_variation,
    variation_lock_name,
)

__all__ = [
    "DEFAULT_SECTION_CONNECTIONS",
    "MAX_BASE_NAME",
    "MAX_LOCK_NAME",
    "HeldLock",
    "HeldVariation",
    "LockBusy",
    "LockLost",
    "NamedLocks",
    "engine_lock_name",
    "hold_variation",
    "server_lock_name",
    "variation_lock_name",
]
