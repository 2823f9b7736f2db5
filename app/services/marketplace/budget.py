"""The request budget every call of one marketplace account shares.

A marketplace counts and blocks per token, not per caller (Back Market's Cloudflare, Refurbed's
`X-RateLimit-*`), so one budget serves each account of the process, and accounts never share one:
at most `max_requests` sends in any `window` seconds, and one "not before" time that a 429 sets.

Who waits is served by priority, then arrival: a person's call (LIVE) first, the orders watcher
(WATCHER) next, bulk-sync page fetches (BULK) last. BULK never uses the last `reserved` slots of
the window and is paced at least `window / (max_requests - reserved)` apart, so a running sync
leaves a slot free, or about to free, at every moment: a live call waits about one pacing interval
at most, however long the sync, and the sync loses only the reserved share of its throughput.
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import itertools
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypedDict

from prometheus_client import Gauge, Histogram

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


class CallKind(enum.IntEnum):
    """Who a call is made for; a lower value is granted first."""

    # A person waiting on the listing UI: refresh, add-quantity.
    LIVE = 0
    # The orders watcher: sales must show within a minute.
    WATCHER = 1
    # Bulk sync page fetches: the whole catalogue, minutes long.
    BULK = 2

    @property
    def label(self) -> str:
        """The name metrics and the status page use: "live", "watcher", "bulk"."""
        return self.name.lower()


WAIT_SECONDS = Histogram(
    "backmarket_budget_wait_seconds",
    "Time a marketplace request waited for a send slot of its account's request budget, by "
    "marketplace and kind of call.",
    ["marketplace_id", "kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2, 5, 10, 20, 60),
)
WAITING = Gauge(
    "backmarket_budget_waiting",
    "Marketplace requests waiting now for a send slot of their account's request budget, by "
    "marketplace and kind of call.",
    ["marketplace_id", "kind"],
)


class BudgetSnapshot(TypedDict):
    window_used: int
    max_requests: int
    reserved: int
    waiting: dict[str, int]


class PausedTooLong(Exception):
    """The budget is paused (after a 429) for longer than the caller agreed to wait."""

    def __init__(self, remaining: float) -> None:
        super().__init__(remaining)
        self.remaining = remaining


def reserved_slots(max_requests: int) -> int:
    """Slots of each window that BULK may not use: a tenth, at least one; none below 4.

    Below 4 a reserved slot would cost the sync a third or more of a budget that small.
    """
    return max(1, max_requests // 10) if max_requests >= 4 else 0


@dataclass(eq=False, slots=True)
class _Ticket:
    """One waiting acquire; the queue is kept sorted by `order` = (kind, arrival)."""

    kind: CallKind
    order: tuple[int, int]
    # Set when the ticket becomes the head of the queue; only the head may take a slot.
    turn: asyncio.Event = field(default_factory=asyncio.Event)


class RequestBudget:
    """At most `max_requests` send times in any `window` seconds, plus a shared "not before" time.

    A leaky bucket (aiolimiter) refills while idle and then lets about twice the budget through
    in one window; Cloudflare counts a sliding window, so the log of send times is what matches.

    Waiters queue by (kind, arrival) and only the head may take a slot, so a LIVE call that
    arrives while BULK fetches are queued goes out before them. A head that sleeps until its
    slot can be overtaken meanwhile: on waking it finds it is no longer the head and waits for
    its turn again.
    """

    def __init__(
        self, *, marketplace_id: int, max_requests: int, window: float, clock: Clock, sleep: Sleep
    ) -> None:
        # Only names the budget's metrics: the budget itself is one account's, whoever it is.
        self._metric_label = str(marketplace_id)
        self._max_requests = max_requests
        self._window = window
        self._clock = clock
        self._sleep = sleep
        self._reserved = reserved_slots(max_requests)
        self._bulk_slots = max_requests - self._reserved
        # Evenly spaced BULK sends keep the window's oldest send never more than one interval
        # from expiring, so a live call behind a full window is not held for a whole window.
        self._bulk_interval = window / self._bulk_slots
        self._sent: deque[float] = deque()
        self._last_bulk_sent = -math.inf
        self._not_before = -math.inf
        self._queue: list[_Ticket] = []
        self._arrivals = itertools.count()

    @property
    def reserved(self) -> int:
        """Slots of each window only LIVE and WATCHER calls may use."""
        return self._reserved

    @property
    def bulk_interval(self) -> float:
        """The least time between two BULK sends."""
        return self._bulk_interval

    def pause_until(self, moment: float) -> None:
        """Send nothing before `moment` (on the budget's clock); a later pause wins."""
        self._not_before = max(self._not_before, moment)

    def paused_for(self) -> float:
        """Seconds left of the pause (0 when not paused)."""
        return max(0.0, self._not_before - self._clock())

    def snapshot(self) -> BudgetSnapshot:
        """The budget as the status page shows it: sends in the current window and waiters."""
        self._forget_expired(self._clock())
        waiting = {kind.label: 0 for kind in CallKind}
        for ticket in self._queue:
            waiting[ticket.kind.label] += 1
        return {
            "window_used": len(self._sent),
            "max_requests": self._max_requests,
            "reserved": self._reserved,
            "waiting": waiting,
        }

    async def acquire(self, *, max_pause: float, kind: CallKind = CallKind.LIVE) -> None:
        """Wait for a send slot and take it; LIVE before WATCHER before BULK, then by arrival.

        Raises PausedTooLong instead of waiting out a pause longer than `max_pause` seconds.
        """
        entered = self._clock()
        ticket = _Ticket(kind=kind, order=(kind, next(self._arrivals)))
        bisect.insort(self._queue, ticket, key=lambda queued: queued.order)
        WAITING.labels(marketplace_id=self._metric_label, kind=kind.label).inc()
        try:
            while True:
                now = self._clock()
                paused = self._not_before - now
                if paused > max_pause:
                    raise PausedTooLong(paused)
                if self._queue[0] is not ticket:
                    # No await between the check and the clear, so a turn given now is not lost.
                    ticket.turn.clear()
                    await ticket.turn.wait()
                    continue
                wait = max(paused, self._slot_wait(kind, now))
                if wait <= 0:
                    self._sent.append(now)
                    if kind is CallKind.BULK:
                        self._last_bulk_sent = now
                    WAIT_SECONDS.labels(marketplace_id=self._metric_label, kind=kind.label).observe(
                        now - entered
                    )
                    return
                # A floor on the nap: float rounding could otherwise leave a wait too small to
                # move the clock, and the loop would spin.
                await self._sleep(max(wait, 0.001))
        finally:
            # Whether granted, refused or cancelled, the ticket leaves, and whoever is head now
            # must be told: a ticket left behind would block the queue for good.
            self._queue.remove(ticket)
            if self._queue:
                self._queue[0].turn.set()
            WAITING.labels(marketplace_id=self._metric_label, kind=kind.label).dec()

    def _slot_wait(self, kind: CallKind, now: float) -> float:
        """Seconds until `kind` may send, leaving the 429 pause aside (<= 0: now)."""
        self._forget_expired(now)
        limit = self._max_requests
        wait = 0.0
        if kind is CallKind.BULK:
            limit = self._bulk_slots
            wait = self._last_bulk_sent + self._bulk_interval - now
        if len(self._sent) >= limit:
            # Fewer than `limit` sends are left in the window once this one has expired.
            wait = max(wait, self._sent[len(self._sent) - limit] + self._window - now)
        return wait

    def _forget_expired(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - self._window:
            self._sent.popleft()
