"""Back Market seller API client: read the listings, read one listing, update one listing's stock.

Every call of one `BackMarketClient` shares one request budget (a sliding-window log of send
times, `settings.backmarket_requests_per_10s` per 10.2 s) and one "not before" time set by a 429,
because Cloudflare counts and blocks per token, not per caller.

What a caller must know:

* Only a 2xx with the expected JSON shape is success. Anything else is a typed
  `BackMarketError`; an error is never turned into an empty page or "no change".
* GETs are retried (exponential backoff, full jitter, `settings.backmarket_max_attempts`) on 429,
  5xx, 408, timeouts, network errors, HTML answers and Cloudflare challenges. A 2xx HTML page is
  treated as a Cloudflare interstitial: retried, then `Unavailable`. A 2xx JSON body of the wrong
  shape is `BadResponse` at once (a server bug does not heal on retry).
* A `Retry-After` (seconds or HTTP date) is honoured. After any 429 the whole client sends nothing
  until the pause ends (10 s without `Retry-After`). A wait longer than `max_retry_wait_seconds`
  is not slept through: the call raises `RateLimited` (or `Unavailable`) at once, and so does
  every call made while such a long pause lasts, without sending anything.
* `update_listing` is retried only when the POST surely was not processed (429, connect error,
  Cloudflare challenge). A read timeout, a dropped connection, a 5xx, or a 2xx whose body is not a
  listing raises `OutcomeUnknown`: the update may have been applied, the caller must read back.
  A 202 without a listing body is read back with a GET; Back Market applies part of an update
  asynchronously, so the listing returned may not show the new quantity yet.
* `iter_listing_pages` yields pages as they arrive (any order), then raises `IncompleteFeed`
  when a page failed or fewer unique listings than page 1's `count` arrived. A listing can
  appear on two pages when the catalogue shifts during the read: keep the copy whose page has
  the later `fetched_at`. Close the iterator (`contextlib.aclosing`) if you stop early, so the
  background page fetches are cancelled at once.
* The token is sent only in the `Authorization` header and is scrubbed from every message.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx
from prometheus_client import Counter

from app.config import Settings

logger = logging.getLogger(__name__)

REQUESTS_COUNTER = Counter(
    "backmarket_requests_total",
    "HTTP requests sent to Back Market, by endpoint template and outcome.",
    ["endpoint", "outcome"],
)

LISTINGS_PATH = "/ws/listings"
ENDPOINT_LIST_LISTINGS = "GET /ws/listings"
ENDPOINT_GET_LISTING = "GET /ws/listings/{listingId}"
ENDPOINT_UPDATE_LISTING = "POST /ws/listings/{listingId}"

MAX_PAGE_SIZE = 50

_INT_PATTERN = re.compile(r"-?[0-9]+")
_BOT_CHALLENGE_CODE = "bot-need-challenge"

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


class BackMarketError(Exception):
    """A Back Market call that did not succeed; `str()` says what happened (never the token)."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str = "",
        status: int | None = None,
        request_id: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status
        self.request_id = request_id
        self.attempts = attempts


class RateLimited(BackMarketError):
    """429 still after the retries, or the client is paused by a 429 for too long to wait.

    `retry_after` is the pause the client applied: the server's Retry-After, else 10 s.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str = "",
        status: int | None = None,
        request_id: str | None = None,
        attempts: int = 1,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, endpoint=endpoint, status=status, request_id=request_id, attempts=attempts
        )
        self.retry_after = retry_after


class Unavailable(BackMarketError):
    """5xx, timeout, network error, HTML page or Cloudflare challenge, still after the retries."""


class NotFound(BackMarketError):
    """404: the listing is unknown or not the seller's. Not retried."""


class Unauthorized(BackMarketError):
    """401, or a 403 that is not a Cloudflare challenge. Not retried."""


