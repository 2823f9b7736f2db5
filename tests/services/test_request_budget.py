"""The request budget's priorities: live calls before the watcher before bulk-sync pages, a reserve
and a pace for bulk. Time is virtual and moves only when every task waits, so order and waits
are exact and nothing here depends on the machine's speed."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import respx
from prometheus_client import REGISTRY

from app.services.backmarket import BackMarketClient
from app.services.backmarket.budget import CallKind, PausedTooLong, RequestBudget
from tests.services.test_backmarket_client import (
    BASE,
    LISTING_PATH,
    FakeCatalogue,
    client_settings,
    listing_json,
)

LIVE, WATCHER, BULK = CallKind.LIVE, CallKind.WATCHER, CallKind.BULK
# Event-loop turns that let every woken task run until it waits again; the chains here (a grant
# waking the next head, an httpx mock round trip) take far fewer.
SETTLE_TURNS = 200
WINDOW = 10.2


class VirtualTime:
    """A clock that stands still while any task can run, then jumps to the next sleeper's end."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        wakeup: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + seconds, next(self._order), wakeup))
        await wakeup

    async def settle(self) -> None:
        for _ in range(SETTLE_TURNS):
            await asyncio.sleep(0)

    async def run_until(self, done: Callable[[], bool], *, max_jumps: int = 100_000) -> None:
        await self.settle()
        for _ in range(max_jumps):
            if done():
                return
            while self._timers and self._timers[0][2].done():
                heapq.heappop(self._timers)  # its sleeper was cancelled
            assert self._timers, "every task waits and no sleeper is left to wake"
            deadline = self._timers[0][0]
            self.now = max(self.now, deadline)
            while self._timers and self._timers[0][0] <= deadline:
                wakeup = heapq.heappop(self._timers)[2]
                if not wakeup.done():
                    wakeup.set_result(None)
            await self.settle()
        raise AssertionError("the condition never came true")


# The budgets of these tests count under their own marketplace id, apart from the service's.
BUDGET_MARKETPLACE = 90


@pytest.fixture
def vtime() -> VirtualTime:
    return VirtualTime()


def make_budget(vtime: VirtualTime, max_requests: int = 20) -> RequestBudget:
    return RequestBudget(
        marketplace_id=BUDGET_MARKETPLACE,
        max_requests=max_requests,
        window=WINDOW,
        clock=vtime.clock,
        sleep=vtime.sleep,
    )


class Grants:
    """Starts acquires as tasks and logs (name, time) as each is granted."""

    def __init__(self, budget: RequestBudget, vtime: VirtualTime) -> None:
        self.budget = budget
        self.vtime = vtime
        self.log: list[tuple[str, float]] = []
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self, name: str, kind: CallKind, *, max_pause: float = 60.0) -> None:
        async def take() -> None:
            await self.budget.acquire(max_pause=max_pause, kind=kind)
            self.log.append((name, self.vtime.now))

        self.tasks[name] = asyncio.create_task(take())
        # Let it reach the queue, so arrival order is the order of these calls.
        await self.vtime.settle()

    async def fill_window(self, count: int) -> None:
        """`count` LIVE sends at once, granted at the current time."""
        for _ in range(count):
            await self.budget.acquire(max_pause=60.0, kind=LIVE)

    @property
    def order(self) -> list[str]:
        return [name for name, _ in self.log]

    def at(self, name: str) -> float:
        return dict(self.log)[name]

    def all_done(self) -> bool:
        return all(task.done() for task in self.tasks.values())


def waiting_gauge(kind: str) -> float:
    labels = {"marketplace_id": str(BUDGET_MARKETPLACE), "kind": kind}
    return REGISTRY.get_sample_value("backmarket_budget_waiting", labels) or 0.0


def wait_count(kind: str) -> float:
    labels = {"marketplace_id": str(BUDGET_MARKETPLACE), "kind": kind}
    return REGISTRY.get_sample_value("backmarket_budget_wait_seconds_count", labels) or 0.0


