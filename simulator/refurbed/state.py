"""Everything the Refurbed simulator remembers between requests, and its control surface.

One ``RefurbedSimulatorState`` per app. Requests run on the server's event loop while a
test may drive the state from another thread (``RunningRefurbedSimulator``), so every
read and write of shared data happens under one lock, and waking a parked request goes
through its own loop's ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar, get_args

from simulator.holds import Hold, HoldingState, set_threadsafe
from simulator.refurbed.config import RefurbedSimulatorConfig
from simulator.refurbed.orders import Order, OrderBook, UnknownOrderError, render_order
from simulator.refurbed.store import Offer, OfferStore, render_offer

API_PREFIX: Final = "/refb.merchant.v1."

FaultKind = Literal["500", "503", "429", "timeout", "wrong_shape", "lost_response", "lost_timeout"]
FAULT_KINDS: Final = frozenset(get_args(FaultKind))
# What fault_rate draws from: the failures a client meets without anyone asking.
RANDOM_FAULT_KINDS: Final[tuple[FaultKind, ...]] = ("500", "503", "429")

OfferRef = str | int
"""An offer named by id (int or digits) or by SKU."""

T = TypeVar("T")


def rpc_name(path: str) -> str:
    """``/refb.merchant.v1.OfferService/ListOffers`` -> ``OfferService/ListOffers``."""
    return path[len(API_PREFIX) :] if path.startswith(API_PREFIX) else path


class UnknownOfferError(LookupError):
    """The control API was asked about an offer that does not exist."""


@dataclass(frozen=True)
class RateWindow:
    """The limiter's view of one request, sent back as the X-RateLimit-* headers."""

    limit: int
    remaining: int
    reset_at: int
    """Unix time the window resets."""
    refused: bool

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }


