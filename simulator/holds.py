"""Holds: calls parked until a test releases them, shared by both simulators' states.

A state keeps its data under one lock while a test may drive it from another thread, and a
parked call is woken through its own loop's ``call_soon_threadsafe``. `HoldingState` gives a
state the hold bookkeeping on that lock; each state decides which calls a hold catches.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Hold:
    """Calls matching this are parked until the state's ``release``."""

    id: int
    path_prefix: str
    page: int | None
    method: str | None
    held: int = 0
    """Calls parked right now."""
    caught: int = 0
    """Calls parked since the hold was placed."""
    released: bool = False
    _waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(
        default_factory=list, repr=False
    )

    def as_dict(self) -> dict[str, Any]:
        return {
            "hold_id": self.id,
            "path_prefix": self.path_prefix,
            "page": self.page,
            "method": self.method,
            "held": self.held,
            "caught": self.caught,
            "released": self.released,
        }


def set_threadsafe(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    # The loop may be gone when a test releases after the server stopped.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(event.set)


class HoldingState:
    """The hold bookkeeping of a simulator state, on the state's own lock (`_lock`)."""

    _lock: threading.RLock

    def _init_holds(self) -> None:
        self._holds: list[Hold] = []
        # Released holds stay findable so an out-of-process caller can read their counts.
        self._holds_by_id: dict[int, Hold] = {}
        self._hold_ids = itertools.count(1)

    def _place_hold(self, path_prefix: str, *, page: int | None, method: str | None) -> Hold:
        with self._lock:
            placed = Hold(next(self._hold_ids), path_prefix, page, method)
            self._holds.append(placed)
            self._holds_by_id[placed.id] = placed
            return placed

    def find_hold(self, hold_id: int) -> Hold | None:
        with self._lock:
            return self._holds_by_id.get(hold_id)

    def release(self, hold: Hold) -> None:
        """Let parked calls go on; later ones are not held. Callable from any thread."""
        with self._lock:
            hold.released = True
            if hold in self._holds:
                self._holds.remove(hold)
            waiters, hold._waiters = hold._waiters, []
        for loop, event in waiters:
            set_threadsafe(loop, event)

    def release_all(self) -> None:
        with self._lock:
            holds = list(self._holds)
        for hold in holds:
            self.release(hold)

    async def wait_held(self, hold: Hold, count: int = 1, *, timeout_s: float = 5.0) -> None:
        """Return once ``count`` calls are parked on ``hold``; works from any loop."""
        deadline = time.monotonic() + timeout_s
        while hold.held < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{hold.held} of {count} calls held after {timeout_s}s")
            await asyncio.sleep(0.002)

    def wait_held_blocking(self, hold: Hold, count: int = 1, *, timeout_s: float = 5.0) -> None:
        """``wait_held`` for synchronous tests driving a simulator running in a thread."""
        deadline = time.monotonic() + timeout_s
        while hold.held < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{hold.held} of {count} calls held after {timeout_s}s")
            time.sleep(0.002)

    async def wait_for_release(self, hold: Hold) -> None:
        """Park the current call on ``hold``."""
        event = asyncio.Event()
        with self._lock:
            if hold.released:
                return
            hold._waiters.append((asyncio.get_running_loop(), event))
            hold.held += 1
            hold.caught += 1
        try:
            await event.wait()
        finally:
            with self._lock:
                hold.held -= 1
