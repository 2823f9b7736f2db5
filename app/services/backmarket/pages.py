"""Reading a whole paginated collection of one market: Back Market's `{count, next, previous,
results}` envelope, asked for with `page` and `page-size`.

* Pages are yielded as they arrive, in any order: page 1, then the others fetched concurrently,
  then any page past the last expected one that a growing collection added.
* Page 1 failing raises its own error. A later page failing does not stop the others: after the
  last page that could be read, `IncompleteFeed` names the failed pages. Fewer unique items than
  page 1's `count` is `IncompleteFeed` too; more is accepted (the collection grew while read).
* An item can appear on two pages when the collection shifts during the read: keep the copy
  whose page has the later `fetched_at`.
* Close the iterator (`contextlib.aclosing`) if you stop early, so the background page fetches
  are cancelled at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncGenerator, Callable, Hashable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import httpx

from app.services.backmarket.answers import as_int, describe_body, request_id_of
from app.services.backmarket.budget import CallKind
from app.services.backmarket.errors import BackMarketError, BadResponse, IncompleteFeed
from app.services.backmarket.transport import Transport, request_target

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


@dataclass(frozen=True, slots=True)
class FetchedPage(Generic[ItemT]):
    """One page as read; `fetched_at` is when its successful request was sent."""

    page: int
    fetched_at: datetime
    items: list[ItemT]
    count: int
    next_url: str | None
    requests: int


class _ShapeError(ValueError):
    """A 2xx body that is not what the endpoint promises."""


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
        source, transport=transport, market=market, page=1, params=_page_query(1, page_size)
    )
    served = len(first.items)
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

    expected = first.count
    seen_keys = {source.item_key(item) for item in first.items}
    failed_pages: dict[int, BackMarketError] = {}
    requests = first.requests
    last_next_url = first.next_url if pages_expected == 1 else None
    yield first, pages_expected

    if pages_expected > 1:
        fetches = _fetch_pages(
            source,
            transport=transport,
            market=market,
            page_numbers=range(2, pages_expected + 1),
            page_size=page_size,
            workers=workers,
        )
        async with aclosing(fetches) as arrivals:
            async for page_number, outcome in arrivals:
                if isinstance(outcome, BackMarketError):
                    failed_pages[page_number] = outcome
                    requests += outcome.attempts
                    continue
                seen_keys.update(source.item_key(item) for item in outcome.items)
                requests += outcome.requests
                if page_number == pages_expected:
                    last_next_url = outcome.next_url
                yield outcome, pages_expected

    # The last expected page still pointing further means items were added meanwhile.
    last_page = pages_expected
    while last_next_url is not None:
        page_number = last_page + 1
        try:
            page_number, path, params = _next_page_target(source, last_next_url, after=last_page)
            extra = await fetch_page(
                source,
                transport=transport,
                market=market,
                page=page_number,
                params=params,
                path=path,
            )
        except BackMarketError as exc:
            failed_pages[page_number] = exc
            requests += exc.attempts
            break
        seen_keys.update(source.item_key(item) for item in extra.items)
        requests += extra.requests
        yield extra, max(pages_expected, page_number)
        last_page, last_next_url = page_number, extra.next_url
        if not extra.items and last_next_url is not None:
            # An empty page pointing further would have us walk an endless chain of pages.
            failed_pages[page_number] = BadResponse(
                f"{source.endpoint} page {page_number} of {market} is empty "
                "but points to a next page",
                endpoint=source.endpoint,
                status=200,
                attempts=extra.requests,
            )
            break

    received = len(seen_keys)
    if failed_pages or received < expected:
        raise IncompleteFeed(
            market,
            failed_pages,
            expected,
            received,
            endpoint=source.endpoint,
            noun=source.noun,
            attempts=requests,
        )
    if received > expected:
        logger.info(
            "%s of %s: %d unique %s read, page 1 counted %d (catalogue grew)",
            source.noun,
            market,
            received,
            source.noun,
            expected,
        )


def _page_query(page: int, page_size: int) -> httpx.QueryParams:
    # The hyphen matters: `page_size` is silently ignored and gives 10 a page.
    return httpx.QueryParams({"page": page, "page-size": page_size})


def _next_page_target(
    source: PagedEndpoint[ItemT], next_url: str, *, after: int
) -> tuple[int, str, httpx.QueryParams]:
    """Page number, path and query of a `next` URL, to be requested on our own base URL.

    Only the path and query are followed, so the token never goes to another host.
    """
    url = httpx.URL(next_url)
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


def _parse_page(source: PagedEndpoint[ItemT], body: object) -> tuple[int, str | None, list[ItemT]]:
    if not isinstance(body, Mapping):
        raise _ShapeError("the body is not a JSON object")
    results = body.get("results")
    if not isinstance(results, list):
        raise _ShapeError("the body has no 'results' list")
    count = body.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise _ShapeError("the body has no integer 'count'")
    next_url = body.get("next")
    if next_url is not None and not isinstance(next_url, str):
        raise _ShapeError("'next' is neither null nor a URL")
    items = []
    for index, result in enumerate(results):
        try:
            items.append(source.parse_item(result))
        except BadResponse as exc:
            raise _ShapeError(f"result {index}: {exc}") from None
    return count, next_url, items


async def fetch_page(
    source: PagedEndpoint[ItemT],
    *,
    transport: Transport,
    market: str,
    page: int,
    params: httpx.QueryParams,
    path: str | None = None,
    kind: CallKind = CallKind.BULK,
) -> FetchedPage[ItemT]:
    path = source.path if path is None else path
    reply = await transport.request(
        "GET", path, endpoint=source.endpoint, market=market, params=params, kind=kind
    )
    try:
        count, next_url, items = _parse_page(source, reply.body)
    except _ShapeError as exc:
        status = reply.response.status_code
        raise BadResponse(
            transport.scrub(
                f"GET {request_target(path, params)} ({market}) answered {status} but {exc}: "
                f"{describe_body(reply.response, reply.body)}"
            ),
            endpoint=source.endpoint,
            status=status,
            request_id=request_id_of(reply.response, reply.body),
            attempts=reply.attempts,
        ) from None
    return FetchedPage(
        page=page,
        fetched_at=reply.sent_at,
        items=items,
        count=count,
        next_url=next_url,
        requests=reply.attempts,
    )


async def _fetch_pages(
    source: PagedEndpoint[ItemT],
    *,
    transport: Transport,
    market: str,
    page_numbers: Sequence[int],
    page_size: int,
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
