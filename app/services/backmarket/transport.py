"""One request to Back Market, with retries: send it within the budget, judge the answer, retry
what is safe to retry.

* GETs are retried (exponential backoff, full jitter, `settings.backmarket_max_attempts`) on 429,
  5xx, 408, timeouts, network errors, HTML answers and Cloudflare challenges. A 2xx HTML page is
  treated as a Cloudflare interstitial: retried, then `BackMarketUnavailable`. A 2xx JSON body
  that `parse` rejects (an error body answered with 200, a page without `results`) is retried the
  same way, then `BadResponse`.
* A `Retry-After` (seconds or HTTP date) is honoured. After any 429 the whole client sends nothing
  until the pause ends (10 s without `Retry-After`). A wait longer than `max_retry_wait_seconds`
  is not slept through: the call raises `RateLimited` (or `BackMarketUnavailable`) at once, and so
  does every call made while such a long pause lasts, without sending anything.
* A request that is not repeatable (the update POST) is retried only when it surely was not
  processed (429, connect error, Cloudflare challenge). A read timeout, a dropped connection, a
  5xx, a 2xx HTML page or a 2xx that `parse` rejects raises `OutcomeUnknown`: it may have been
  applied.
* The token is sent only in the `Authorization` header and is scrubbed from every message.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import httpx
from prometheus_client import Counter

from app.config import Settings
from app.services.backmarket.answers import (
    Failure,
    UnexpectedShape,
    json_or_none,
    judge_response,
    judge_shape,
    judge_transport_error,
    transport_outcome,
)
from app.services.backmarket.budget import CallKind, Clock, PausedTooLong, RequestBudget, Sleep
from app.services.backmarket.errors import BackMarketError, RateLimited

# The whole client logs under the package's name, so one logger setting covers it.
logger = logging.getLogger("app.services.backmarket")

REQUESTS_COUNTER = Counter(
    "backmarket_requests_total",
    "HTTP requests sent to Back Market, by marketplace, endpoint template and outcome.",
    ["marketplace_id", "endpoint", "outcome"],
)


ValueT = TypeVar("ValueT")


@dataclass(slots=True)
class Reply(Generic[ValueT]):
    """A non-HTML 2xx whose body `parse` accepted; `value` is what it made of the body."""

    response: httpx.Response
    body: Any
    value: ValueT
    sent_at: datetime
    attempts: int


def body_as_is(body: Any) -> Any:
    """A `parse` that accepts any body, for a caller that judges the body itself."""
    return body


def request_target(path: str, params: httpx.QueryParams | None) -> str:
    """Path and query as a message shows them."""
    return f"{path}?{params}" if params else path


class Transport:
    """Sends requests for one client: one budget, one pause after a 429, one set of counters."""

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
        http: httpx.AsyncClient,
        budget: RequestBudget,
        marketplace_id: int,
        max_in_flight: int,
        clock: Clock,
        sleep: Sleep,
    ) -> None:
        self._settings = settings
        self._marketplace_id = marketplace_id
        self._http = http
        self._budget = budget
        self._clock = clock
        self._sleep = sleep
        self._random = random.Random()
        # Requests wait here before taking a budget slot, so none then waits for a pooled
        # connection after its send time was logged.
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._token = (
            settings.backmarket_token.get_secret_value() if settings.backmarket_token else None
        ) or None
        self._stats: dict[str, int] = {}
        self.requests_total = 0

    @property
    def base_url(self) -> httpx.URL:
        """Where every request goes: a `next` link is only ever read for its path and query."""
        return self._http.base_url

    def stats(self) -> dict[str, int]:
        """Requests sent so far, keyed "METHOD /path/template outcome"."""
        return dict(self._stats)

    def scrub(self, text: str) -> str:
        """`text` without the token."""
        return text.replace(self._token, "[token]") if self._token else text

    async def request(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        market: str,
        parse: Callable[[Any], ValueT],
        params: httpx.QueryParams | None = None,
        json_body: dict[str, int] | None = None,
        repeatable: bool = True,
        kind: CallKind = CallKind.LIVE,
    ) -> Reply[ValueT]:
        """Send until a non-HTML 2xx that `parse` accepts comes back, retrying what is safe.

        `parse` turns the JSON body into the endpoint's value and raises `UnexpectedShape` for a
        body that is not what the endpoint promises. `repeatable=False` (the update POST)
        retries only answers that prove the request was not processed.
        """
        target = request_target(path, params)
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
                    kind=kind,
                )
            except PausedTooLong as paused:
                raise RateLimited(
                    f"{method} {target} not sent: the client is paused for another "
                    f"{paused.remaining:.1f}s after a 429",
                    endpoint=endpoint,
                    attempts=attempt - 1,
                    retry_after=paused.remaining,
                ) from None
            except httpx.TransportError as exc:
                failure = judge_transport_error(
                    exc, method=method, target=target, repeatable=repeatable, scrub=self.scrub
                )
            else:
                body = json_or_none(response)
                judged = judge_response(
                    response,
                    body,
                    method=method,
                    target=target,
                    repeatable=repeatable,
                    scrub=self.scrub,
                )
                if judged is None:
                    try:
                        value = parse(body)
                    except UnexpectedShape as problem:
                        judged = judge_shape(
                            response,
                            body,
                            problem,
                            method=method,
                            target=target,
                            repeatable=repeatable,
                            scrub=self.scrub,
                        )
                    else:
                        return Reply(response, body, value, sent_at, attempt)
                failure = judged

            if failure.kind is RateLimited:
                if failure.retry_after is None:
                    failure.retry_after = self.default_rate_limit_pause_seconds
                self._budget.pause_until(self._clock() + failure.retry_after)

            wait_too_long = (failure.retry_after or 0.0) > self.max_retry_wait_seconds
            if not failure.retryable or attempt >= max_attempts or wait_too_long:
                raise _error(failure, endpoint=endpoint, attempts=attempt)

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
            # A 429's own pause is waited out in the budget, shared with every other call.
            await self._sleep(delay)

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

    def _record(self, endpoint: str, outcome: str) -> None:
        key = f"{endpoint} {outcome}"
        self._stats[key] = self._stats.get(key, 0) + 1
        REQUESTS_COUNTER.labels(
            marketplace_id=str(self._marketplace_id), endpoint=endpoint, outcome=outcome
        ).inc()

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
        kind: CallKind,
    ) -> tuple[httpx.Response, datetime]:
        target = request_target(path, params)
        async with self._in_flight:
            await self._budget.acquire(max_pause=self.max_retry_wait_seconds, kind=kind)
            sent_at = datetime.now(UTC)
            started = self._clock()
            self.requests_total += 1
            try:
                response = await self._http.request(
                    method, path, params=params, json=json_body, headers=self._headers(market)
                )
            except httpx.TransportError as exc:
                outcome = transport_outcome(exc)
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


def _error(failure: Failure, *, endpoint: str, attempts: int) -> BackMarketError:
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