# -- priority ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("queued", "arriving"),
    [(BULK, LIVE), (BULK, WATCHER), (WATCHER, LIVE)],
    ids=["live_before_bulk", "watcher_before_bulk", "live_before_watcher"],
)
async def test_a_later_call_of_higher_priority_is_granted_before_the_queued_ones(
    vtime: VirtualTime, queued: CallKind, arriving: CallKind
) -> None:
    grants = Grants(make_budget(vtime, max_requests=20), vtime)
    await grants.fill_window(20)
    for number in range(3):
        await grants.start(f"queued-{number}", queued)

    await grants.start("arriving", arriving)
    await vtime.run_until(grants.all_done)

    assert grants.order == ["arriving", "queued-0", "queued-1", "queued-2"]


async def test_waiters_go_live_then_watcher_then_bulk_and_by_arrival_within_a_kind(
    vtime: VirtualTime,
) -> None:
    grants = Grants(make_budget(vtime, max_requests=20), vtime)
    await grants.fill_window(20)
    arrivals = [("bulk-a", BULK), ("watcher-a", WATCHER), ("live-a", LIVE), ("bulk-b", BULK)]
    arrivals += [("live-b", LIVE), ("watcher-b", WATCHER)]
    for name, kind in arrivals:
        await grants.start(name, kind)

    await vtime.run_until(grants.all_done)

    assert grants.order == ["live-a", "live-b", "watcher-a", "watcher-b", "bulk-a", "bulk-b"]


async def test_a_live_call_overtakes_a_bulk_head_already_sleeping_until_its_slot(
    vtime: VirtualTime,
) -> None:
    budget = make_budget(vtime, max_requests=20)
    grants = Grants(budget, vtime)
    await grants.start("bulk-head", BULK)  # sent at once, sets the pace
    await grants.start("bulk-next", BULK)  # sleeps one pacing interval
    started = vtime.now

    await grants.start("live", LIVE)
    await vtime.run_until(grants.all_done)

    assert grants.order == ["bulk-head", "live", "bulk-next"]
    assert grants.at("live") == started
    assert grants.at("bulk-next") == pytest.approx(started + budget.bulk_interval, abs=0.002)


# -- reserve and pace of bulk -----------------------------------------------------------------


async def test_bulk_never_takes_the_reserved_slots_but_a_live_call_does(
    vtime: VirtualTime,
) -> None:
    budget = make_budget(vtime, max_requests=20)
    grants = Grants(budget, vtime)
    assert budget.reserved == 2
    await grants.fill_window(18)
    full_at = vtime.now

    await grants.start("bulk", BULK)
    await grants.start("live-1", LIVE)
    await grants.start("live-2", LIVE)
    await vtime.run_until(grants.all_done)

    assert grants.at("live-1") == grants.at("live-2") == full_at
    # Only once the 18 sends have left the window may bulk send again.
    assert grants.at("bulk") == pytest.approx(full_at + WINDOW, abs=0.002)
    assert grants.order == ["live-1", "live-2", "bulk"]


async def test_bulk_sends_are_paced_evenly_and_fill_only_the_unreserved_share(
    vtime: VirtualTime,
) -> None:
    budget = make_budget(vtime, max_requests=20)
    grants = Grants(budget, vtime)
    started = vtime.now
    for number in range(60):
        await grants.start(f"page-{number}", BULK)

    await vtime.run_until(grants.all_done)

    times = [time for _, time in grants.log]
    assert budget.bulk_interval == pytest.approx(WINDOW / 18)
    assert times[0] == started
    for earlier, later in itertools.pairwise(times):
        assert later - earlier == pytest.approx(budget.bulk_interval, abs=0.002)
    # No window holds more than the 18 unreserved slots.
    for first, nineteenth in zip(times, times[18:], strict=False):
        assert nineteenth - first >= WINDOW - 0.002


