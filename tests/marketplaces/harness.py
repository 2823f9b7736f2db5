"""Each adapter beside its simulator, as the behaviour suite drives it.

Like a dialect's requirements in SQLAlchemy's test suite: `AdapterUnderTest` says how to reach
one marketplace's simulator (place an order, queue a fault, read a stock) and what legitimately
differs between marketplaces (page size, fault names, whether an update is retried after a 429).
The tests themselves speak only the `Marketplace` protocol. A third marketplace adds a subclass
here and passes the suite it did not write.
"""

from __future__ import annotations

import enum
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx

from app.config import load_settings
from app.services.backmarket.adapter import BackMarketMarketplace
from app.services.marketplace import Marketplace
from app.services.refurbed import LIST_OFFERS, MAX_BATCH_SIZE, RefurbedMarketplace
from simulator.app import create_simulator_app
from simulator.config import SimulatorConfig
from simulator.refurbed.app import create_refurbed_simulator_app
from simulator.refurbed.config import RefurbedSimulatorConfig
from tests.services.test_backmarket_client import FakeTime

TOKEN = "suite-token-0123456789"
# Every adapter is built with this many attempts, so "after the retries" is one number.
MAX_ATTEMPTS = 3


class Operation(enum.Enum):
    """The calls a fault can be queued for."""

    READ_ONE = "read one listing"
    UPDATE = "update one listing"
    LIST_PAGE = "read a page of every listing"


@dataclass(frozen=True)
class FaultNames:
    """What each simulator calls the faults the suite needs."""

    server_error: str
    too_many_requests: str
    wrong_shape: str
    # Applied, then no usable answer.
    lost_answer: str


class RequestHook(httpx.AsyncBaseTransport):
    """The simulator's ASGI transport, with a hook that may queue a fault just before a
    request is forwarded (for a fault the simulator can only aim by path)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.before: Callable[[httpx.Request], None] | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.before is not None:
            self.before(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class AdapterUnderTest(ABC):
    """One marketplace's adapter, its in-process simulator and the simulator's control API."""

    catalogue_size: int
    time: FakeTime = field(default_factory=FakeTime)
    adapter: Marketplace = field(init=False)
    control: httpx.AsyncClient = field(init=False)
    hook: RequestHook = field(init=False)
    _clients: list[httpx.AsyncClient] = field(default_factory=list, init=False)

    name: ClassVar[str]
    base_url: ClassVar[str]
    # Listings one call of the bulk feed carries at most.
    page_size: ClassVar[int]
    faults: ClassVar[FaultNames]
    # Listings one call of `get_listings` reads at most (Back Market has no batch read).
    listings_per_read_call: ClassVar[int]
    # A reference in the marketplace's own format that names no listing.
    unknown_reference: ClassVar[str]
    # Back Market's update after a 429 surely was not processed and is sent again; Refurbed
    # never sends an update twice.
    retries_update_after_429: ClassVar[bool]

    def __post_init__(self) -> None:
        app = self.simulator_app()
        self.hook = RequestHook(httpx.ASGITransport(app=app))
        self.control = self._client()
        self.adapter = self.build(token=TOKEN)

    # -- what each marketplace provides ---------------------------------------------------------

    @abstractmethod
    def simulator_app(self) -> Any: ...

    @abstractmethod
    def build(self, *, token: str) -> Marketplace:
        """The adapter, built as the wiring builds it, on the simulator and the fake clock."""

    @abstractmethod
    def set_rate_limit_pause(self, seconds: float) -> None:
        """How long a 429 without Retry-After or reset holds the account."""

    @abstractmethod
    async def fail_next(self, operation: Operation, kind: str, *, count: int = 1) -> None: ...

    @abstractmethod
    async def fail_listing_page(self, page: int, kind: str, *, count: int) -> None:
        """Page `page` of the bulk feed (in reading order, from 1) fails `count` times."""

    @abstractmethod
    async def place_order(self, sku: str, *, units: int) -> None: ...

    @abstractmethod
    async def stock_of(self, sku: str) -> int: ...

    # -- shared ---------------------------------------------------------------------------------

    def sku(self, index: int) -> str:
        """The SKU of the simulator's listing `index` (0-based); both simulators share them."""
        return f"SKU-{index + 1:07d}"

    def feed_floor(self) -> int:
        """The fewest calls that can read the whole catalogue."""
        return math.ceil(self.catalogue_size / self.page_size) * len(self.adapter.feeds)

    def _client(self) -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=self.hook, base_url=self.base_url)
        self._clients.append(client)
        return client

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()

    async def _post(self, path: str, body: dict[str, Any]) -> None:
        response = await self.control.post(path, json=body)
        assert response.status_code == 201, response.text


