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

import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, TypeVar

import httpx
from prometheus_client import Counter

from app.services.marketplace.budget import CallKind, Clock, RequestBudget, Sleep
from app.services.marketplace.transport import Reply, RetryingTransport
from app.services.refurbed.answers import (
    Failure,
    RateLimitHeaders,
    judge_response,
    judge_shape,
    parse_retry_after,
)
from app.services.refurbed.methods import RpcMethod

__all__ = ["REQUESTS_COUNTER", "Reply", "Transport"]

# The whole adapter logs under the package's name, so one logger setting covers it.
logger = logging.getLogger("app.services.refurbed")

REQUESTS_COUNTER = Counter(
    "refurbed_requests_total",
    "HTTP requests sent to Refurbed, by marketplace, method and outcome.",
    ["marketplace_id", "endpoint", "outcome"],
)

ValueT = TypeVar("ValueT")


class Transport(RetryingTransport):
    """Sends the calls of one Refurbed account: one budget, one pause, one token."""

    # Refurbed publishes no numbers; without a Reset or Retry-After this is how long a 429 holds.
    default_rate_limit_pause_seconds: float = 10.0
    # UpdateOffer is sent once, whatever the transport error.
    retry_unsent_update = False
    paused_reason = "the account is paused for another {remaining:.1f}s by Refurbed's rate limit"

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
        super().__init__(
            marketplace_id=marketplace_id,
            http=http,
            token=token,
            budget=budget,
            max_attempts=max_attempts,
            max_in_flight=max_in_flight,
            clock=clock,
            sleep=sleep,
            judge_response=judge_response,
            judge_shape=judge_shape,
            counter=REQUESTS_COUNTER,
            logger=logger,
        )
        self._wall_clock = wall_clock
        self.last_rate_limit: RateLimitHeaders | None = None

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
        return await self._send_with_retries(
            partial(self._http.post, method.path, json=body, headers=self._headers()),
            call=f"POST {method.path}",
            endpoint=method.endpoint,
            parse=parse,
            repeatable=repeatable,
            kind=kind,
        )

    def _rate_limit_pause(self, response: httpx.Response, failure: Failure) -> float:
        """Seconds the account holds after a 429: to the reset, else Retry-After, else default."""
        wall_now = self._wall_clock()
        to_reset = RateLimitHeaders.of(response).seconds_to_reset(wall_now=wall_now)
        if to_reset is not None:
            return to_reset
        retry_after = parse_retry_after(response.headers.get("retry-after"), wall_now=wall_now)
        if retry_after is not None:
            return retry_after
        return self.default_rate_limit_pause_seconds

    def _after_answer(self, response: httpx.Response) -> None:
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