@pytest.mark.parametrize(("max_requests", "reserved"), [(1, 0), (3, 0), (4, 1), (20, 2), (55, 5)])
def test_the_reserve_is_a_tenth_of_the_budget_at_least_one_and_none_below_four(
    vtime: VirtualTime, max_requests: int, reserved: int
) -> None:
    assert make_budget(vtime, max_requests=max_requests).reserved == reserved


async def test_ten_live_reads_in_a_row_during_a_saturating_sync_each_wait_one_interval_at_most(
    vtime: VirtualTime,
) -> None:
    budget = make_budget(vtime, max_requests=20)
    bulk_sent: list[float] = []

    async def page_fetcher() -> None:
        while True:
            await budget.acquire(max_pause=60.0, kind=BULK)
            bulk_sent.append(vtime.now)

    fetchers = [asyncio.create_task(page_fetcher()) for _ in range(8)]
    # Several windows of sync first, so the window is as full as the sync ever keeps it.
    sync_started = vtime.now
    await vtime.run_until(lambda: vtime.now >= sync_started + 3 * WINDOW)
    waits: list[float] = []

    async def person() -> None:
        for _ in range(10):
            asked = vtime.now
            await budget.acquire(max_pause=60.0, kind=LIVE)
            waits.append(vtime.now - asked)

    reads = asyncio.create_task(person())
    await vtime.run_until(reads.done)
    await vtime.run_until(lambda: vtime.now >= sync_started + 10 * WINDOW)
    for fetcher in fetchers:
        fetcher.cancel()
    await vtime.settle()

    assert len(waits) == 10
    assert max(waits) <= budget.bulk_interval + 0.002
    # The sync kept the unreserved share: 18 per window over the ten windows, less the slots the
    # ten live reads took from it.
    in_ten_windows = [sent for sent in bulk_sent if sent < sync_started + 10 * WINDOW - 0.1]
    assert 180 - 10 <= len(in_ten_windows) <= 180
    assert budget.snapshot()["waiting"] == {"live": 0, "watcher": 0, "bulk": 0}


# -- the 429 pause ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(CallKind))
async def test_the_429_pause_holds_every_kind_and_too_long_a_pause_refuses_it(
    vtime: VirtualTime, kind: CallKind
) -> None:
    budget = make_budget(vtime)
    grants = Grants(budget, vtime)
    paused_at = vtime.now
    budget.pause_until(paused_at + 5.0)

    with pytest.raises(PausedTooLong) as refused:
        await budget.acquire(max_pause=1.0, kind=kind)
    await grants.start("patient", kind, max_pause=10.0)
    await vtime.run_until(grants.all_done)

    assert refused.value.remaining == pytest.approx(5.0)
    assert grants.at("patient") == pytest.approx(paused_at + 5.0, abs=0.002)


# -- cancellation -----------------------------------------------------------------------------


async def test_a_cancelled_head_leaves_the_queue_and_the_next_waiter_is_served(
    vtime: VirtualTime,
) -> None:
    budget = make_budget(vtime, max_requests=5)
    grants = Grants(budget, vtime)
    await grants.fill_window(5)
    full_at = vtime.now
    live_waiting_before = waiting_gauge("live")
    await grants.start("head", LIVE)  # sleeping until the window frees
    await grants.start("middle", WATCHER)  # waiting for its turn
    await grants.start("last", BULK)

    grants.tasks["head"].cancel()
    grants.tasks["middle"].cancel()
    await vtime.run_until(lambda: grants.tasks["last"].done())

    assert grants.order == ["last"]
    assert grants.at("last") == pytest.approx(full_at + WINDOW, abs=0.002)
    assert budget.snapshot()["waiting"] == {"live": 0, "watcher": 0, "bulk": 0}
    assert waiting_gauge("live") == live_waiting_before


