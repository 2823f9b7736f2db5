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

import logging
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import httpx
from prometheus_client import Counter

from app.config import Settings
from app.services.backmarket.answers import judge_response, judge_shape
from app.services.backmarket.budget import CallKind, Clock, RequestBudget, Sleep
from app.services.marketplace.transport import Reply, RetryingTransport

__all__ = ["REQUESTS_COUNTER", "Reply", "Transport", "body_as_is", "request_target"]

# The whole client logs under the package's name, so one logger setting covers it.
logger = logging.getLogger("app.services.backmarket")

REQUESTS_COUNTER = Counter(
    "backmarket_requests_total",
    "HTTP requests sent to Back Market, by marketplace, endpoint template and outcome.",
    ["marketplace_id", "endpoint", "outcome"],
)


ValueT = TypeVar("ValueT")


def body_as_is(body: Any) -> Any:
    """A `parse` that accepts any body, for a caller that judges the body itself."""
    return body


def request_target(path: str, params: httpx.QueryParams | None) -> str:
    """Path and query as a message shows them."""
    return f"{path}?{params}" if params else path


class Transport(RetryingTransport):
    """Sends requests for one client: one budget, one pause after a 429, one set of counters."""

    # Cloudflare blocks for 10 s after a 429 and does not always say so.
    default_rate_limit_pause_seconds: float = 10.0
    # Cloudflare's challenge and a refused connection prove the update was not processed.
    retry_unsent_update = True
    paused_reason = "the client is paused for another {remaining:.1f}s after a 429"

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
        token = settings.backmarket_token.get_secret_value() if settings.backmarket_token else None
        super().__init__(
            marketplace_id=marketplace_id,
            http=http,
            token=token,
            budget=budget,
            max_attempts=settings.backmarket_max_attempts,
            max_in_flight=max_in_flight,
            clock=clock,
            sleep=sleep,
            judge_response=judge_response,
            judge_shape=judge_shape,
            counter=REQUESTS_COUNTER,
            logger=logger,
        )
        self._settings = settings

    @property
    def base_url(self) -> httpx.URL:
        """Where every request goes: a `next` link is only ever read for its path and query."""
        return self._http.base_url

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
        send = partial(
            self._http.request,
            method,
            path,
            params=params,
            json=json_body,
            headers=self._headers(market),
        )
        return await self._send_with_retries(
            send,
            call=f"{method} {request_target(path, params)}",
            endpoint=endpoint,
            parse=parse,
            repeatable=repeatable,
            kind=kind,
            log_tag=f" [{market}]",
        )

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
