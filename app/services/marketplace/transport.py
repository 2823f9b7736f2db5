"""One request to a marketplace, with retries, as every adapter sends it.

* A request waits for a free connection, then for a slot of the account's budget; a pause longer
  than `max_retry_wait_seconds` (after a 429) raises RateLimited at once, without sending.
* Failures are retried with exponential backoff and full jitter, at most `max_attempts` times,
  when the adapter's judgement says a retry is safe; a 429 pauses the whole budget (the
  adapter says for how long) and a wait longer than `max_retry_wait_seconds` fails the call.
* Timeouts and network errors are Unavailable, or OutcomeUnknown for an update that may have
  been sent. The token is scrubbed from every message.

The adapter says what its answers mean (`judge_response`, `judge_shape`); its subclass how long a
429 holds (`_rate_limit_pause`) and what its answers' headers ask (`_after_answer`), and builds
each request itself (auth scheme, URL, body).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

import httpx
from prometheus_client import Counter

from app.services.marketplace.answers import (
    Failure,
    Scrub,
    UnexpectedShape,
    json_or_none,
    judge_transport_error,
    transport_outcome,
)
from app.services.marketplace.budget import CallKind, Clock, PausedTooLong, RequestBudget, Sleep
from app.services.marketplace.errors import MarketplaceError, RateLimited

ValueT = TypeVar("ValueT")


class JudgeResponse(Protocol):
    """The adapter's reading of an answer: None when `parse` is to judge its body's shape."""

    def __call__(
        self, response: httpx.Response, body: Any, *, call: str, repeatable: bool, scrub: Scrub
    ) -> Failure | None: ...


class JudgeShape(Protocol):
    """The adapter's failure for an answer whose body `parse` rejected."""

    def __call__(
        self,
        response: httpx.Response,
        body: Any,
        problem: UnexpectedShape,
        *,
        call: str,
        repeatable: bool,
        scrub: Scrub,
    ) -> Failure: ...


@dataclass(slots=True)
class Reply(Generic[ValueT]):
    """A 2xx whose body `parse` accepted; `value` is what it made of the body."""

    response: httpx.Response
    body: Any
    value: ValueT
    sent_at: datetime
    attempts: int