class BadResponse(BackMarketError):
    """A 2xx of the wrong shape, or a 4xx other than 401/403/404/429 (a 400 may be a string)."""


class OutcomeUnknown(BackMarketError):
    """update_listing only: the POST may have been processed and no usable answer came.

    Never retried automatically: read the listing back before deciding to send again.
    """


class IncompleteFeed(BackMarketError):
    """One market's listings were not all read; every page that did arrive was yielded first."""

    def __init__(
        self,
        market: str,
        failed_pages: dict[int, BackMarketError],
        expected: int,
        received: int,
        *,
        attempts: int = 0,
    ) -> None:
        if failed_pages:
            failures = ", ".join(
                f"{page} ({type(error).__name__})" for page, error in sorted(failed_pages.items())
            )
            why = f"pages failed: {failures}"
        else:
            why = "no page failed, so a page came back short"
        super().__init__(
            f"listings of {market} incomplete: {received} unique listings of {expected} "
            f"expected; {why}",
            endpoint=ENDPOINT_LIST_LISTINGS,
            attempts=attempts,
        )
        self.market = market
        self.failed_pages = failed_pages
        self.expected = expected
        self.received = received


def _as_int(value: object) -> int | None:
    """An int from an int or an integer string; bools and anything else give None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT_PATTERN.fullmatch(value.strip()):
        return int(value.strip())
    return None


@dataclass(frozen=True, slots=True)
class Listing:
    """The part of a Back Market listing that stock needs; `quantity` is global to all markets."""

    id: str
    listing_id: int | None
    sku: str | None
    quantity: int
    publication_state: int | None

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> Listing:
        """Raise BadResponse when `id` or `quantity` is missing or unusable.

        The optional fields are read leniently (None when absent or not an integer) so that one
        odd field does not cost a whole page; the listing still matches by its UUID.
        """
        if not isinstance(body, Mapping):
            raise BadResponse(f"a listing must be a JSON object, got {type(body).__name__}")
        listing_uuid = body.get("id")
        if not isinstance(listing_uuid, str) or not listing_uuid.strip():
            raise BadResponse(f"listing has no usable 'id' ({type(listing_uuid).__name__})")
        quantity = _as_int(body.get("quantity"))
        if quantity is None:
            raise BadResponse(f"listing {listing_uuid} has no integer 'quantity'")
        sku = body.get("sku")
        return cls(
            id=listing_uuid.strip(),
            listing_id=_as_int(body.get("listing_id")),
            sku=None if sku is None else str(sku),
            quantity=quantity,
            publication_state=_as_int(body.get("publication_state")),
        )


@dataclass(frozen=True, slots=True)
class ListingPage:
    """One page of one market; `fetched_at` is when its successful request was sent."""

    market: str
    page: int
    fetched_at: datetime
    listings: list[Listing]
    count: int
    pages_expected: int
    requests: int


class _PausedTooLong(Exception):
    def __init__(self, remaining: float) -> None:
        super().__init__(remaining)
        self.remaining = remaining


class _SlidingWindowLimiter:
    """At most `max_requests` send times in any `window` seconds, plus a shared "not before" time.

    A leaky bucket (aiolimiter) refills while idle and then lets about twice the budget through
    in one window; Cloudflare counts a sliding window, so the log of send times is what matches.
    The lock is held while waiting so that waiters go out in arrival order.
    """

    def __init__(self, *, max_requests: int, window: float, clock: Clock, sleep: Sleep) -> None:
        self._max_requests = max_requests
        self._window = window
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._not_before = -math.inf
        self._lock = asyncio.Lock()

    def pause_until(self, moment: float) -> None:
        self._not_before = max(self._not_before, moment)

    def paused_for(self) -> float:
        return max(0.0, self._not_before - self._clock())

    async def acquire(self, *, max_pause: float) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                paused = self._not_before - now
                if paused > max_pause:
                    raise _PausedTooLong(paused)
                while self._sent and self._sent[0] <= now - self._window:
                    self._sent.popleft()
                wait = paused
                if len(self._sent) >= self._max_requests:
                    wait = max(wait, self._sent[0] + self._window - now)
                if wait <= 0:
                    self._sent.append(now)
                    return
                # A floor on the nap: float rounding could otherwise leave a wait too small to
                # move the clock, and the loop would spin.
                await self._sleep(max(wait, 0.001))


@dataclass(slots=True)
class _Reply:
    response: httpx.Response
    body: Any
    sent_at: datetime
    attempts: int


@dataclass(slots=True)
class _Failure:
    kind: type[BackMarketError]
    message: str
    retryable: bool
    status: int | None = None
    request_id: str | None = None
    retry_after: float | None = None


@dataclass(slots=True)
class _RawPage:
    page: int
    fetched_at: datetime
    listings: list[Listing]
    count: int
    next_url: str | None
    requests: int

    def to_page(self, market: str, pages_expected: int) -> ListingPage:
        return ListingPage(
            market=market,
            page=self.page,
            fetched_at=self.fetched_at,
            listings=self.listings,
            count=self.count,
            pages_expected=pages_expected,
            requests=self.requests,
        )


class _ShapeError(ValueError):
    """A 2xx body that is not what the endpoint promises."""


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _is_html(response: httpx.Response) -> bool:
    if "html" in response.headers.get("content-type", "").lower():
        return True
    return response.content[:256].lstrip().startswith(b"<")


def _error_entries(body: object) -> list[Mapping[str, Any]]:
    """The error objects of an ErrorResponseV1 (`error`) or V2 (`errors`) body."""
    if not isinstance(body, Mapping):
        return []
    entries: list[object] = []
    if isinstance(body.get("error"), Mapping):
        entries.append(body["error"])
    if isinstance(body.get("errors"), list):
        entries.extend(body["errors"])
    return [entry for entry in entries if isinstance(entry, Mapping)]


def _is_cloudflare_challenge(response: httpx.Response, body: object) -> bool:
    if response.status_code != 403:
        return False
    if response.headers.get("cf-mitigated", "").lower() == "challenge" or _is_html(response):
        return True
    return any(entry.get("code") == _BOT_CHALLENGE_CODE for entry in _error_entries(body))


def _describe_body(response: httpx.Response, body: object) -> str:
    """A short account of an answer's body for messages; the caller scrubs it."""
    if isinstance(body, Mapping):
        parts = [
            ": ".join(str(entry[key]) for key in ("code", "message") if key in entry)
            for entry in _error_entries(body)
        ]
        if parts:
            text = "; ".join(part for part in parts if part)
        else:
            text = "a JSON object with keys " + ", ".join(sorted(map(str, body))[:10])
    elif isinstance(body, str):
        text = repr(body)
    elif isinstance(body, list):
        text = f"a JSON list of {len(body)} items"
    elif body is not None:
        text = f"the JSON value {body!r}"
    elif _is_html(response):
        text = "an HTML page"
    elif not response.content:
        text = "an empty body"
    else:
        text = "a body that is not JSON"
    return text if len(text) <= 300 else text[:297] + "..."