class _FixedWindowLimiter:
    """A count per token in fixed windows aligned to the Unix clock; refusals are not counted."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, int]] = {}

    def check(self, key: str, now: float, *, limit: int, window_s: float) -> RateWindow:
        window = math.floor(now / window_s)
        reset_at = math.ceil((window + 1) * window_s)
        started, used = self._windows.get(key, (window, 0))
        if started != window:
            used = 0
        if used >= limit:
            return RateWindow(limit, 0, reset_at, refused=True)
        used += 1
        self._windows[key] = (window, used)
        return RateWindow(limit, limit - used, reset_at, refused=False)

    def reset(self) -> None:
        self._windows.clear()


@dataclass
class _FaultRule:
    path_prefix: str
    kind: FaultKind
    remaining: int


@dataclass(frozen=True)
class Admission:
    """What the edge decided about a request when it arrived."""

    rpc: str
    rate: RateWindow | None
    fault: FaultKind | None
    hold: Hold | None


@dataclass
class _Stats:
    total_requests: int = 0
    by_method: Counter[str] = field(default_factory=Counter)
    by_method_status: Counter[str] = field(default_factory=Counter)
    status_429: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    updates: list[dict[str, Any]] = field(default_factory=list)


class RefurbedSimulatorState(HoldingState):
    """Offers, orders, edge behaviour (rate limit, faults, holds) and statistics."""

    def __init__(
        self,
        config: RefurbedSimulatorConfig,
        *,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        skus: Sequence[str] | None = None,
    ) -> None:
        # A private copy: configure() changes this simulator, not the caller's object.
        self.config = dataclasses.replace(config)
        # Calendar time: order release dates and the X-RateLimit-Reset Unix time.
        self.wall_clock = wall_clock
        self.store = OfferStore(size=config.offers, seed=config.seed, skus=skus)
        self.order_book = OrderBook(self.store)
        self._lock = threading.RLock()
        self._limiter = _FixedWindowLimiter()
        self._faults: list[_FaultRule] = []
        self._init_holds()
        self._fault_rng = random.Random(f"{config.seed}:faults")
        self._stats = _Stats()
        self._sleepers: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._closing = False

    # -- offers: reads and writes under the lock -----------------------------------

    def _offer(self, ref: OfferRef) -> Offer:
        found = self.store.resolve(ref)
        if found is None:
            raise UnknownOfferError(f"no offer {ref!r}")
        return found

    def offer(self, ref: OfferRef) -> dict[str, Any]:
        """The offer as the API shows it (UnknownOfferError)."""
        with self._lock:
            return render_offer(self._offer(ref))

    def stock_of(self, ref: OfferRef) -> int:
        with self._lock:
            return self._offer(ref).stock

    def set_stock(self, ref: OfferRef, stock: int) -> None:
        """Change the stock behind the client's back (not recorded as an update)."""
        with self._lock:
            self.store.set_stock(self._offer(ref), stock)

    def add_offer(self, *, sku: str, **fields: Any) -> dict[str, Any]:
        """Add an offer (ValueError on a duplicate id or SKU); returns it rendered."""
        with self._lock:
            return render_offer(self.store.add(sku=sku, created_at=self.wall_clock(), **fields))

    def remove_offer(self, ref: OfferRef) -> None:
        with self._lock:
            self.store.remove(self._offer(ref))

    def find_offer(self, *, id: int | None = None, sku: str | None = None) -> Offer | None:
        with self._lock:
            return self.store.by_id(id) if id is not None else self.store.by_sku(sku or "")

    def offers_page(
        self,
        *,
        matches: Callable[[Offer], bool],
        limit: int,
        starting_after: int | None,
        ending_before: int | None,
        descending: bool,
    ) -> tuple[list[dict[str, Any]], bool]:
        """One ``ListOffers`` page in id order and whether more follow in that direction."""
        with self._lock:
            if ending_before is None:
                after, before = (None, starting_after) if descending else (starting_after, None)
            else:
                after, before = (ending_before, None) if descending else (None, ending_before)
            walk = self.store.in_id_order(after=after, before=before, descending=descending)
            offers, has_more = _page(
                (o for o in walk if matches(o)), limit=limit, from_end=ending_before is not None
            )
            return [render_offer(offer) for offer in offers], has_more

    def update_stock(
        self, *, id: int | None = None, sku: str | None = None, stock: int
    ) -> dict[str, Any] | None:
        """Set an offer's stock (absolute); the offer after it, or None when unknown."""
        with self._lock:
            offer = self.store.by_id(id) if id is not None else self.store.by_sku(sku or "")
            if offer is None:
                return None
            self.store.set_stock(offer, stock)
            return render_offer(offer)

    def record_update(
        self, *, rpc: str, identifier: dict[str, Any], stock: int | None, code: int
    ) -> None:
        with self._lock:
            self._stats.updates.append(
                {
                    "rpc": rpc,
                    "identifier": identifier,
                    "stock": stock,
                    "code": int(code),
                    "at": self.wall_clock().timestamp(),
                }
            )

    # -- orders ----------------------------------------------------------------------

    def place_order(
        self, lines: Sequence[tuple[OfferRef, int]], *, released_at: datetime | None = None
    ) -> dict[str, Any]:
        """A released order with one item per unit; each offer's stock drops at once.

        UnknownOfferError for an unknown offer, OrderConflict (a ValueError) when short.
        """
        with self._lock:
            order = self.order_book.place(
                [(self._offer(ref), units) for ref, units in lines],
                released_at=released_at or self.wall_clock(),
            )
            return render_order(order)

    def order(self, order_id: int) -> dict[str, Any]:
        with self._lock:
            return render_order(self.order_book.get(order_id))

    def orders(self) -> list[dict[str, Any]]:
        with self._lock:
            return [render_order(order) for order in self.order_book.all()]

    def set_item_state(
        self, order_id: int, item_id: int, state: str, *, restock: bool = False
    ) -> dict[str, Any]:
        with self._lock:
            return render_order(
                self.order_book.set_item_state(order_id, item_id, state, restock=restock)
            )

    def orders_page(
        self,
        *,
        matches: Callable[[Order], bool],
        limit: int,
        starting_after: int | None,
        ending_before: int | None,
        descending: bool,
    ) -> tuple[list[dict[str, Any]], bool]:
        """One ``ListOrders`` page in id order and whether more follow in that direction."""
        with self._lock:
            ordered = self.order_book.all()
            if descending:
                ordered.reverse()

            def after(order: Order, cursor: int) -> bool:
                return order.id < cursor if descending else order.id > cursor

            selected: Iterable[Order] = ordered
            if ending_before is not None:
                selected = (
                    o for o in ordered if o.id != ending_before and not after(o, ending_before)
                )
            elif starting_after is not None:
                selected = (o for o in ordered if after(o, starting_after))
            orders, has_more = _page(
                (o for o in selected if matches(o)), limit=limit, from_end=ending_before is not None
            )
            return [render_order(order) for order in orders], has_more

    # -- configuration, faults and holds --------------------------------------------------

    def configure(self, **changes: Any) -> RefurbedSimulatorConfig:
        """Change behaviour at run time (latency, limit, fault rate, timeouts)."""
        fixed = {"offers", "seed", "token"} & changes.keys()
        if fixed:
            raise ValueError(f"{sorted(fixed)} cannot change at run time")
        with self._lock:
            updated = dataclasses.replace(self.config, **changes)
            self.config = updated
            if {"requests_per_window", "rate_limit_window_s"} & changes.keys():
                self._limiter.reset()
            return dataclasses.replace(updated)

    def fail_next(
        self, path_prefix: str = API_PREFIX, count: int = 1, kind: FaultKind = "500"
    ) -> None:
        """The next ``count`` API calls whose path starts with ``path_prefix`` fail as ``kind``.

        Rules are used in the order they were given.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {sorted(FAULT_KINDS)}")
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._faults.append(_FaultRule(path_prefix, kind, count))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def hold(self, path_prefix: str = API_PREFIX) -> Hold:
        """Park matching calls (after the rate limit and faults) until released."""
        return self._place_hold(path_prefix, page=None, method=None)

    # -- statistics ------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """A JSON-ready snapshot; ``by_method`` counts calls by RPC ("OfferService/GetOffer")."""
        with self._lock:
            current = self._stats
            return {
                "total_requests": current.total_requests,
                "by_method": dict(current.by_method),
                "by_method_status": dict(current.by_method_status),
                "status_429": current.status_429,
                "in_flight": current.in_flight,
                "max_in_flight": current.max_in_flight,
                "faults": dict(current.faults),
                "updates": [dict(u) for u in current.updates],
            }

    def reset_stats(self) -> None:
        with self._lock:
            in_flight = self._stats.in_flight
            self._stats = _Stats(in_flight=in_flight, max_in_flight=in_flight)

    # -- the edge: admission of each API call -----------------------------------------

    def admit(self, *, path: str, rate_key: str) -> Admission:
        """Count the call and decide whether it is refused, faulted or held."""
        with self._lock:
            stats = self._stats
            rpc = rpc_name(path)
            stats.total_requests += 1
            stats.by_method[rpc] += 1
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            rate = None
            limit = self.config.requests_per_window
            if limit is not None:
                rate = self._limiter.check(
                    rate_key,
                    self.wall_clock().timestamp(),
                    limit=limit,
                    window_s=self.config.rate_limit_window_s,
                )
            fault = None
            hold = None
            if rate is None or not rate.refused:
                fault = self._take_fault(path)
                if fault is not None:
                    stats.faults[fault] += 1
                else:
                    hold = next((h for h in self._holds if path.startswith(h.path_prefix)), None)
            return Admission(rpc=rpc, rate=rate, fault=fault, hold=hold)

    def _take_fault(self, path: str) -> FaultKind | None:
        for rule in self._faults:
            if not path.startswith(rule.path_prefix):
                continue
            rule.remaining -= 1
            if rule.remaining == 0:
                self._faults.remove(rule)
            return rule.kind
        if self.config.fault_rate and self._fault_rng.random() < self.config.fault_rate:
            return self._fault_rng.choice(RANDOM_FAULT_KINDS)
        return None

    def finish(self, admission: Admission, status: int) -> None:
        with self._lock:
            stats = self._stats
            stats.in_flight -= 1
            stats.by_method_status[f"{admission.rpc} {status}"] += 1
            if status == 429:
                stats.status_429 += 1

    # -- sleeping and shutting down ------------------------------------------------------

    async def pause(self, seconds: float) -> bool:
        """Sleep unless the simulator closes first; True when the full time passed."""
        if self._closing:
            return False
        event = asyncio.Event()
        sleeper = (asyncio.get_running_loop(), event)
        with self._lock:
            self._sleepers.add(sleeper)
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            return True
        finally:
            with self._lock:
                self._sleepers.discard(sleeper)
        return False

    def wake_everything(self) -> None:
        """Release holds and interrupt pauses, so a stopping server is not kept waiting."""
        with self._lock:
            self._closing = True
            sleepers = list(self._sleepers)
        for loop, event in sleepers:
            set_threadsafe(loop, event)
        self.release_all()


def _page(candidates: Iterator[T], *, limit: int, from_end: bool) -> tuple[list[T], bool]:
    """The first ``limit`` candidates (the last ones when paging backwards) and whether
    more are left beyond them."""
    if from_end:
        everything = list(candidates)
        return everything[-limit:], len(everything) > limit
    page = list(itertools.islice(candidates, limit + 1))
    return page[:limit], len(page) > limit


__all__ = [
    "API_PREFIX",
    "FAULT_KINDS",
    "RANDOM_FAULT_KINDS",
    "Admission",
    "FaultKind",
    "OfferRef",
    "RateWindow",
    "RefurbedSimulatorState",
    "UnknownOfferError",
    "UnknownOrderError",
]
