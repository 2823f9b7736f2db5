"""One call to Refurbed, with retries: send it within the account's budget, judge the answer,
honour the rate-limit headers, retry what is safe to retry.

* Every call is `POST <base_url>/<package>.<Service>/<Method>` with a JSON body and
  `Authorization: Plain <token>`. The token is sent only in that header and is scrubbed from
  every message.
* Every answer's `X-RateLimit-Remaining` and `X-RateLimit-Reset` (Unix time) are read: once an
  answer says nothing remains, the account's budget sends nothing before the reset. A 429 (or a
  RESOURCE_EXHAUSTED `Status`) pauses the whole budget until the reset, else for `Retry-After`,
  else for `default_rate_limit_pause_seconds`. A pause longer than `max_retry_wait_seconds` is
  not slept through: the call raises RateLimited at once, and so does every call made while it
  lasts, without sending anything.
* Reads (`repeatable`) are retried with exponential backoff and full jitter on 429, transient
  codes (UNAVAILABLE, INTERNAL...), 5xx, timeouts, network errors and 2xx bodies of the wrong
  shape, then raise Unavailable, RateLimited or BadResponse.
* UpdateOffer (`repeatable=False`) is sent once and never retried here: an answer that does not
  prove it was refused (a 5xx, a timeout, a dropped connection, a 2xx of the wrong shape) raises
  OutcomeUnknown.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import httpx
from prometheus_client import Counter

from app.services.marketplace.budget import (
    CallKind,
    Clock,
    PausedTooLong,
    RequestBudget,
    Sleep,
)
from app.services.marketplace.errors import MarketplaceError, RateLimited
from app.services.refurbed.answers import (
    Failure,
    RateLimitHeaders,
    UnexpectedShape,
    json_or_none,
    judge_response,
    judge_shape,
    judge_transport_error,
    parse_retry_after,
    transport_outcome,
)
from app.services.refurbed.methods import RpcMethod

# The whole adapter logs under the package's name, so one logger setting covers it.
logger = logging.getLogger("app.services.refurbed")

REQUESTS_COUNTER = Counter(
    "refurbed_requests_total",
    "HTTP requests sent to Refurbed, by marketplace, method and outcome.",
    ["marketplace_id", "endpoint", "outcome"],
)

ValueT = TypeVar("ValueT")


@dataclass(slots=True)
class Reply(Generic[ValueT]):
    """A 2xx whose body `parse` accepted; `value` is what it made of the body."""

    response: httpx.Response
    body: Any
    value: ValueT
    sent_at: datetime
    attempts: int


class Transport:
    """Sends the calls of one Refurbed account: one budget, one pause, one token."""

    # Refurbed publishes no numbers; without a Reset or Retry-After this is how long a 429 holds.
    default_rate_limit_pause_seconds: float = 10.0
    backoff_base_seconds: float = 0.5
    backoff_cap_seconds: float = 30.0
    # Longer waits fail the call instead: a sync run or an API request must not hang for minutes.
    max_retry_wait_seconds: float = 60.0

    def __init__(
        self,
        *,
        marketplace_id: int,
        http: httpx.AsyncClient,
        token: str | None,
        budget: RequestBudget,
        max_attempts: int,
        max_in_flight: int,
        clock: Clock,
        wall_clock: Clock,
        sleep: Sleep,
    ) -> None:
        self._marketplace_id = marketplace_id
        self._http = http
        self._token = token or None
        self._budget = budget
        self._max_attempts = max_attempts
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._random = random.Random()
        # Calls wait here before taking a budget slot, so none then waits for a pooled
        # connection after its send time was logged.
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._stats: dict[str, int] = {}
        self.requests_total = 0
        self.last_rate_limit: RateLimitHeaders | None = None

    def stats(self) -> dict[str, int]:
        """Requests sent so far, keyed "Service/Method outcome"."""
        return dict(self._stats)

    def scrub(self, text: str) -> str:
        """`text` without the token."""
        return text.replace(self._token, "[token]") if self._token else text

    async def call(
        self,
        method: RpcMethod,
        body: Mapping[str, Any],
        *,
        parse: Callable[[Any], ValueT],
        repeatable: bool = True,
        kind: CallKind = CallKind.LIVE,
    ) -> Reply[ValueT]:
        """Post `body` until a 2xx that `parse` accepts comes back, retrying what is safe.

        `parse` turns the JSON body into the method's value and raises UnexpectedShape for a body
        that is not what the method promises.
        """
        call = f"POST {method.path}"
        attempt = 0
        while True:
            attempt += 1
            try:
                response, sent_at = await self._send_once(method, body, attempt=attempt, kind=kind)
            except PausedTooLong as paused:
                raise RateLimited(
                    f"{call} not sent: the account is paused for another "
                    f"{paused.remaining:.1f}s by Refurbed's rate limit",
                    endpoint=method.endpoint,
                    attempts=attempt - 1,
                    retry_after=paused.remaining,
                ) from None
            except httpx.TransportError as exc:
                failure = judge_transport_error(
                    exc, call=call, repeatable=repeatable, scrub=self.scrub
                )
            else:
                answer = json_or_none(response)
                judged = judge_response(
                    response, answer, call=call, repeatable=repeatable, scrub=self.scrub
                )
                if judged is None:
                    try:
                        value = parse(answer)
                    except UnexpectedShape as problem:
                        judged = judge_shape(
                            response,
                            answer,
                            problem,
                            call=call,
                            repeatable=repeatable,
                            scrub=self.scrub,
                        )
                    else:
                        return Reply(response, answer, value, sent_at, attempt)
                failure = judged
                if failure.kind is RateLimited:
                    failure.retry_after = self._pause_after_429(response)
                    self._budget.pause_until(self._clock() + failure.retry_after)

            wait_too_long = (failure.retry_after or 0.0) > self.max_retry_wait_seconds
            if not failure.retryable or attempt >= self._max_attempts or wait_too_long:
                raise _error(failure, endpoint=method.endpoint, attempts=attempt)

            delay = self._backoff(attempt)
            logger.warning(
                "%s; attempt %d of %d in %.2fs (request id %s)",
                failure.message,
                attempt + 1,
                self._max_attempts,
                delay,
                failure.request_id,
            )
            # A 429's own pause is waited out in the budget, shared with every other call.
            await self._sleep(delay)

    def _pause_after_429(self, response: httpx.Response) -> float:
        """Seconds the account holds after a 429: to the reset, else Retry-After, else default."""
        wall_now = self._wall_clock()
        to_reset = RateLimitHeaders.of(response).seconds_to_reset(wall_now=wall_now)
        if to_reset is not None:
            return to_reset
        retry_after = parse_retry_after(response.headers.get("retry-after"), wall_now=wall_now)
        if retry_after is not None:
            return retry_after
        return self.default_rate_limit_pause_seconds

    def _honour_rate_limit_headers(self, response: httpx.Response) -> None:
        """No send before the reset once an answer says the window has nothing left."""
        headers = RateLimitHeaders.of(response)
        if headers.limit is None and headers.remaining is None and headers.reset is None:
            return
        self.last_rate_limit = headers
        if headers.remaining is not None and headers.remaining <= 0:
            to_reset = headers.seconds_to_reset(wall_now=self._wall_clock())
            if to_reset is not None:
                self._budget.pause_until(self._clock() + to_reset)

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Plain {self._token}"
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
        self, method: RpcMethod, body: Mapping[str, Any], *, attempt: int, kind: CallKind
    ) -> tuple[httpx.Response, datetime]:
        async with self._in_flight:
            await self._budget.acquire(max_pause=self.max_retry_wait_seconds, kind=kind)
            sent_at = datetime.now(UTC)
            started = self._clock()
            self.requests_total += 1
            try:
                response = await self._http.post(method.path, json=body, headers=self._headers())
            except httpx.TransportError as exc:
                outcome = transport_outcome(exc)
                self._record(method.endpoint, outcome)
                logger.debug(
                    "POST %s -> %s (%s) after %.3fs, attempt %d",
                    method.path,
                    outcome,
                    type(exc).__name__,
                    self._clock() - started,
                    attempt,
                )
                raise
        self._record(method.endpoint, str(response.status_code))
        self._honour_rate_limit_headers(response)
        logger.debug(
            "POST %s -> %d in %.3fs, attempt %d",
            method.path,
            response.status_code,
            self._clock() - started,
            attempt,
        )
        return response, sent_at


def _error(failure: Failure, *, endpoint: str, attempts: int) -> MarketplaceError:
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
