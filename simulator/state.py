"""Everything the simulator remembers between requests, and the control surface.

One ``SimulatorState`` per app. Requests run on the server's event loop while a
test may drive the state from another thread (``RunningSimulator``), so every
read and write of shared data happens under one lock, and waking a request
parked on an event goes through its own loop's ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

from simulator.config import SimulatorConfig
from simulator.holds import Hold, HoldingState, set_threadsafe
from simulator.orders import COUNTRY_CODES, Order, OrderBook, PlacedOrder, render_order
from simulator.store import ListingStore, ListingUpdate

ListingRef = str | int
"""A listing named by UUID, integer listing_id (int or digits) or SKU."""

FaultKind = Literal[
    "500",
    "502",
    "503",
    "429",
    "html403",
    "json403",
    "timeout",
    "slow",
    "truncate",
    "lost_response",
    "error200",
]
FAULT_KINDS: Final = frozenset(get_args(FaultKind))
# What fault_rate draws from: the failures a client meets without anyone asking.
RANDOM_FAULT_KINDS: Final[tuple[FaultKind, ...]] = ("500", "502", "503", "html403", "slow")

LISTINGS_TEMPLATE = "/ws/listings"
LISTING_TEMPLATE = "/ws/listings/{listingId}"
DETAIL_TEMPLATE = "/ws/listings/detail"
ORDERS_TEMPLATE = "/ws/orders"
ORDER_TEMPLATE = "/ws/orders/{order_id}"
# The paged endpoints, where a "truncate" fault can cut a page short.
PAGED_TEMPLATES: Final = frozenset({LISTINGS_TEMPLATE, ORDERS_TEMPLATE})

# BM-{Company}-{Integration};{email}
_USER_AGENT = re.compile(r"BM-[^;\s-][^;]*-[^;]+;[^;\s@]+@[^;\s@]+\.[^;\s@]+")


def endpoint_template(path: str) -> str:
    """The spec's path template for a request path, for stats keys."""
    path = path.rstrip("/") or "/"
    if path in (LISTINGS_TEMPLATE, DETAIL_TEMPLATE, ORDERS_TEMPLATE):
        return path
    parent, _, leaf = path.rpartition("/")
    if parent == LISTINGS_TEMPLATE and leaf:
        return LISTING_TEMPLATE
    if parent == ORDERS_TEMPLATE and leaf:
        return ORDER_TEMPLATE
    return path


def is_documented_user_agent(value: str | None) -> bool:
    return value is not None and _USER_AGENT.fullmatch(value.strip()) is not None


class UnknownListingError(LookupError):
    """The control API was asked about a listing that does not exist."""


class InvalidPageError(LookupError):
    """DRF's "Invalid page.": the page number is not a page of the result."""


def _page_window(count: int, page: int | Literal["last"], page_size: int) -> tuple[int, int]:
    """(page number, index of its first row), or InvalidPageError."""
    # An empty result still has a first page, like Django's allow_empty_first_page.
    last_page = max(1, -(-count // page_size))
    number = last_page if page == "last" else page
    if not 1 <= number <= last_page:
        raise InvalidPageError(page)
    return number, (number - 1) * page_size


@dataclass
class _FaultRule:
    path_prefix: str
    kind: FaultKind
    remaining: int
    method: str | None
    page: int | None


@dataclass(frozen=True)
class Admission:
    """What the edge decided about a request when it arrived."""

    request_id: str
    cf_ray: str
    method: str
    template: str
    blocked_for_s: float | None
    """Set when the rate limiter refuses the request: seconds until the block ends."""
    fault: FaultKind | None
    hold: Hold | None


class _RateLimiter:
    """Sliding-window count per client, then a fixed block, like Cloudflare's rule.

    Refused requests are not counted: the block, not the window, governs them.
    """

    def __init__(self) -> None:
        self._recent: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}

    def check(
        self, client: str, now: float, *, limit: int, window_s: float, block_s: float
    ) -> float | None:
        blocked_until = self._blocked_until.get(client, float("-inf"))
        if now < blocked_until:
            return blocked_until - now
        recent = self._recent.setdefault(client, deque())
        while recent and recent[0] <= now - window_s:
            recent.popleft()
        if len(recent) >= limit:
            self._blocked_until[client] = now + block_s
            recent.clear()
            return block_s
        recent.append(now)
        return None

    def reset(self) -> None:
        self._recent.clear()
        self._blocked_until.clear()


@dataclass
class _Stats:
    total_requests: int = 0
    by_endpoint: Counter[str] = field(default_factory=Counter)
    status_429: int = 0
    bad_user_agent: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    updates: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)


