"""`RefurbedMarketplace`: one Refurbed merchant account behind the `Marketplace` interface.

Calls: `OfferService/ListOffers` (a bulk sync's one feed, "offers"), `GetOffer` (a refresh),
`BatchGetOffers` (several offers, at most 50 a call), `UpdateOffer` (set one offer's stock,
absolute) and `OrderService/ListOrders` (order lines released since a moment). Every call of the
account shares one request budget (`requests_per_10s` per 10.2 s, live before watcher before
bulk) and the pauses Refurbed's rate-limit headers and 429s set; how a call is retried is in
`transport`, how a list is read to its end in `feeds`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import httpx

from app.services.marketplace.account import AccountConnection
from app.services.marketplace.budget import CallKind, Clock, Sleep
from app.services.marketplace.errors import MarketplaceError, NotFound
from app.services.marketplace.protocol import MarketplaceKind
from app.services.marketplace.types import (
    Listing,
    ListingPage,
    ListingRef,
    OrderLinesPage,
    OrderTime,
)
from app.services.refurbed.answers import (
    RateLimitHeaders,
    RpcCode,
    UnexpectedShape,
    as_int,
    entry_error,
)
from app.services.refurbed.feeds import OFFERS_FEED, iter_offer_pages, iter_released_order_lines
from app.services.refurbed.methods import BATCH_GET_OFFERS, GET_OFFER, MAX_BATCH_SIZE, UPDATE_OFFER
from app.services.refurbed.offers import identifier, listing_of_offer, offer_in_answer
from app.services.refurbed.transport import Transport

DEFAULT_BASE_URL = "https://api.refurbed.com"


@dataclass(frozen=True, slots=True)
class OfferResult:
    """One entry of a BatchGetOffers answer: the offer, or why there is none."""

    ref: ListingRef
    listing: Listing | None
    error: MarketplaceError | None


def batch_results(body: Any, *, refs: Sequence[ListingRef]) -> list[OfferResult]:
    """A BatchGetOffers body `{"results": [{"status", "offer"}]}` in request order, or
    UnexpectedShape. An entry's own failure (NOT_FOUND...) is that entry's, not the batch's."""
    if not isinstance(body, Mapping):
        raise UnexpectedShape("the body is not a JSON object")
    results = body.get("results")
    if not isinstance(results, list):
        raise UnexpectedShape("the body has no 'results' list")
    if len(results) != len(refs):
        raise UnexpectedShape(f"{len(results)} results for {len(refs)} offers asked")
    entries: list[OfferResult] = []
    for index, (ref, result) in enumerate(zip(refs, results, strict=True)):
        if not isinstance(result, Mapping):
            raise UnexpectedShape(f"result {index} is not a JSON object")
        status = result.get("status")
        if isinstance(status, Mapping) and as_int(status.get("code")) not in (None, RpcCode.OK):
            call = f"POST {BATCH_GET_OFFERS.path} entry {index} ({ref})"
            error = entry_error(status, call=call, endpoint=BATCH_GET_OFFERS.endpoint)
            entries.append(OfferResult(ref, None, error))
            continue
        try:
            entries.append(OfferResult(ref, listing_of_offer(result.get("offer")), None))
        except MarketplaceError as exc:
            raise UnexpectedShape(f"result {index}: {exc}") from None
    return entries