def _request_id(response: httpx.Response, body: object) -> str | None:
    if isinstance(body, Mapping) and isinstance(body.get("requestId"), str):
        return str(body["requestId"])
    return response.headers.get("cf-ray")


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def _transport_outcome(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect_error"
    return "network_error"


def _surely_not_sent(exc: httpx.TransportError) -> bool:
    """True when the request cannot have reached the server (nothing was written)."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def _parse_listing_page(body: object) -> tuple[int, str | None, list[Listing]]:
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
    listings = []
    for index, item in enumerate(results):
        try:
            listings.append(Listing.from_api(item))
        except BadResponse as exc:
            raise _ShapeError(f"result {index}: {exc}") from None
    return count, next_url, listings


def _listing_path(listing_ref: str | int) -> str:
    if isinstance(listing_ref, bool) or not isinstance(listing_ref, str | int):
        raise TypeError("listing_ref must be a listing UUID or an integer listing_id")
    ref = str(listing_ref).strip()
    if not ref:
        raise ValueError("listing_ref is empty")
    # Quoting keeps a stray '/' or '?' in a reference from reaching another endpoint.
    return f"{LISTINGS_PATH}/{quote(ref, safe='')}"


def _target(path: str, params: httpx.QueryParams | None) -> str:
    return f"{path}?{params}" if params else path


class BackMarketClient:
    """One HTTP client for Back Market, shared by every caller of the process."""

    # A little over 10 s, so that network jitter between our send times and the server's arrival
    # times cannot squeeze one request too many into the server's 10 s window.
    window_seconds: float = 10.2
    # Cloudflare blocks for 10 s after a 429 and does not always say so.
    default_rate_limit_pause_seconds: float = 10.0
    backoff_base_seconds: float = 0.5
    backoff_cap_seconds: float = 30.0
    # Longer waits fail the call instead: a sync run or an API request must not hang for minutes.
    max_retry_wait_seconds: float = 60.0

    def __init__(
        self,
        settings: Settings,
        *,
        http: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        self._settings = settings
        self._default_market = settings.backmarket_markets[0]
        self._sleep = sleep
        self._clock = clock
        self._random = random.Random()
        # Requests wait here before taking a budget slot, so none then waits for a pooled
        # connection after its send time was logged.
        max_connections = settings.backmarket_page_concurrency + 8
        self._in_flight = asyncio.Semaphore(max_connections)
        self._owns_http = http is None
        if http is None:
            http = httpx.AsyncClient(
                base_url=settings.backmarket_base_url,
                timeout=httpx.Timeout(
                    settings.backmarket_read_timeout_seconds,
                    connect=settings.backmarket_connect_timeout_seconds,
                ),
                limits=httpx.Limits(
                    max_connections=max_connections,
                    max_keepalive_connections=max_connections,
                ),
            )
        self._http = http
        self._limiter = _SlidingWindowLimiter(
            max_requests=settings.backmarket_requests_per_10s,
            window=self.window_seconds,
            clock=clock,
            sleep=sleep,
        )
        self._token = (
            settings.backmarket_token.get_secret_value() if settings.backmarket_token else None
        ) or None
        self._stats: dict[str, int] = {}
        self.requests_total = 0

    def __repr__(self) -> str:
        return (
            f"BackMarketClient(base_url={self._settings.backmarket_base_url!r}, "
            f"markets={self._settings.backmarket_markets!r}, requests_total={self.requests_total})"
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this object built it; a client handed in stays open."""
        if self._owns_http:
            await self._http.aclose()

    def stats(self) -> dict[str, int]:
        """Requests sent so far, keyed "METHOD /path/template outcome"."""
        return dict(self._stats)

    def paused_for(self) -> float:
        """Seconds left of the client-wide pause that followed a 429 (0 when not paused)."""
        return self._limiter.paused_for()

    # -- public calls -------------------------------------------------------------------------

    async def iter_listing_pages(
        self, market: str, *, page_size: int = MAX_PAGE_SIZE, concurrency: int | None = None
    ) -> AsyncIterator[ListingPage]:
        """Yield every page of the market's listings as it arrives, then check completeness.

        Page 1 failing raises its own error. Any later page failing does not stop the others:
        after the last page that could be read, IncompleteFeed names the failed pages. Fewer
        unique listing ids than page 1's `count` is IncompleteFeed too; more is accepted (the
        catalogue grew while it was read).
        """
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        workers = self._settings.backmarket_page_concurrency if concurrency is None else concurrency
        if workers < 1:
            raise ValueError("concurrency must be at least 1")

        first = await self._fetch_page(market, page=1, params=self._page_params(1, page_size))
        served = len(first.listings)
        if first.next_url is None:
            pages_expected = 1
        elif served == 0:
            raise BadResponse(
                f"{ENDPOINT_LIST_LISTINGS} page 1 of {market} has no results but a next page",
                endpoint=ENDPOINT_LIST_LISTINGS,
                status=200,
                attempts=first.requests,
            )
        else:
            # The server may serve fewer than asked (it caps the page size): go by what it served.
            pages_expected = max(1, math.ceil(first.count / served))

        expected = first.count
        seen_ids = {listing.id for listing in first.listings}
        failed_pages: dict[int, BackMarketError] = {}
        requests = first.requests
        last_next_url = first.next_url if pages_expected == 1 else None
        yield first.to_page(market, pages_expected)

        if pages_expected > 1:
            page_numbers = range(2, pages_expected + 1)
            async with aclosing(
                self._fetch_pages(market, page_numbers, page_size=page_size, workers=workers)
            ) as arrivals:
                async for page_number, outcome in arrivals:
                    if isinstance(outcome, BackMarketError):
                        failed_pages[page_number] = outcome
                        requests += outcome.attempts
                        continue
                    seen_ids.update(listing.id for listing in outcome.listings)
                    requests += outcome.requests
                    if page_number == pages_expected:
                        last_next_url = outcome.next_url
                    yield outcome.to_page(market, pages_expected)

        # The last expected page still pointing further means listings were added meanwhile.
        last_page = pages_expected
        while last_next_url is not None:
            page_number = last_page + 1
            try:
                page_number, path, params = self._next_page_target(last_next_url, after=last_page)
                extra = await self._fetch_page(market, page=page_number, params=params, path=path)
            except BackMarketError as exc:
                failed_pages[page_number] = exc
                requests += exc.attempts
                break
            seen_ids.update(listing.id for listing in extra.listings)
            requests += extra.requests
            yield extra.to_page(market, max(pages_expected, page_number))
            last_page, last_next_url = page_number, extra.next_url
            if not extra.listings and last_next_url is not None:
                # An empty page pointing further would have us walk an endless chain of pages.
                failed_pages[page_number] = BadResponse(
                    f"{ENDPOINT_LIST_LISTINGS} page {page_number} of {market} is empty "
                    "but points to a next page",
                    endpoint=ENDPOINT_LIST_LISTINGS,
                    status=200,
                    attempts=extra.requests,
                )
                break

        received = len(seen_ids)
        if failed_pages or received < expected:
            raise IncompleteFeed(market, failed_pages, expected, received, attempts=requests)
        if received > expected:
            logger.info(
                "listings of %s: %d unique listings read, page 1 counted %d (catalogue grew)",
                market,
                received,
                expected,
            )

    async def get_listing(self, listing_ref: str | int, *, market: str | None = None) -> Listing:
        """GET one listing by UUID (preferred) or integer listing_id."""
        path = _listing_path(listing_ref)
        reply = await self._request(
            "GET", path, endpoint=ENDPOINT_GET_LISTING, market=market or self._default_market
        )
        try:
            return Listing.from_api(reply.body)
        except BadResponse as exc:
            raise BadResponse(
                self._scrub(f"GET {path} answered {reply.response.status_code} but {exc}"),
                endpoint=ENDPOINT_GET_LISTING,
                status=reply.response.status_code,
                request_id=_request_id(reply.response, reply.body),
                attempts=reply.attempts,
            ) from None

    async def update_listing(
        self, listing_ref: str | int, *, quantity: int, market: str | None = None
    ) -> Listing:
        """POST {"quantity": n} to one listing and return the listing Back Market answers.

        Raises OutcomeUnknown when the update may have been applied without a usable answer.
        """
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
            raise ValueError("quantity must be a non-negative integer")
        path = _listing_path(listing_ref)
        market = market or self._default_market
        reply = await self._request(
            "POST",
            path,
            endpoint=ENDPOINT_UPDATE_LISTING,
            market=market,
            json_body={"quantity": quantity},
            repeatable=False,
        )
        status = reply.response.status_code
        request_id = _request_id(reply.response, reply.body)
        try:
            return Listing.from_api(reply.body)
        except BadResponse as exc:
            shape_problem = str(exc)
        if status == 202:
            logger.debug("POST %s answered 202 without a listing: reading it back", path)
            try:
                return await self.get_listing(listing_ref, market=market)
            except BackMarketError as exc:
                raise OutcomeUnknown(
                    self._scrub(
                        f"POST {path} was accepted (202) but reading the listing back failed: {exc}"
                    ),
                    endpoint=ENDPOINT_UPDATE_LISTING,
                    status=status,
                    request_id=request_id,
                    attempts=reply.attempts,
                ) from exc
        raise OutcomeUnknown(
            self._scrub(
                f"POST {path} answered {status} with {_describe_body(reply.response, reply.body)}"
                f" ({shape_problem}): the update may or may not have been applied"
            ),
            endpoint=ENDPOINT_UPDATE_LISTING,
            status=status,
            request_id=request_id,
            attempts=reply.attempts,
        )

    # -- pages --------------------------------------------------------------------------------

    @staticmethod
    def _page_params(page: int, page_size: int) -> httpx.QueryParams:
        # The hyphen matters: `page_size` is silently ignored and gives 10 a page.
        return httpx.QueryParams({"page": page, "page-size": page_size})

    @staticmethod
    def _next_page_target(next_url: str, *, after: int) -> tuple[int, str, httpx.QueryParams]:
        """Page number, path and query of a `next` URL, to be requested on our own base URL.

        Only the path and query are followed, so the token never goes to another host.
        """
        url = httpx.URL(next_url)
        if url.path.rstrip("/") != LISTINGS_PATH:
            raise BadResponse(
                f"'next' points outside {LISTINGS_PATH}: {url.path!r}",
                endpoint=ENDPOINT_LIST_LISTINGS,
                attempts=0,
            )
        page = _as_int(url.params.get("page"))
        if page is None or page <= after:
            raise BadResponse(
                f"'next' after page {after} does not point to a later page: {url.query!r}",
                endpoint=ENDPOINT_LIST_LISTINGS,
                attempts=0,
            )
        return page, url.path, url.params

    async def _fetch_page(
        self,
        market: str,
        *,
        page: int,
        params: httpx.QueryParams,
        path: str = LISTINGS_PATH,
    ) -> _RawPage:
        reply = await self._request(
            "GET", path, endpoint=ENDPOINT_LIST_LISTINGS, market=market, params=params
        )
        try:
            count, next_url, listings = _parse_listing_page(reply.body)
        except _ShapeError as exc:
            status = reply.response.status_code
            raise BadResponse(
                self._scrub(
                    f"GET {_target(path, params)} ({market}) answered {status} but {exc}: "
                    f"{_describe_body(reply.response, reply.body)}"
                ),
                endpoint=ENDPOINT_LIST_LISTINGS,
                status=status,
                request_id=_request_id(reply.response, reply.body),
                attempts=reply.attempts,
            ) from None
        return _RawPage(
            page=page,
            fetched_at=reply.sent_at,
            listings=listings,
            count=count,
            next_url=next_url,
            requests=reply.attempts,
        )

    async def _fetch_pages(
        self, market: str, page_numbers: Sequence[int], *, page_size: int, workers: int
    ) -> AsyncGenerator[tuple[int, _RawPage | BackMarketError], None]:
        """Fetch the pages with `workers` concurrent fetchers; yield each outcome as it lands."""
        # Bounded: when the caller writes slower than pages arrive, fetchers wait instead of
        # piling the catalogue up in memory.
        arrivals: asyncio.Queue[tuple[int, _RawPage | BackMarketError | Exception]] = asyncio.Queue(
            maxsize=workers
        )
        numbers = iter(page_numbers)

        async def fetch_until_done() -> None:
            for page_number in numbers:
                outcome: _RawPage | BackMarketError | Exception
                try:
                    outcome = await self._fetch_page(
                        market, page=page_number, params=self._page_params(page_number, page_size)
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
                if isinstance(outcome, BackMarketError | _RawPage):
                    yield page_number, outcome
                else:
                    raise outcome
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- one request, with retries ----------------------------------------------------------

    def _headers(self, market: str) -> dict[str, str]:
        headers = {
            "User-Agent": self._settings.backmarket_user_agent,
            "Accept": "application/json",
            "Content-Type": "application/json",
            "Accept-Language": market,
        }
        if self._token is not None:
            headers["Authorization"] = f"Basic {self._token}"
        return headers

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "[token]") if self._token else text

    def _record(self, endpoint: str, outcome: str) -> None:
        key = f"{endpoint} {outcome}"
        self._stats[key] = self._stats.get(key, 0) + 1
        REQUESTS_COUNTER.labels(endpoint=endpoint, outcome=outcome).inc()

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_cap_seconds, self.backoff_base_seconds * 2 ** (attempt - 1))
        return self._random.uniform(0.0, ceiling)

    async def _send_once(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        market: str,
        params: httpx.QueryParams | None,
        json_body: dict[str, int] | None,
        attempt: int,
    ) -> tuple[httpx.Response, datetime]:
        target = _target(path, params)
        async with self._in_flight:
            await self._limiter.acquire(max_pause=self.max_retry_wait_seconds)
            sent_at = datetime.now(UTC)
            started = self._clock()
            self.requests_total += 1
            try:
                response = await self._http.request(
                    method, path, params=params, json=json_body, headers=self._headers(market)
                )
            except httpx.TransportError as exc:
                outcome = _transport_outcome(exc)
                self._record(endpoint, outcome)
                logger.debug(
                    "%s %s [%s] -> %s (%s) after %.3fs, attempt %d",
                    method,
                    target,
                    market,
                    outcome,
                    type(exc).__name__,
                    self._clock() - started,
                    attempt,
                )
                raise
        self._record(endpoint, str(response.status_code))
        logger.debug(
            "%s %s [%s] -> %d in %.3fs, attempt %d",
            method,
            target,
            market,
            response.status_code,
            self._clock() - started,
            attempt,
        )
        return response, sent_at

    def _judge_transport_error(
        self, exc: httpx.TransportError, *, method: str, target: str, repeatable: bool
    ) -> _Failure:
        what = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
        detail = self._scrub(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        if not repeatable and not _surely_not_sent(exc):
            return _Failure(
                OutcomeUnknown,
                f"{method} {target} {what} after the request may have been sent ({detail}): "
                "the update may or may not have been applied",
                retryable=False,
            )
        return _Failure(Unavailable, f"{method} {target} {what} ({detail})", retryable=True)

    def _judge_response(
        self, response: httpx.Response, body: object, *, method: str, target: str, repeatable: bool
    ) -> _Failure | None:
        """None when the answer is a non-HTML 2xx; the caller checks its shape."""
        status = response.status_code
        request_id = _request_id(response, body)
        answered = f"{method} {target} answered {status} with " + self._scrub(
            _describe_body(response, body)
        )
        may_have_applied = ": the update may or may not have been applied"
        if 200 <= status < 300:
            if not _is_html(response):
                return None
            # Cloudflare interstitials come back as 2xx HTML: not Back Market's answer.
            if not repeatable:
                return _Failure(
                    OutcomeUnknown, answered + may_have_applied, False, status, request_id
                )
            return _Failure(Unavailable, answered, True, status, request_id)
        if status == 429:
            return _Failure(
                RateLimited,
                answered,
                True,
                status,
                request_id,
                retry_after=_parse_retry_after(response.headers.get("retry-after")),
            )
        if status == 404:
            return _Failure(NotFound, answered, False, status, request_id)
        if status == 403 and _is_cloudflare_challenge(response, body):
            # Cloudflare stopped it at the edge, so even a POST was not processed.
            return _Failure(
                Unavailable, answered + " (Cloudflare challenge)", True, status, request_id
            )
        if status in (401, 403):
            return _Failure(Unauthorized, answered, False, status, request_id)
        if status == 408 or status >= 500:
            retry_after = _parse_retry_after(response.headers.get("retry-after"))
            if not repeatable:
                return _Failure(
                    OutcomeUnknown, answered + may_have_applied, False, status, request_id
                )
            return _Failure(Unavailable, answered, True, status, request_id, retry_after)
        return _Failure(BadResponse, answered, False, status, request_id)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        market: str,
        params: httpx.QueryParams | None = None,
        json_body: dict[str, int] | None = None,
        repeatable: bool = True,
    ) -> _Reply:
        """Send until a non-HTML 2xx comes back, retrying what is safe to retry.

        `repeatable=False` (the update POST) retries only answers that prove the request was
        not processed.
        """
        target = _target(path, params)
        max_attempts = self._settings.backmarket_max_attempts
        attempt = 0
        while True:
            attempt += 1
            try:
                response, sent_at = await self._send_once(
                    method,
                    path,
                    endpoint=endpoint,
                    market=market,
                    params=params,
                    json_body=json_body,
                    attempt=attempt,
                )
            except _PausedTooLong as paused:
                raise RateLimited(
                    f"{method} {target} not sent: the client is paused for another "
                    f"{paused.remaining:.1f}s after a 429",
                    endpoint=endpoint,
                    attempts=attempt - 1,
                    retry_after=paused.remaining,
                ) from None
            except httpx.TransportError as exc:
                failure = self._judge_transport_error(
                    exc, method=method, target=target, repeatable=repeatable
                )
            else:
                body = _json_or_none(response)
                judged = self._judge_response(
                    response, body, method=method, target=target, repeatable=repeatable
                )
                if judged is None:
                    return _Reply(response, body, sent_at, attempt)
                failure = judged

            if failure.kind is RateLimited:
                if failure.retry_after is None:
                    failure.retry_after = self.default_rate_limit_pause_seconds
                self._limiter.pause_until(self._clock() + failure.retry_after)

            wait_too_long = (failure.retry_after or 0.0) > self.max_retry_wait_seconds
            if not failure.retryable or attempt >= max_attempts or wait_too_long:
                raise self._error(failure, endpoint=endpoint, attempts=attempt)

            delay = self._backoff(attempt)
            if failure.retry_after is not None and failure.kind is not RateLimited:
                delay = max(delay, failure.retry_after)
            logger.warning(
                "%s [%s]; attempt %d of %d in %.2fs (request id %s)",
                failure.message,
                market,
                attempt + 1,
                max_attempts,
                delay,
                failure.request_id,
            )
            # A 429's own pause is waited out in the limiter, shared with every other call.
            await self._sleep(delay)

    @staticmethod
    def _error(failure: _Failure, *, endpoint: str, attempts: int) -> BackMarketError:
        message = f"{failure.message} (after {attempts} attempt{'s' if attempts != 1 else ''})"
        if failure.request_id:
            message += f" [request id {failure.request_id}]"
        if failure.kind is RateLimited:
            return RateLimited(
                message,
                endpoint=endpoint,
                status=failure.status,
                request_id=failure.request_id,
                attempts=attempts,
                retry_after=failure.retry_after,
            )
        return failure.kind(
            message,
            endpoint=endpoint,
            status=failure.status,
            request_id=failure.request_id,
            attempts=attempts,
        )