class BackMarketUnderTest(AdapterUnderTest):
    name = "backmarket"
    base_url = "http://bm.test"
    page_size = 50
    listings_per_read_call = 1
    faults = FaultNames(
        server_error="500",
        too_many_requests="429",
        wrong_shape="error200",
        lost_answer="lost_response",
    )
    unknown_reference = "00000000-0000-4000-8000-000000000000"
    retries_update_after_429 = True

    _fault_targets: ClassVar[dict[Operation, tuple[str, str]]] = {
        Operation.READ_ONE: ("/ws/listings/", "GET"),
        Operation.UPDATE: ("/ws/listings/", "POST"),
        Operation.LIST_PAGE: ("/ws/listings", "GET"),
    }

    def simulator_app(self) -> Any:
        return create_simulator_app(
            SimulatorConfig(listings=self.catalogue_size, token=TOKEN, markets=("fr-fr",))
        )

    def build(self, *, token: str) -> Marketplace:
        settings = load_settings(
            {},
            backmarket_token=token,
            backmarket_base_url=self.base_url,
            backmarket_markets=["fr-fr"],
            backmarket_requests_per_10s=10_000,
            backmarket_max_attempts=MAX_ATTEMPTS,
        )
        (config,) = settings.marketplace_settings()
        return BackMarketMarketplace.build(
            config, http=self._client(), sleep=self.time.sleep, clock=self.time.clock
        )

    def set_rate_limit_pause(self, seconds: float) -> None:
        assert isinstance(self.adapter, BackMarketMarketplace)
        self.adapter.client.default_rate_limit_pause_seconds = seconds

    async def fail_next(self, operation: Operation, kind: str, *, count: int = 1) -> None:
        path_prefix, method = self._fault_targets[operation]
        await self._post(
            "/_sim/faults",
            {"path_prefix": path_prefix, "method": method, "count": count, "kind": kind},
        )

    async def fail_listing_page(self, page: int, kind: str, *, count: int) -> None:
        path_prefix, method = self._fault_targets[Operation.LIST_PAGE]
        await self._post(
            "/_sim/faults",
            {
                "path_prefix": path_prefix,
                "method": method,
                "page": page,
                "count": count,
                "kind": kind,
            },
        )

    async def place_order(self, sku: str, *, units: int) -> None:
        await self._post("/_sim/orders", {"lines": [{"listing": sku, "units": units}]})

    async def stock_of(self, sku: str) -> int:
        response = await self.control.get(f"/_sim/listings/{sku}/quantity")
        response.raise_for_status()
        return int(response.json()["quantity"])


class RefurbedUnderTest(AdapterUnderTest):
    name = "refurbed"
    base_url = "http://refurbed.test"
    page_size = 100
    listings_per_read_call = MAX_BATCH_SIZE
    faults = FaultNames(
        server_error="500",
        too_many_requests="429",
        wrong_shape="wrong_shape",
        lost_answer="lost_response",
    )
    unknown_reference = "99999999999"
    retries_update_after_429 = False

    _fault_targets: ClassVar[dict[Operation, str]] = {
        Operation.READ_ONE: "/refb.merchant.v1.OfferService/GetOffer",
        Operation.UPDATE: "/refb.merchant.v1.OfferService/UpdateOffer",
        Operation.LIST_PAGE: LIST_OFFERS.path,
    }

    def simulator_app(self) -> Any:
        return create_refurbed_simulator_app(
            RefurbedSimulatorConfig(offers=self.catalogue_size, token=TOKEN)
        )

    def build(self, *, token: str) -> Marketplace:
        settings = load_settings(
            {
                "MARKETPLACE_4_KIND": "refurbed",
                "MARKETPLACE_4_TOKEN": token,
                "MARKETPLACE_4_BASE_URL": self.base_url,
                "MARKETPLACE_4_REQUESTS_PER_10S": "10000",
            }
        )
        config = settings.marketplace_settings()[1]
        # The wiring's factory with a fake clock and the suite's attempts.
        return RefurbedMarketplace(
            marketplace_id=config.id,
            name=config.name,
            token=None if config.token is None else config.token.get_secret_value(),
            base_url=config.base_url,
            requests_per_10s=config.requests_per_10s,
            updates_per_hour=config.updates_per_hour,
            max_attempts=MAX_ATTEMPTS,
            http=self._client(),
            sleep=self.time.sleep,
            clock=self.time.clock,
        )

    def set_rate_limit_pause(self, seconds: float) -> None:
        assert isinstance(self.adapter, RefurbedMarketplace)
        self.adapter.transport.default_rate_limit_pause_seconds = seconds

    async def fail_next(self, operation: Operation, kind: str, *, count: int = 1) -> None:
        path_prefix = self._fault_targets[operation]
        await self._post("/_sim/faults", {"path_prefix": path_prefix, "count": count, "kind": kind})

    async def fail_listing_page(self, page: int, kind: str, *, count: int) -> None:
        # The simulator aims faults by path only, and ListOffers pages share theirs: the page is
        # known by its cursor, so the fault is queued when that page's first request goes out.
        cursors: list[str | None] = []
        control = self.hook.inner
        assert isinstance(control, httpx.ASGITransport)
        app = control.app

        def before(request: httpx.Request) -> None:
            if request.url.path != LIST_OFFERS.path:
                return
            cursor = json.loads(request.content)["pagination"].get("starting_after")
            if cursor in cursors:
                return
            cursors.append(cursor)
            if len(cursors) == page:
                app.state.sim.fail_next(LIST_OFFERS.path, count, kind)  # type: ignore[attr-defined]

        self.hook.before = before

    async def place_order(self, sku: str, *, units: int) -> None:
        await self._post("/_sim/orders", {"items": [{"offer": sku, "units": units}]})

    async def stock_of(self, sku: str) -> int:
        response = await self.control.get(f"/_sim/offers/{sku}/stock")
        response.raise_for_status()
        return int(response.json()["stock"])


ADAPTERS: dict[str, type[AdapterUnderTest]] = {
    BackMarketUnderTest.name: BackMarketUnderTest,
    RefurbedUnderTest.name: RefurbedUnderTest,
}
