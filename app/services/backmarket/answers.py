"""What a Back Market answer means: success, or which error, and whether a retry is safe.

Pure functions of the answer (or of the transport error); none of them raises on an odd body.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from app.services.backmarket.errors import (
    BackMarketError,
    BackMarketUnavailable,
    BadResponse,
    ListingNotFound,
    OutcomeUnknown,
    RateLimited,
    Unauthorized,
)

Scrub = Callable[[str], str]

_INT_PATTERN = re.compile(r"-?[0-9]+")
_BOT_CHALLENGE_CODE = "bot-need-challenge"


def as_int(value: object) -> int | None:
    """An int from an int or an integer string; bools and anything else give None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT_PATTERN.fullmatch(value.strip()):
        return int(value.strip())
    return None


class UnexpectedShape(ValueError):
    """A 2xx body that is not what the endpoint promises; `str()` says what is wrong."""


def json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def is_html(response: httpx.Response) -> bool:
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


def is_cloudflare_challenge(response: httpx.Response, body: object) -> bool:
    if response.status_code != 403:
        return False
    if response.headers.get("cf-mitigated", "").lower() == "challenge" or is_html(response):
        return True
    return any(entry.get("code") == _BOT_CHALLENGE_CODE for entry in _error_entries(body))


def describe_body(response: httpx.Response, body: object) -> str:
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
    elif is_html(response):
        text = "an HTML page"
    elif not response.content:
        text = "an empty body"
    else:
        text = "a body that is not JSON"
    return text if len(text) <= 300 else text[:297] + "..."


def request_id_of(response: httpx.Response, body: object) -> str | None:
    """Back Market's `requestId`, else Cloudflare's `cf-ray` header."""
    if isinstance(body, Mapping) and isinstance(body.get("requestId"), str):
        return str(body["requestId"])
    return response.headers.get("cf-ray")


def parse_retry_after(value: str | None) -> float | None:
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


@dataclass(slots=True)
class Failure:
    """An answer (or transport error) that is not success: what to raise, and whether to retry."""

    kind: type[BackMarketError]
    message: str
    retryable: bool
    status: int | None = None
    request_id: str | None = None
    retry_after: float | None = None


def transport_outcome(exc: httpx.TransportError) -> str:
    """The outcome label of a request that got no answer."""
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect_error"
    return "network_error"


def _surely_not_sent(exc: httpx.TransportError) -> bool:
    """True when the request cannot have reached the server (nothing was written)."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def judge_transport_error(
    exc: httpx.TransportError, *, method: str, target: str, repeatable: bool, scrub: Scrub
) -> Failure:
    what = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    detail = scrub(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    if not repeatable and not _surely_not_sent(exc):
        return Failure(
            OutcomeUnknown,
            f"{method} {target} {what} after the request may have been sent ({detail}): "
            "the update may or may not have been applied",
            retryable=False,
        )
    return Failure(BackMarketUnavailable, f"{method} {target} {what} ({detail})", retryable=True)


def judge_response(
    response: httpx.Response,
    body: object,
    *,
    method: str,
    target: str,
    repeatable: bool,
    scrub: Scrub,
) -> Failure | None:
    """None when the answer is a non-HTML 2xx; the caller checks its shape."""
    status = response.status_code
    request_id = request_id_of(response, body)
    answered = f"{method} {target} answered {status} with " + scrub(describe_body(response, body))
    may_have_applied = ": the update may or may not have been applied"
    if 200 <= status < 300:
        if not is_html(response):
            return None
        # Cloudflare interstitials come back as 2xx HTML: not Back Market's answer.
        if not repeatable:
            return Failure(OutcomeUnknown, answered + may_have_applied, False, status, request_id)
        return Failure(BackMarketUnavailable, answered, True, status, request_id)
    if status == 429:
        return Failure(
            RateLimited,
            answered,
            True,
            status,
            request_id,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    if status == 404:
        return Failure(ListingNotFound, answered, False, status, request_id)
    if status == 403 and is_cloudflare_challenge(response, body):
        # Cloudflare stopped it at the edge, so even a POST was not processed.
        return Failure(
            BackMarketUnavailable, answered + " (Cloudflare challenge)", True, status, request_id
        )
    if status in (401, 403):
        return Failure(Unauthorized, answered, False, status, request_id)
    if status == 408 or status >= 500:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if not repeatable:
            return Failure(OutcomeUnknown, answered + may_have_applied, False, status, request_id)
        return Failure(BackMarketUnavailable, answered, True, status, request_id, retry_after)
    return Failure(BadResponse, answered, False, status, request_id)


def judge_shape(
    response: httpx.Response,
    body: object,
    problem: UnexpectedShape,
    *,
    method: str,
    target: str,
    repeatable: bool,
    scrub: Scrub,
) -> Failure:
    """A 2xx of the wrong shape (an error body, a page without `results`...).

    A read is retried like a 5xx: such answers have been transient. An update is never
    retried: Back Market may have applied it whatever the body says.
    """
    status = response.status_code
    request_id = request_id_of(response, body)
    answered = scrub(
        f"{method} {target} answered {status} but {problem}: {describe_body(response, body)}"
    )
    if not repeatable:
        return Failure(
            OutcomeUnknown,
            answered + ": the update may or may not have been applied",
            False,
            status,
            request_id,
        )
    return Failure(BadResponse, answered, True, status, request_id)