class SimulatorState(HoldingState):
    """Store, edge behaviour (rate limit, faults, holds) and statistics."""

    def __init__(
        self,
        config: SimulatorConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        # A private copy: configure() changes this simulator, not the caller's object.
        self.config = dataclasses.replace(config)
        self.clock = clock
        # Order dates are calendar time, which clients compare with their own clock;
        # ``clock`` (the rate limiter's) is monotonic.
        self.wall_clock = wall_clock
        self.store = ListingStore(
            size=config.listings,
            seed=config.seed,
            markets=config.markets,
            market_coverage=config.market_coverage,
        )
        self.order_book = OrderBook(self.store)
        self._lock = threading.RLock()
        self._limiter = _RateLimiter()
        self._faults: list[_FaultRule] = []
        self._init_holds()
        self._request_numbers = itertools.count(1)
        self._ray_salt = random.Random(f"{config.seed}:ray").getrandbits(64)
        self._fault_rng = random.Random(f"{config.seed}:faults")
        self._stats = _Stats()
        self._sleepers: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._closing = False
        self._orders_task: asyncio.Task[None] | None = None

    # -- control: listings -----------------------------------------------------

    def _index(self, ref: ListingRef) -> int:
        index = self.store.resolve(ref)
        if index is None:
            raise UnknownListingError(f"no listing {ref!r}")
        return index

    def set_quantity(self, ref: ListingRef, quantity: int) -> None:
        """Change the stock behind Back Market's back (not recorded as an update)."""
        with self._lock:
            self.store.set_quantity(self._index(ref), quantity)

    def quantity_of(self, ref: ListingRef) -> int:
        with self._lock:
            return self.store.quantity(self._index(ref))

    # -- control: customer orders -------------------------------------------------
    # The methods live in simulator/orders.py; these hold the lock and keep the stats.

    def place_order(
        self,
        ref: ListingRef,
        units: int = 1,
        *,
        hidden: bool = False,
        market: str | None = None,
    ) -> PlacedOrder:
        """A customer buys ``units`` of one listing; its stock drops at once.

        Paid (state 1, listed by /ws/orders) unless ``hidden``: then state 0, not
        listed until ``pay_order``. ValueError (OrderConflict) when stock is short.
        """
        return self.place_basket([(ref, units)], hidden=hidden, market=market)

    def place_basket(
        self,
        items: Sequence[tuple[ListingRef, int]],
        *,
        hidden: bool = False,
        market: str | None = None,
    ) -> PlacedOrder:
        """One order with a line per ``(listing, units)`` item; see ``place_order``."""
        with self._lock:
            order = self.order_book.place(
                [(self._index(ref), units) for ref, units in items],
                market=market or self._order_market(),
                now=self.wall_clock(),
                paid=not hidden,
            )
            self._record_order(order)
            return PlacedOrder(order.order_id, tuple(line.id for line in order.lines))

    def pay_order(self, order_id: int) -> dict[str, Any]:
        """A hidden (state 0) order is paid: state 1, listed from now on."""
        with self._lock:
            return render_order(self.order_book.pay(order_id, now=self.wall_clock()))

    def fail_payment(self, order_id: int) -> dict[str, Any]:
        """A hidden (state 0) order is not paid: state 8, never listed, stock given back."""
        with self._lock:
            return render_order(self.order_book.fail_payment(order_id, now=self.wall_clock()))

    def cancel_line(self, order_id: int, line_id: int, state: int = 4) -> dict[str, Any]:
        """Line to 4 (cancelled), 5 or 6 (refunded); its units go back once."""
        with self._lock:
            return render_order(
                self.order_book.cancel_line(order_id, line_id, state=state, now=self.wall_clock())
            )

    def order(self, order_id: int) -> dict[str, Any]:
        """One order as rendered, hidden or not (UnknownOrderError)."""
        with self._lock:
            return render_order(self.order_book.get(order_id))

    def orders(self, *, include_hidden: bool = True) -> list[dict[str, Any]]:
        """Every order as rendered, oldest first; hidden ones (state 0, 8) unless told."""
        with self._lock:
            return [
                render_order(order)
                for order in self.order_book.all()
                if include_hidden or order.visible
            ]

    def _order_market(self) -> str:
        """The default market, unless orders cannot come from it (fi-fi is no CountryCode)."""
        candidates = (self.config.default_market, *self.config.markets)
        return next((m for m in candidates if m in COUNTRY_CODES), self.config.default_market)

    def _record_order(self, order: Order) -> None:
        for line in order.lines:
            identity = self.store.identity(line.listing_index)
            self._stats.orders.append(
                {
                    "id": identity.id,
                    "listing_id": identity.listing_id,
                    "sku": identity.sku,
                    # What the listing holds after the sale.
                    "quantity": self.store.quantity(line.listing_index),
                    "units": line.quantity,
                    "order_id": order.order_id,
                    "line_id": line.id,
                    "hidden": not order.visible,
                    "at": self.clock(),
                }
            )

    def add_listing(
        self,
        *,
        id: str | None = None,
        listing_id: int | None = None,
        sku: str | None = None,
        quantity: int = 0,
        publication_state: int = 2,
        markets: Iterable[str] | None = None,
        title: str | None = None,
        grade: str | None = None,
        prices: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Append a listing; returns its {"id", "listing_id", "sku"}.

        Identity fields left out follow the generated scheme; ``markets`` limits
        where it is published (default: all); ``prices`` maps market -> price.
        """
        with self._lock:
            index = self.store.add(
                id=id,
                listing_id=listing_id,
                sku=sku,
                quantity=quantity,
                publication_state=publication_state,
                markets=markets,
                title=title,
                grade=grade,
                prices=prices,
            )
            return dataclasses.asdict(self.store.identity(index))

    def remove_listing(self, ref: ListingRef) -> None:
        with self._lock:
            self.store.remove(self._index(ref))

    def listing(self, ref: ListingRef, market: str | None = None) -> dict[str, Any]:
        """The listing as the API would show it on ``market``."""
        with self._lock:
            return self.store.render(self._index(ref), market or self.config.default_market)

    def configure(self, **changes: Any) -> SimulatorConfig:
        """Change behaviour at run time (latency, limits, fault rate, status codes...)."""
        fixed = {"listings", "seed", "markets", "market_coverage"} & changes.keys()
        if fixed:
            raise ValueError(f"{sorted(fixed)} shape the catalogue and cannot change")
        with self._lock:
            updated = dataclasses.replace(self.config, **changes)
            self.config = updated
            if "requests_per_10s" in changes:
                self._limiter.reset()
            return dataclasses.replace(updated)

    # -- control: faults and holds ----------------------------------------------

    def fail_next(
        self,
        path_prefix: str,
        count: int = 1,
        kind: FaultKind = "500",
        *,
        method: str | None = None,
        page: int | None = None,
    ) -> None:
        """The next ``count`` requests under ``path_prefix`` fail as ``kind``.

        "truncate" only applies to GET /ws/listings and /ws/orders pages. Rules are used in the
        order they were given.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {sorted(FAULT_KINDS)}")
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._faults.append(
                _FaultRule(path_prefix, kind, count, method.upper() if method else None, page)
            )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def hold(self, path_prefix: str, page: int | None = None, *, method: str | None = None) -> Hold:
        """Park matching requests (after the rate limit and faults) until released."""
        return self._place_hold(path_prefix, page=page, method=method.upper() if method else None)

    # -- statistics ------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """A JSON-ready snapshot; keys of by_endpoint read "METHOD template status"."""
        with self._lock:
            current = self._stats
            return {
                "total_requests": current.total_requests,
                "by_endpoint": dict(current.by_endpoint),
                "status_429": current.status_429,
                "bad_user_agent": current.bad_user_agent,
                "in_flight": current.in_flight,
                "max_in_flight": current.max_in_flight,
                "faults": dict(current.faults),
                "updates": [dict(u) for u in current.updates],
                "orders": [dict(o) for o in current.orders],
            }

    def reset_stats(self) -> None:
        with self._lock:
            in_flight = self._stats.in_flight
            self._stats = _Stats(in_flight=in_flight, max_in_flight=in_flight)

    def record_update(
        self,
        ref: str,
        *,
        index: int | None,
        quantity: int | None,
        body: object,
        status: int,
    ) -> None:
        with self._lock:
            identity = self.store.identity(index) if index is not None else None
            self._stats.updates.append(
                {
                    "ref": ref,
                    "id": identity.id if identity else None,
                    "listing_id": identity.listing_id if identity else None,
                    "quantity": quantity,
                    "body": body,
                    "status": status,
                    "at": self.clock(),
                }
            )

    # -- the edge: admission of each /ws request ---------------------------------

    def admit(
        self,
        *,
        method: str,
        path: str,
        page: int | None,
        client: str,
        user_agent: str | None,
    ) -> Admission:
        """Count the request and decide whether it is refused, faulted or held."""
        with self._lock:
            number = next(self._request_numbers)
            ray = f"{(number * 0x9E3779B97F4A7C15 ^ self._ray_salt) & (2**64 - 1):016x}"
            stats = self._stats
            stats.total_requests += 1
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            if not is_documented_user_agent(user_agent):
                stats.bad_user_agent += 1
            template = endpoint_template(path)
            blocked_for = None
            limit = self.config.requests_per_10s
            if limit is not None:
                blocked_for = self._limiter.check(
                    client,
                    self.clock(),
                    limit=limit,
                    window_s=self.config.rate_limit_window_s,
                    block_s=self.config.rate_limit_block_s,
                )
            fault = None
            hold = None
            if blocked_for is None:
                fault = self._take_fault(method, path, template, page)
                if fault is not None:
                    stats.faults[fault] += 1
                else:
                    hold = self._matching_hold(method, path, page)
            return Admission(
                request_id=ray,
                cf_ray=f"{ray}-CDG",
                method=method,
                template=template,
                blocked_for_s=blocked_for,
                fault=fault,
                hold=hold,
            )

    def _take_fault(
        self, method: str, path: str, template: str, page: int | None
    ) -> FaultKind | None:
        for rule in self._faults:
            if not _matches(rule.path_prefix, rule.method, rule.page, method, path, page):
                continue
            if rule.kind == "truncate" and (method != "GET" or template not in PAGED_TEMPLATES):
                continue
            rule.remaining -= 1
            if rule.remaining == 0:
                self._faults.remove(rule)
            return rule.kind
        if self.config.fault_rate and self._fault_rng.random() < self.config.fault_rate:
            return self._fault_rng.choice(RANDOM_FAULT_KINDS)
        return None

    def _matching_hold(self, method: str, path: str, page: int | None) -> Hold | None:
        return next(
            (
                h
                for h in self._holds
                if _matches(h.path_prefix, h.method, h.page, method, path, page)
            ),
            None,
        )

    def finish(self, admission: Admission, status: int) -> None:
        with self._lock:
            stats = self._stats
            stats.in_flight -= 1
            stats.by_endpoint[f"{admission.method} {admission.template} {status}"] += 1
            if status == 429:
                stats.status_429 += 1

    # -- request handling (the origin) ---------------------------------------------

    def read_page(
        self,
        market: str,
        *,
        page: int | Literal["last"],
        page_size: int,
        publication_state: int | None = None,
        min_quantity: int | None = None,
        max_quantity: int | None = None,
    ) -> tuple[int, int, list[dict[str, Any]]]:
        """(count, page number, rendered listings) of one page, or InvalidPageError."""
        with self._lock:
            market_index = self.store.market_index(market)
            if market_index is None:
                raise KeyError(market)
            selected = self.store.select(
                market_index,
                publication_state=publication_state,
                min_quantity=min_quantity,
                max_quantity=max_quantity,
            )
            count = len(selected)
            number, start = _page_window(count, page, page_size)
            rows = [self.store.render(i, market) for i in selected[start : start + page_size]]
            return count, number, rows

    def read_orders(
        self,
        *,
        page: int | Literal["last"],
        page_size: int,
        date_creation: datetime | None = None,
        date_modification: datetime | None = None,
        state: int | None = None,
        country_code: str | None = None,
    ) -> tuple[int, int, list[dict[str, Any]]]:
        """(count, page number, rendered orders) of one /ws/orders page, or InvalidPageError."""
        with self._lock:
            selected = self.order_book.visible(
                date_creation=date_creation,
                date_modification=date_modification,
                state=state,
                country_code=country_code,
            )
            number, start = _page_window(len(selected), page, page_size)
            rows = [render_order(order) for order in selected[start : start + page_size]]
            return len(selected), number, rows

    def read_listing(
        self,
        market: str,
        *,
        id: str | None = None,
        listing_id: int | None = None,
        sku: str | None = None,
    ) -> dict[str, Any] | None:
        with self._lock:
            index = self._lookup(id=id, listing_id=listing_id, sku=sku)
            return None if index is None else self.store.render(index, market)

    def _lookup(
        self, *, id: str | None = None, listing_id: int | None = None, sku: str | None = None
    ) -> int | None:
        # Every criterion given must name the same listing.
        found: set[int | None] = set()
        if id is not None:
            found.add(self.store.find_by_uuid(id))
        if listing_id is not None:
            found.add(self.store.find_by_listing_id(listing_id))
        if sku is not None:
            found.add(self.store.find_by_sku(sku))
        return found.pop() if len(found) == 1 else None

    def update_listing(
        self,
        market: str,
        update: ListingUpdate,
        *,
        id: str | None = None,
        listing_id: int | None = None,
    ) -> dict[str, Any] | None:
        """Apply a partial update; the listing after it, or None when unknown."""
        with self._lock:
            index = self._lookup(id=id, listing_id=listing_id)
            if index is None:
                return None
            self.store.apply_update(index, market, update)
            return self.store.render(index, market)

    def lookup_index(self, *, id: str | None = None, listing_id: int | None = None) -> int | None:
        with self._lock:
            return self._lookup(id=id, listing_id=listing_id)

    # -- background work and sleeping -------------------------------------------

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

    def start_orders(self) -> None:
        """Start the customer-orders task on the running loop (lifespan does this).

        It runs even at 0 orders a minute so that configure() can turn orders on.
        """
        if self._orders_task is None:
            self._orders_task = asyncio.get_running_loop().create_task(
                self._place_orders(), name="simulator-orders"
            )

    async def _place_orders(self) -> None:
        rng = random.Random(f"{self.config.seed}:orders")
        while not self._closing:
            per_second = self.config.orders_per_minute / 60
            if per_second <= 0:
                # Turned off at run time; look again later.
                if not await self.pause(0.2):
                    return
                continue
            if not await self.pause(rng.expovariate(per_second)):
                return
            with self._lock:
                self._order_something(rng)

    def _order_something(self, rng: random.Random) -> None:
        # Customers only buy what is in stock; give up quietly on a sold-out catalogue.
        total = self.store.total
        for _ in range(32 if total else 0):
            index = rng.randrange(total)
            if index in self.store and self.store.quantity(index) > 0:
                order = self.order_book.place(
                    [(index, 1)],
                    market=self._order_market(),
                    now=self.wall_clock(),
                    paid=True,
                )
                self._record_order(order)
                return

    async def close(self) -> None:
        """Stop background work and let parked or sleeping requests finish."""
        self.wake_everything()
        task, self._orders_task = self._orders_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake_everything(self) -> None:
        """Thread-safe part of close(): releases holds and interrupts pauses."""
        with self._lock:
            self._closing = True
            sleepers = list(self._sleepers)
        for loop, event in sleepers:
            set_threadsafe(loop, event)
        self.release_all()


def _matches(
    prefix: str,
    rule_method: str | None,
    rule_page: int | None,
    method: str,
    path: str,
    page: int | None,
) -> bool:
    if not path.startswith(prefix):
        return False
    if rule_method is not None and rule_method != method:
        return False
    return rule_page is None or rule_page == (page or 1)
