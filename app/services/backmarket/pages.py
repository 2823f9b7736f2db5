"""Reading a whole paginated collection of one market: Back Market's `{count, next, previous,
results}` envelope, asked for with `page` and `page-size`.

* Pages are yielded as they arrive, in any order: page 1, then the others fetched concurrently,
  then any page past the last expected one that a growing collection added (its `next` is read
  for its path and query only, and only when it names our own host).
* A 2xx page of the wrong shape (no `results`, an error body, an empty page where `count` says
  there are items) is retried like a 5xx (`transport`), then fails as `BadResponse`.
* Page 1 failing raises its own error. A later page failing does not stop the others: after the
  last page that could be read, `IncompleteFeed` names the failed pages. Fewer unique items than
  the largest `count` any page reported is `IncompleteFeed` too; more is accepted (the collection
  grew while read).
* With `skip_unusable_items`, an item `parse_item` rejects is left out of its page, the rest of
  the page is kept, and `IncompleteFeed` names it at the end.
* An item can appear on two pages when the collection shifts during the read: the copy that
  arrived first is yielded, later copies only counted in the page's `repeated`.
* Close the iterator (`contextlib.aclosing`) if you stop early, so the background page fetches
  are cancelled at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncGenerator, Callable, Hashable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Generic, TypeVar

import httpx

from app.services.backmarket.answers import UnexpectedShape, as_int
from app.services.backmarket.budget import CallKind
from app.services.backmarket.errors import BackMarketError, BadResponse, IncompleteFeed
from app.services.backmarket.transport import Transport

# The whole client logs under the package's name, so one logger setting covers it.
logger = logging.getLogger("app.services.backmarket")

MAX_PAGE_SIZE = 50

ItemT = TypeVar("ItemT")


@dataclass(frozen=True, slots=True)
class PagedEndpoint(Generic[ItemT]):
    """A paginated collection: where it lives, how one item reads, what tells two items apart."""

    path: str
    # The template that labels the requests' metrics and errors, e.g. "GET /ws/listings".
    endpoint: str
    # The items' plural, for messages.
    noun: str
    # Raises BadResponse for an item it cannot use.
    parse_item: Callable[[Any], ItemT]
    item_key: Callable[[ItemT], Hashable]
    # True: an item parse_item rejects is left out and the rest of its page kept (the feed then
    # ends as IncompleteFeed naming it); False: it makes the whole page unusable.
    skip_unusable_items: bool = False


@dataclass(frozen=True, slots=True)
class FetchedPage(Generic[ItemT]):
    """One page as read; `fetched_at` is when its successful request was sent."""

    page: int
    fetched_at: datetime
    items: list[ItemT]
    count: int
    next_url: str | None
    requests: int
    # Results the server put on the page, usable or not: the page size it really serves.
    served: int = 0
    # Why each result left out as unusable was left out (skip_unusable_items).
    unusable: list[str] = field(default_factory=list)
    # Keys of the items an earlier page already brought; they are not in `items`.
    repeated: list[Hashable] = field(default_factory=list)


@dataclass(slots=True)
class _Tally(Generic[ItemT]):
    """What a feed has brought so far: keys, the largest `count`, failures and unusable items."""

    source: PagedEndpoint[ItemT]
    smallest_count: int
    largest_count: int = 0
    requests: int = 0
    seen: set[Hashable] = field(default_factory=set)
    failed_pages: dict[int, BackMarketError] = field(default_factory=dict)
    unusable: dict[int, list[str]] = field(default_factory=dict)

    def take(self, page: FetchedPage[ItemT]) -> FetchedPage[ItemT]:
        """Count the page in; return it without the items an earlier page already brought."""
        self.requests += page.requests
        self.smallest_count = min(self.smallest_count, page.count)
        self.largest_count = max(self.largest_count, page.count)
        if page.unusable:
            self.unusable[page.page] = page.unusable
        fresh: list[ItemT] = []
        repeated: list[Hashable] = []
        for item in page.items:
            key = self.source.item_key(item)
            if key in self.seen:
                repeated.append(key)
            else:
                self.seen.add(key)
                fresh.append(item)
        return replace(page, items=fresh, repeated=repeated) if repeated else page

    def fail(self, page_number: int, error: BackMarketError) -> None:
        self.failed_pages[page_number] = error
        self.requests += error.attempts


async def iter_pages(
    source: PagedEndpoint[ItemT],
    *,
    transport: Transport,
    market: str,
    page_size: int,
    workers: int,
) -> AsyncGenerator[tuple[FetchedPage[ItemT], int], None]:
    """Yield each page of the market's collection, with the number of pages expected so far."""
    first = await fetch_page(
        source,
        transport=transport,
        market=market,
        page=1,
        params=_page_query(1, page_size),
        offset=0,
    )
    served = first.served
    if first.next_url is None:
        pages_expected = 1
    elif served == 0:
        raise BadResponse(
            f"{source.endpoint} page 1 of {market} has no results but a next page",
            endpoint=source.endpoint,
            status=200,
            attempts=first.requests,
        )
    else:
        # The server may serve fewer than asked (it caps the page size): go by what it served.
        pages_expected = max(1, math.ceil(first.count / served))

    tally = _Tally(source, smallest_count=first.count)
    last_next_url = first.next_url if pages_expected == 1 else None
    yield tally.take(first), pages_expected

    if pages_expected > 1:
        fetches = _fetch_pages(
            source,
            transport=transport,
            market=market,
            page_numbers=range(2, pages_expected + 1),
            page_size=page_size,
            served=served,
            workers=workers,
        )
        async with aclosing(fetches) as arrivals:
            async for page_number, outcome in arrivals:
                if isinstance(outcome, BackMarketError):
                    tally.fail(page_number, outcome)
                    continue
                if page_number == pages_expected:
                    last_next_url = outcome.next_url
                yield tally.take(outcome), pages_expected

    # The last expected page still pointing further means items were added meanwhile.
    last_page = pages_expected
    while last_next_url is not None:
        page_number = last_page + 1
        try:
            page_number, path, params = _next_page_target(
                source, last_next_url, after=last_page, own=transport.base_url
            )
            extra = await fetch_page(
                source,
                transport=transport,
                market=market,
                page=page_number,
                params=params,
                path=path,
            )
        except BackMarketError as exc:
            tally.fail(page_number, exc)
            break
        yield tally.take(extra), max(pages_expected, page_number)
        last_page, last_next_url = page_number, extra.next_url
        if not extra.items and last_next_url is not None:
            # An empty page pointing further would have us walk an endless chain of pages.
            tally.fail(
                page_number,
                BadResponse(
                    f"{source.endpoint} page {page_number} of {market} is empty "
                    "but points to a next page",
                    endpoint=source.endpoint,
                    status=200,
                    attempts=0,
                ),
            )
            break

    received = len(tally.seen)
    if tally.failed_pages or tally.unusable or received < tally.largest_count:
        raise IncompleteFeed(
            market,
            tally.failed_pages,
            tally.largest_count,
            received,
            endpoint=source.endpoint,
            noun=source.noun,
            attempts=tally.requests,
            unusable=tally.unusable,
            smallest_count=tally.smallest_count,
        )
    if received > tally.largest_count:
        logger.info(
            "%s of %s: %d unique %s read, the pages counted at most %d (catalogue grew)",
            source.noun,
            market,
            received,
            source.noun,
            tally.largest_count,
        )