class RetryingTransport:
    """Sends the requests of one account: one budget, one pause after a 429, one set of counters."""

    default_rate_limit_pause_seconds: float = 10.0
    backoff_base_seconds: float = 0.5
    backoff_cap_seconds: float = 30.0
    # Longer waits fail the call instead: a sync run or an API request must not hang for minutes.
    max_retry_wait_seconds: float = 60.0
    # Whether an update that surely never left (a connect error) is sent again.
    retry_unsent_update: bool = False
    # Why a call is not sent while the budget is paused; `{remaining}` is the seconds left.
    paused_reason: str = "the account is paused for another {remaining:.1f}s after a 429"

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
        sleep: Sleep,
        judge_response: JudgeResponse,
        judge_shape: JudgeShape,
        counter: Counter,
        logger: logging.Logger,
    ) -> None:
        self._marketplace_id = marketplace_id
        self._http = http
        self._token = token or None
        self._budget = budget
        self._max_attempts = max_attempts
        self._clock = clock
        self._sleep = sleep
        self._judge_response = judge_response
        self._judge_shape = judge_shape
        self._counter = counter
        self._logger = logger
        self._random = random.Random()
        # Requests wait here before taking a budget slot, so none then waits for a pooled
        # connection after its send time was logged.
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._stats: dict[str, int] = {}
        self.requests_total = 0

    def stats(self) -> dict[str, int]:
        """Requests sent so far, keyed "<endpoint> <outcome>"."""
        return dict(self._stats)

    def scrub(self, text: str) -> str:
        """`text` without the token."""
        return text.replace(self._token, "[token]") if self._token else text

    # -- what the adapter's headers ask (a subclass says) ---------------------------------------

    def _rate_limit_pause(self, response: httpx.Response, failure: Failure) -> float:
        """Seconds the whole account holds after this 429."""
        if failure.retry_after is not None:
            return failure.retry_after
        return self.default_rate_limit_pause_seconds

    def _after_answer(self, response: httpx.Response) -> None:
        """Whatever any answer's headers ask of the budget."""

    # -- sending -------------------------------------------------------------------------------

    async def _send_with_retries(
        self,
        send: Callable[[], Awaitable[httpx.Response]],
        *,
        call: str,
        endpoint: str,
        parse: Callable[[Any], ValueT],
        repeatable: bool,
        kind: CallKind,
        log_tag: str = "",
    ) -> Reply[ValueT]:
        """`send` until a answer comes back that `parse` accepts, retrying what is safe.

        `call` names the request in messages ("GET /path?query"), `log_tag` follows it in the
        logs (Back Market's market).
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                response, sent_at = await self._send_once(
                    send, shown=call + log_tag, endpoint=endpoint, attempt=attempt, kind=kind
                )
            except PausedTooLong as paused:
                reason = self.paused_reason.format(remaining=paused.remaining)
                raise RateLimited(
                    f"{call} not sent: {reason}",
                    endpoint=endpoint,
                    attempts=attempt - 1,
                    retry_after=paused.remaining,
                ) from None
            except httpx.TransportError as exc:
                failure = judge_transport_error(
                    exc,
                    call=call,
                    repeatable=repeatable,
                    retry_unsent_update=self.retry_unsent_update,
                    scrub=self.scrub,
                )
            else:
                body = json_or_none(response)
                judged = self._judge_response(
                    response, body, call=call, repeatable=repeatable, scrub=self.scrub
                )
                if judged is None:
                    try:
                        value = parse(body)
                    except UnexpectedShape as problem:
                        judged = self._judge_shape(
                            response,
                            body,
                            problem,
                            call=call,
                            repeatable=repeatable,
                            scrub=self.scrub,
                        )
                    else:
                        return Reply(response, body, value, sent_at, attempt)
                failure = judged
                if failure.kind is RateLimited:
                    failure.retry_after = self._rate_limit_pause(response, failure)
                    self._budget.pause_until(self._clock() + failure.retry_after)

            wait_too_long = (failure.retry_after or 0.0) > self.max_retry_wait_seconds
            if not failure.retryable or attempt >= self._max_attempts or wait_too_long:
                raise error_of(failure, endpoint=endpoint, attempts=attempt)

            delay = self._backoff(attempt)
            if failure.retry_after is not None and failure.kind is not RateLimited:
                delay = max(delay, failure.retry_after)
            self._logger.warning(
                "%s%s; attempt %d of %d in %.2fs (request id %s)",
                failure.message,
                log_tag,
                attempt + 1,
                self._max_attempts,
                delay,
                failure.request_id,
            )
            # A 429's own pause is waited out in the budget, shared with every other call.
            await self._sleep(delay)

    def _record(self, endpoint: str, outcome: str) -> None:
        key = f"{endpoint} {outcome}"
        self._stats[key] = self._stats.get(key, 0) + 1
        self._counter.labels(
            marketplace_id=str(self._marketplace_id), endpoint=endpoint, outcome=outcome
        ).inc()

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_cap_seconds, self.backoff_base_seconds * 2 ** (attempt - 1))
        return self._random.uniform(0.0, ceiling)

    async def _send_once(
        self,
        send: Callable[[], Awaitable[httpx.Response]],
        *,
        shown: str,
        endpoint: str,
        attempt: int,
        kind: CallKind,
    ) -> tuple[httpx.Response, datetime]:
        async with self._in_flight:
            await self._budget.acquire(max_pause=self.max_retry_wait_seconds, kind=kind)
            sent_at = datetime.now(UTC)
            started = self._clock()
            self.requests_total += 1
            try:
                response = await send()
            except httpx.TransportError as exc:
                outcome = transport_outcome(exc)
                self._record(endpoint, outcome)
                self._logger.debug(
                    "%s -> %s (%s) after %.3fs, attempt %d",
                    shown,
                    outcome,
                    type(exc).__name__,
                    self._clock() - started,
                    attempt,
                )
                raise
        self._record(endpoint, str(response.status_code))
        self._after_answer(response)
        self._logger.debug(
            "%s -> %d in %.3fs, attempt %d",
            shown,
            response.status_code,
            self._clock() - started,
            attempt,
        )
        return response, sent_at


def error_of(failure: Failure, *, endpoint: str, attempts: int) -> MarketplaceError:
    """The error a call raises for its last failure."""
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