class RefurbedMarketplace(AccountConnection):
    """One Refurbed merchant account, shared by every caller of the process."""

    kind: MarketplaceKind = "refurbed"

    def __init__(
        self,
        *,
        marketplace_id: int,
        name: str,
        token: str | None,
        base_url: str = DEFAULT_BASE_URL,
        requests_per_10s: int = 20,
        updates_per_hour: int = 2000,
        max_attempts: int = 5,
        connect_timeout_seconds: float = 5.0,
        read_timeout_seconds: float = 30.0,
        max_in_flight: int = 8,
        http: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        if requests_per_10s < 1 or max_attempts < 1:
            raise ValueError("requests_per_10s and max_attempts must be at least 1")
        self._id = marketplace_id
        self._name = name
        self._base_url = base_url.rstrip("/")
        self.updates_per_hour = updates_per_hour
        super().__init__(
            marketplace_id=marketplace_id,
            http=http,
            base_url=self._base_url,
            read_timeout_seconds=read_timeout_seconds,
            connect_timeout_seconds=connect_timeout_seconds,
            max_connections=max_in_flight,
            requests_per_window=requests_per_10s,
            clock=clock,
            sleep=sleep,
        )
        self.transport = Transport(
            marketplace_id=marketplace_id,
            http=self._http,
            token=token,
            budget=self._budget,
            max_attempts=max_attempts,
            max_in_flight=max_in_flight,
            clock=clock,
            wall_clock=wall_clock,
            sleep=sleep,
        )

    @property
    def id(self) -> int:
        return self._id

    @property
    def name(self) -> str:
        return self._name

    @property
    def feeds(self) -> Sequence[str]:
        """One feed: an offer's stock is global to every Refurbed market."""
        return (OFFERS_FEED,)

    @property
    def requests_total(self) -> int:
        return self.transport.requests_total

    def __repr__(self) -> str:
        return (
            f"RefurbedMarketplace(id={self._id}, base_url={self._base_url!r}, "
            f"requests_total={self.requests_total})"
        )

    def rate_limit(self) -> RateLimitHeaders | None:
        """The `X-RateLimit-*` headers of the last answer that carried them."""
        return self.transport.last_rate_limit

    def stats(self) -> dict[str, int]:
        """Requests sent so far, keyed "Service/Method outcome"."""
        return self.transport.stats()

    # -- the Marketplace operations ------------------------------------------------------------

    async def iter_listing_pages(self, feed: str) -> AsyncIterator[ListingPage]:
        """Every page of the account's offers (ListOffers), then its completeness."""
        if feed != OFFERS_FEED:
            raise ValueError(f"Refurbed has one feed, {OFFERS_FEED!r}, not {feed!r}")
        async with aclosing(iter_offer_pages(self.transport)) as pages:
            async for page in pages:
                yield page

    async def get_listing(self, ref: ListingRef, *, kind: CallKind = CallKind.LIVE) -> Listing:
        """GetOffer by the stored offer id, else by SKU; NotFound when Refurbed knows none."""
        reply = await self.transport.call(
            GET_OFFER, {"identifier": identifier(ref)}, parse=offer_in_answer, kind=kind
        )
        return reply.value

    async def batch_get_offers(
        self, refs: Sequence[ListingRef], *, kind: CallKind = CallKind.LIVE
    ) -> list[OfferResult]:
        """BatchGetOffers, 50 offers a call; one result per distinct ref, in the order asked.

        An offer Refurbed does not find is an entry with NotFound, not a failure of its batch;
        a batch that fails as a whole raises.
        """
        distinct = list(dict.fromkeys(refs))
        results: list[OfferResult] = []
        for start in range(0, len(distinct), MAX_BATCH_SIZE):
            chunk = distinct[start : start + MAX_BATCH_SIZE]
            body = {"offers": [{"identifier": identifier(ref)} for ref in chunk]}
            reply = await self.transport.call(
                BATCH_GET_OFFERS,
                body,
                parse=partial(batch_results, refs=chunk),
                kind=kind,
            )
            results.extend(reply.value)
        return results

    async def get_listings(
        self, refs: Sequence[ListingRef], *, kind: CallKind = CallKind.LIVE
    ) -> Mapping[ListingRef, Listing]:
        """The offers found, by ref; one not found is left out, any other failure raises."""
        found: dict[ListingRef, Listing] = {}
        for result in await self.batch_get_offers(refs, kind=kind):
            if result.listing is not None:
                found[result.ref] = result.listing
            elif result.error is not None and not isinstance(result.error, NotFound):
                raise result.error
        return found

    async def set_quantity(
        self, ref: ListingRef, *, quantity: int, kind: CallKind = CallKind.LIVE
    ) -> Listing:
        """UpdateOffer {identifier, stock}: absolute, sent once, the offer answered returned.

        OutcomeUnknown when it may have been applied without a usable answer (5xx, timeout,
        dropped connection, a 2xx that is not an offer).
        """
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
            raise ValueError("quantity must be a non-negative integer")
        reply = await self.transport.call(
            UPDATE_OFFER,
            {"identifier": identifier(ref), "stock": quantity},
            parse=offer_in_answer,
            repeatable=False,
            kind=kind,
        )
        return reply.value

    async def read_order_lines(
        self, *, since: datetime, by: OrderTime = "changed", kind: CallKind = CallKind.WATCHER
    ) -> AsyncIterator[OrderLinesPage]:
        """Lines of the orders released at or after `since`.

        Refurbed filters orders by release only, so `by` "changed" and "created" read the same:
        a later state change of an order released before `since` is not seen here.
        """
        async with aclosing(
            iter_released_order_lines(self.transport, since=since, kind=kind)
        ) as pages:
            async for page in pages:
                yield page


def build_refurbed_marketplace(
    *,
    marketplace_id: int,
    name: str,
    token: str | None,
    base_url: str = DEFAULT_BASE_URL,
    requests_per_10s: int = 20,
    updates_per_hour: int = 2000,
    http: httpx.AsyncClient | None = None,
) -> RefurbedMarketplace:
    """The adapter of one configured Refurbed account, for the wiring's registry."""
    return RefurbedMarketplace(
        marketplace_id=marketplace_id,
        name=name,
        token=token,
        base_url=base_url,
        requests_per_10s=requests_per_10s,
        updates_per_hour=updates_per_hour,
        http=http,
    )