def _page_query(page: int, page_size: int) -> httpx.QueryParams:
    # The hyphen matters: `page_size` is silently ignored and gives 10 a page.
    return httpx.QueryParams({"page": page, "page-size": page_size})


def _next_page_target(
    source: PagedEndpoint[ItemT], next_url: str, *, after: int, own: httpx.URL
) -> tuple[int, str, httpx.QueryParams]:
    """Page number, path and query of a `next` URL, to be requested on our own base URL.

    A `next` naming another host is refused: something between us and Back Market is not what
    it should be, and the token must never follow it.
    """
    try:
        url = httpx.URL(next_url)
    except httpx.InvalidURL:
        raise BadResponse(
            f"'next' is not a URL: {next_url[:200]!r}", endpoint=source.endpoint, attempts=0
        ) from None
    if url.host and (url.host.lower(), url.port) != (own.host.lower(), own.port):
        raise BadResponse(
            f"'next' points to another host ({url.host!r}, not {own.host!r}); not followed",
            endpoint=source.endpoint,
            attempts=0,
        )
    if url.path.rstrip("/") != source.path:
        raise BadResponse(
            f"'next' points outside {source.path}: {url.path!r}",
            endpoint=source.endpoint,
            attempts=0,
        )
    page = as_int(url.params.get("page"))
    if page is None or page <= after:
        raise BadResponse(
            f"'next' after page {after} does not point to a later page: {url.query!r}",
            endpoint=source.endpoint,
            attempts=0,
        )
    return page, url.path, url.params


