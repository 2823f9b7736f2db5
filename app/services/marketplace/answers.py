"""What any marketplace answer means, as far as it does not depend on the vendor: the JSON body,
a short account of it, `Retry-After`, a transport error, a 2xx of the wrong shape.

Each adapter's own `answers` module adds the vendor's part (its error bodies and codes, its
request id, what an HTML page means there). Pure functions; none of them raises on an odd body.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from app.services.marketplace.errors import (
    BadResponse,
    MarketplaceError,
    OutcomeUnknown,
    Unavailable,
)

Scrub = Callable[[str], str]

MAY_HAVE_APPLIED = ": the update may or may not have been applied"

_INT_PATTERN = re.compile(r"-?[0-9]+")


def as_int(value: object) -> int | None:
    """An int from an int or an integer string (int64 fields travel as strings); else None.

    Bools give None too.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT_PATTERN.fullmatch(value.strip()):
        return int(value.strip())
    return None


class UnexpectedShape(ValueError):
    """A 2xx body that is not what the call promises; `str()` says what is wrong."""


def json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def describe_body(
    response: httpx.Response,
    body: object,
    *,
    describe_object: Callable[[Mapping[str, Any]], str | None],
    is_html: Callable[[httpx.Response], bool],
) -> str:
    """A short account of an answer's body for messages; the caller scrubs it.

    `describe_object` tells what the vendor's error object says (None: nothing it knows, the keys
    are listed instead); `is_html` whether a body that is not JSON is an HTML page.
    """
    if isinstance(body, Mapping):
        described = describe_object(body)
        if described is not None:
            text = described
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


def parse_retry_after(value: str | None, *, wall_now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent.

    `wall_now` is the Unix time an HTTP date is counted from.
    """
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
    return max(0.0, moment.timestamp() - wall_now)


@dataclass(slots=True)
class Failure:
    """An answer (or transport error) that is not success: what to raise, and whether to retry."""

    kind: type[MarketplaceError]
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
    exc: httpx.TransportError,
    *,
    call: str,
    repeatable: bool,
    retry_unsent_update: bool,
    scrub: Scrub,
) -> Failure:
    """A request that got no answer: Unavailable, or OutcomeUnknown for an update that may have
    been sent. `retry_unsent_update`: whether an update that surely was not sent is retried."""
    what = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    detail = scrub(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    if not repeatable and not _surely_not_sent(exc):
        return Failure(
            OutcomeUnknown,
            f"{call} {what} after the request may have been sent ({detail})" + MAY_HAVE_APPLIED,
            retryable=False,
        )
    return Failure(
        Unavailable, f"{call} {what} ({detail})", retryable=repeatable or retry_unsent_update
    )


def judge_shape(
    problem: UnexpectedShape,
    *,
    status: int,
    call: str,
    described: str,
    request_id: str | None,
    repeatable: bool,
    scrub: Scrub,
) -> Failure:
    """A 2xx whose body (`described`) is not what the call promises.

    A read is retried like a 5xx: such answers have been transient. An update is never retried:
    the marketplace may have applied it whatever the body says.
    """
    answered = scrub(f"{call} answered {status} but {problem}: {described}")
    if not repeatable:
        return Failure(OutcomeUnknown, answered + MAY_HAVE_APPLIED, False, status, request_id)
    return Failure(BadResponse, answered, True, status, request_id)
