"""What a Back Market answer means: success, or which error, and whether a retry is safe.

Back Market's part: its error bodies, its `requestId`, Cloudflare's pages and challenges; what
every marketplace shares is in `app.services.marketplace.answers`. Pure functions of the answer;
none of them raises on an odd body.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx

from app.services.backmarket.errors import (
    BackMarketUnavailable,
    BadResponse,
    ListingNotFound,
    OutcomeUnknown,
    RateLimited,
    Unauthorized,
)
from app.services.marketplace import answers as common
from app.services.marketplace.answers import (
    MAY_HAVE_APPLIED,
    Failure,
    Scrub,
    UnexpectedShape,
    as_int,
    json_or_none,
)

__all__ = [
    "Failure",
    "UnexpectedShape",
    "as_int",
    "describe_body",
    "is_cloudflare_challenge",
    "is_html",
    "json_or_none",
    "judge_response",
    "judge_shape",
    "parse_retry_after",
    "request_id_of",
]

_BOT_CHALLENGE_CODE = "bot-need-challenge"


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


def _describe_error_object(body: Mapping[str, Any]) -> str | None:
    parts = [
        ": ".join(str(entry[key]) for key in ("code", "message") if key in entry)
        for entry in _error_entries(body)
    ]
    return "; ".join(part for part in parts if part) if parts else None


def describe_body(response: httpx.Response, body: object) -> str:
    """A short account of an answer's body for messages; the caller scrubs it."""
    return common.describe_body(
        response, body, describe_object=_describe_error_object, is_html=is_html
    )


def request_id_of(response: httpx.Response, body: object) -> str | None:
    """Back Market's `requestId`, else Cloudflare's `cf-ray` header."""
    if isinstance(body, Mapping) and isinstance(body.get("requestId"), str):
        return str(body["requestId"])
    return response.headers.get("cf-ray")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent."""
    return common.parse_retry_after(value, wall_now=time.time())


def judge_response(
    response: httpx.Response,
    body: object,
    *,
    call: str,
    repeatable: bool,
    scrub: Scrub,
) -> Failure | None:
    """None when the answer is a non-HTML 2xx; the caller checks its shape."""
    status = response.status_code
    request_id = request_id_of(response, body)
    answered = f"{call} answered {status} with " + scrub(describe_body(response, body))
    if 200 <= status < 300:
        if not is_html(response):
            return None
        # Cloudflare interstitials come back as 2xx HTML: not Back Market's answer.
        if not repeatable:
            return Failure(OutcomeUnknown, answered + MAY_HAVE_APPLIED, False, status, request_id)
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
            return Failure(OutcomeUnknown, answered + MAY_HAVE_APPLIED, False, status, request_id)
        return Failure(BackMarketUnavailable, answered, True, status, request_id, retry_after)
    return Failure(BadResponse, answered, False, status, request_id)


def judge_shape(
    response: httpx.Response,
    body: object,
    problem: UnexpectedShape,
    *,
    call: str,
    repeatable: bool,
    scrub: Scrub,
) -> Failure:
    """A 2xx of the wrong shape (an error body, a page without `results`...): retried on a read,
    OutcomeUnknown on an update."""
    return common.judge_shape(
        problem,
        status=response.status_code,
        call=call,
        described=describe_body(response, body),
        request_id=request_id_of(response, body),
        repeatable=repeatable,
        scrub=scrub,
    )