def _parse_page(
    source: PagedEndpoint[ItemT], body: object, *, page: int, offset: int | None
) -> FetchedPage[ItemT]:
    """The page a body holds, or UnexpectedShape; `fetched_at` and `requests` are filled later.

    `offset`: how many items come before this page, when known; a page there that `count` says
    holds items but has none is a wrong shape, not the end of the collection.
    """
    if not isinstance(body, Mapping):
        raise UnexpectedShape("the body is not a JSON object")
    results = body.get("results")
    if not isinstance(results, list):
        raise UnexpectedShape("the body has no 'results' list")
    count = body.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise UnexpectedShape("the body has no integer 'count'")
    next_url = body.get("next")
    if next_url is not None and not isinstance(next_url, str):
        raise UnexpectedShape("'next' is neither null nor a URL")
    if offset is not None and not results and count > offset:
        raise UnexpectedShape(
            f"'results' is empty although 'count' ({count}) says items follow the first {offset}"
        )
    items: list[ItemT] = []
    unusable: list[str] = []
    for index, result in enumerate(results):
        try:
            items.append(source.parse_item(result))
        except BadResponse as exc:
            if not source.skip_unusable_items:
                raise UnexpectedShape(f"result {index}: {exc}") from None
            unusable.append(f"page {page} result {index}: {exc}")
    return FetchedPage(
        page=page,
        fetched_at=datetime.min,
        items=items,
        count=count,
        next_url=next_url,
        requests=0,
        served=len(results),
        unusable=unusable,
    )


async def fetch_page(
    source: PagedEndpoint[ItemT],
    *,
    transport: Transport,
    market: str,
    page: int,
    params: httpx.QueryParams,
    path: str | None = None,
    offset: int | None = None,
    kind: CallKind = CallKind.BULK,
) -> FetchedPage[ItemT]:
    """One page; a body of the wrong shape is retried by the transport, then `BadResponse`."""
    reply = await transport.request(
        "GET",
        source.path if path is None else path,
        endpoint=source.endpoint,
        market=market,
        params=params,
        kind=kind,
        parse=lambda body: _parse_page(source, body, page=page, offset=offset),
    )
    return replace(reply.value, fetched_at=reply.sent_at, requests=reply.attempts)


async def _fetch_pages(
    source: PagedEndpoint[ItemT],
    *,
    transport: Transport,
    market: str,
    page_numbers: Sequence[int],
    page_size: int,
    served: int,
    workers: int,
) -> AsyncGenerator[tuple[int, FetchedPage[ItemT] | BackMarketError], None]:
    """Fetch the pages with `workers` concurrent fetchers; yield each outcome as it lands."""
    # Bounded: when the caller writes slower than pages arrive, fetchers wait instead of
    # piling the collection up in memory.
    arrivals: asyncio.Queue[tuple[int, FetchedPage[ItemT] | BackMarketError | Exception]] = (
        asyncio.Queue(maxsize=workers)
    )
    numbers = iter(page_numbers)

    async def fetch_until_done() -> None:
        for page_number in numbers:
            outcome: FetchedPage[ItemT] | BackMarketError | Exception
            try:
                outcome = await fetch_page(
                    source,
                    transport=transport,
                    market=market,
                    page=page_number,
                    params=_page_query(page_number, page_size),
                    offset=(page_number - 1) * served,
                )
            except BackMarketError as exc:
                outcome = exc
            except Exception as exc:
                # A bug must reach the consumer, not leave it waiting for this page forever.
                await arrivals.put((page_number, exc))
                return
            await arrivals.put((page_number, outcome))

    tasks = [
        asyncio.create_task(fetch_until_done()) for _ in range(min(workers, len(page_numbers)))
    ]
    try:
        for _ in range(len(page_numbers)):
            page_number, outcome = await arrivals.get()
            if isinstance(outcome, BackMarketError | FetchedPage):
                yield page_number, outcome
            else:
                raise outcome
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
