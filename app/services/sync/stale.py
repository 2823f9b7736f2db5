"""One run per marketplace: its lock, the runs a dead process left `running`, the busy answer.

The lock (`stock_sync:bulk:<id>`: a `GET_LOCK` scoped to the database on MySQL/MariaDB, an
in-process lock on SQLite) is held for the whole run and shared by the API, the schedule and
the CLI of every process. Whoever holds it knows every other `running` row of the marketplace
belongs to a run that ended without recording its end.
"""

from __future__ import annotations

import logging
import os
import socket
from contextlib import AsyncExitStack

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db import is_mysql, transaction
from app.errors import Conflict
from app.services.context import ServiceContext
from app.services.locks import HeldLock, LockBusy
from app.services.sync import runs

log = logging.getLogger(__name__)

# A run records its end before it gives its lock up (the release is a statement of its own on
# MySQL, and the connection's return after it). A trigger that finds the lock taken but no run
# `running` has come in that gap, or in the one before a new run's row exists: it waits this
# long for the lock instead of being refused by a run that has finished.
FINISHING_RUN_WAIT_SECONDS = 2.0


def bulk_lock_name(marketplace_id: int) -> str:
    """`stock_sync:bulk:<marketplace>`; NamedLocks scopes it to the database on the server."""
    return f"stock_sync:bulk:{marketplace_id}"


def owner_is_alive_elsewhere(owner: str | None, *, engine: AsyncEngine) -> bool:
    """SQLite only: a run of another live process on this host (the CLI beside the server).

    The in-process lock cannot see that process; on MySQL the lock itself is shared, so holding
    it proves no other process is running.
    """
    if is_mysql(engine) or not owner or ":" not in owner:
        return False
    host, _, pid_text = owner.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def close_dead_runs(
    conn: AsyncConnection, *, engine: AsyncEngine, marketplace_id: int
) -> list[int]:
    """With the marketplace's lock held, every other `running` row of it belongs to a dead run."""
    candidates = await runs.running_run_ids(conn, marketplace_id=marketplace_id)
    dead = [
        run_id for run_id, owner in candidates if not owner_is_alive_elsewhere(owner, engine=engine)
    ]
    await runs.fail_runs(
        conn,
        run_ids=dead,
        reason="the process running this sync ended before the run finished",
    )
    return dead


async def close_stale_runs(ctx: ServiceContext) -> list[int]:
    """At start-up: close runs left `running` by a dead process, where that can be proved.

    A marketplace whose lock is busy has a live run somewhere; its rows are left alone.
    """
    closed: list[int] = []
    for marketplace_id in await runs.marketplaces_with_running_runs(ctx.engine):
        try:
            async with ctx.locks.hold(bulk_lock_name(marketplace_id), timeout=0):
                async with transaction(ctx.engine) as conn:
                    closed += await close_dead_runs(
                        conn, engine=ctx.engine, marketplace_id=marketplace_id
                    )
        except LockBusy:
            continue
    if closed:
        log.warning(
            "closed %d bulk sync run(s) left running by a dead process: %s", len(closed), closed
        )
    return closed


async def busy_conflict(engine: AsyncEngine, *, marketplace_id: int) -> Conflict:
    """The 409 for a trigger that found the lock taken, naming the run going on if it can."""
    async with engine.connect() as conn:
        running = await runs.running_run_ids(conn, marketplace_id=marketplace_id)
    run_id = running[0][0] if running else None
    where = f" (run {run_id})" if run_id is not None else ""
    return Conflict(
        f"a bulk sync of marketplace {marketplace_id} is already running{where}", run_id=run_id
    )


async def take_bulk_lock(
    ctx: ServiceContext, stack: AsyncExitStack, *, marketplace_id: int
) -> HeldLock:
    """The marketplace's bulk-sync lock, held until `stack` closes; Conflict (409) naming the
    running run when another run holds it.

    When the lock is taken and no run of the marketplace is `running`, its holder is finishing
    (or starting): the lock is waited for, briefly, so that a finished run never refuses a
    trigger.
    """
    name = bulk_lock_name(marketplace_id)
    try:
        return await stack.enter_async_context(ctx.locks.hold(name, timeout=0))
    except LockBusy:
        pass
    async with ctx.engine.connect() as conn:
        running = await runs.running_run_ids(conn, marketplace_id=marketplace_id)
    if not running:
        try:
            return await stack.enter_async_context(
                ctx.locks.hold(name, timeout=FINISHING_RUN_WAIT_SECONDS)
            )
        except LockBusy:
            pass
    raise await busy_conflict(ctx.engine, marketplace_id=marketplace_id)