async def test_a_head_refused_by_a_long_pause_leaves_the_queue_and_the_next_is_served(
    vtime: VirtualTime,
) -> None:
    budget = make_budget(vtime, max_requests=5)
    grants = Grants(budget, vtime)
    await grants.fill_window(5)
    await grants.start("head", LIVE, max_pause=1.0)  # sleeping until the window frees
    await grants.start("next", BULK)
    paused_until = vtime.now + 30.0
    budget.pause_until(paused_until)

    await vtime.run_until(grants.all_done)

    assert isinstance(grants.tasks["head"].exception(), PausedTooLong)
    assert grants.order == ["next"]
    assert grants.at("next") == pytest.approx(paused_until, abs=0.002)
    assert budget.snapshot()["waiting"] == {"live": 0, "watcher": 0, "bulk": 0}


# -- what the status page shows ---------------------------------------------------------------


async def test_snapshot_and_metrics_show_the_window_and_the_waiters_by_kind(
    vtime: VirtualTime,
) -> None:
    budget = make_budget(vtime, max_requests=5)
    grants = Grants(budget, vtime)
    live_waits_before = wait_count("live")
    await grants.fill_window(5)
    bulk_waiting_before = waiting_gauge("bulk")
    await grants.start("watcher", WATCHER)
    await grants.start("bulk-1", BULK)
    await grants.start("bulk-2", BULK)

    assert budget.snapshot() == {
        "window_used": 5,
        "max_requests": 5,
        "reserved": 1,
        "waiting": {"live": 0, "watcher": 1, "bulk": 2},
    }
    assert waiting_gauge("bulk") == bulk_waiting_before + 2
    assert wait_count("live") == live_waits_before + 5

    await vtime.run_until(grants.all_done)
    assert budget.snapshot()["waiting"] == {"live": 0, "watcher": 0, "bulk": 0}
    assert waiting_gauge("bulk") == bulk_waiting_before


# -- through the client -----------------------------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[tuple[httpx.AsyncClient, respx.Router]]:
    router = respx.Router(base_url=BASE, assert_all_called=False)
    async with httpx.AsyncClient(
        base_url=BASE, transport=httpx.MockTransport(router.async_handler)
    ) as client:
        yield client, router


async def test_a_get_listing_during_a_feed_read_is_sent_before_the_queued_page_requests(
    vtime: VirtualTime, http: tuple[httpx.AsyncClient, respx.Router]
) -> None:
    http_client, router = http
    catalogue = FakeCatalogue(30 * 50)
    seen: list[str] = []

    def listing(request: httpx.Request, ref: str) -> httpx.Response:
        seen.append(f"listing {ref}")
        return httpx.Response(200, json=listing_json(7))

    def page(request: httpx.Request) -> httpx.Response:
        seen.append(f"page {request.url.params['page']}")
        return catalogue(request)

    router.get("/ws/listings").mock(side_effect=page)
    router.get(path__regex=LISTING_PATH).mock(side_effect=listing)
    client = BackMarketClient(
        client_settings(backmarket_requests_per_10s=20, backmarket_page_concurrency=4),
        http=http_client,
        sleep=vtime.sleep,
        clock=vtime.clock,
        marketplace_id=BUDGET_MARKETPLACE,
    )
    pages_read: list[int] = []

    async def read_feed() -> None:
        async for listing_page in client.iter_listing_pages("fr-fr"):
            pages_read.append(listing_page.page)

    feed = asyncio.create_task(read_feed())
    await vtime.run_until(lambda: len(seen) >= 5)
    # The page fetchers are queued in the budget, waiting for their paced slots.
    assert waiting_gauge("bulk") >= 3
    sent_before = len(seen)

    read = asyncio.create_task(client.get_listing("7"))
    await vtime.run_until(read.done)
    await vtime.run_until(feed.done)

    assert (await read).listing_id == 7
    assert seen[sent_before] == "listing 7"
    assert sorted(pages_read) == list(range(1, 31))
    assert len(seen) == 31
