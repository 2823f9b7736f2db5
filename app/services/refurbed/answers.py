"""What a Refurbed answer means: success, or which error, and whether a retry is safe.

Refurbed answers an error with a non-2xx status and a `Status` body `{"code", "message",
"details"}` whose `code` is a `google.rpc.Code`; the HTTP status is grpc-gateway's mapping of that
code. The code decides when there is one; a body that is not a `Status` (a proxy's page, an empty
body) is judged by the HTTP status alone. Pure functions of the answer; none raises on an odd body.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from app.services.marketplace import answers as common
from app.services.marketplace.answers import (
    MAY_HAVE_APPLIED,
    Failure,
    Scrub,
    UnexpectedShape,
    as_int,
    json_or_none,
    parse_retry_after,
)
from app.services.marketplace.errors import (
    BadResponse,
    MarketplaceError,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    Unauthorized,
    Unavailable,
)

__all__ = [
    "Failure",
    "RateLimitHeaders",
    "RpcCode",
    "UnexpectedShape",
    "as_int",
    "describe_body",
    "entry_error",
    "error_kind",
    "json_or_none",
    "judge_response",
    "judge_shape",
    "parse_retry_after",
    "request_id_of",
    "rpc_code_of",
]


class RpcCode(enum.IntEnum):
    """google.rpc.Code."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# Codes of a failure on Refurbed's side that a later attempt may not meet.
_TRANSIENT = frozenset(
    {
        RpcCode.CANCELLED,
        RpcCode.UNKNOWN,
        RpcCode.DEADLINE_EXCEEDED,
        RpcCode.ABORTED,
        RpcCode.INTERNAL,
        RpcCode.UNAVAILABLE,
        RpcCode.DATA_LOSS,
    }
)
_UNAUTHORIZED = frozenset({RpcCode.UNAUTHENTICATED, RpcCode.PERMISSION_DENIED})

# grpc-gateway's HTTP status of each code, read backwards for an answer without a `Status` body.
_CODE_OF_HTTP_STATUS = {
    400: RpcCode.INVALID_ARGUMENT,
    401: RpcCode.UNAUTHENTICATED,
    403: RpcCode.PERMISSION_DENIED,
    404: RpcCode.NOT_FOUND,
    408: RpcCode.DEADLINE_EXCEEDED,
    409: RpcCode.ABORTED,
    429: RpcCode.RESOURCE_EXHAUSTED,
    499: RpcCode.CANCELLED,
    500: RpcCode.INTERNAL,
    501: RpcCode.UNIMPLEMENTED,
    503: RpcCode.UNAVAILABLE,
    504: RpcCode.DEADLINE_EXCEEDED,
}


def rpc_code_of(response: httpx.Response, body: object) -> RpcCode:
    """The answer's google.rpc code: its `Status` body's, else the one its HTTP status maps from."""
    if isinstance(body, Mapping):
        number = as_int(body.get("code"))
        if number is not None and number != RpcCode.OK and number in RpcCode._value2member_map_:
            return RpcCode(number)
    status = response.status_code
    if status in _CODE_OF_HTTP_STATUS:
        return _CODE_OF_HTTP_STATUS[status]
    return RpcCode.UNAVAILABLE if status >= 500 else RpcCode.INVALID_ARGUMENT


def _describe_status(body: Mapping[str, Any]) -> str | None:
    message = body.get("message")
    return repr(message.strip()) if isinstance(message, str) and message.strip() else None


def _is_html_page(response: httpx.Response) -> bool:
    return bool(response.content) and "html" in response.headers.get("content-type", "").lower()


def describe_body(response: httpx.Response, body: object) -> str:
    """A short account of an answer's body for messages; the caller scrubs it."""
    return common.describe_body(
        response, body, describe_object=_describe_status, is_html=_is_html_page
    )


def request_id_of(response: httpx.Response) -> str | None:
    return response.headers.get("x-request-id")


@dataclass(frozen=True, slots=True)
class RateLimitHeaders:
    """`X-RateLimit-*` of one answer; `reset` is the Unix time the window resets."""

    limit: int | None
    remaining: int | None
    reset: float | None

    @classmethod
    def of(cls, response: httpx.Response) -> RateLimitHeaders:
        return cls(
            limit=as_int(response.headers.get("x-ratelimit-limit")),
            remaining=as_int(response.headers.get("x-ratelimit-remaining")),
            reset=_unix_time(response.headers.get("x-ratelimit-reset")),
        )

    def seconds_to_reset(self, *, wall_now: float) -> float | None:
        """Seconds from `wall_now` (Unix time) to the reset; None when not given or past."""
        if self.reset is None or self.reset <= wall_now:
            return None
        return self.reset - wall_now


def _unix_time(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        moment = float(value.strip())
    except ValueError:
        return None
    return moment if math.isfinite(moment) and moment > 0 else None


def error_kind(code: RpcCode) -> type[MarketplaceError]:
    """The error a google.rpc code stands for, on a read."""
    if code is RpcCode.RESOURCE_EXHAUSTED:
        return RateLimited
    if code is RpcCode.NOT_FOUND:
        return NotFound
    if code in _UNAUTHORIZED:
        return Unauthorized
    if code in _TRANSIENT:
        return Unavailable
    # INVALID_ARGUMENT and the like: the request itself is wrong, another attempt is the same.
    return BadResponse


def judge_response(
    response: httpx.Response, body: object, *, call: str, repeatable: bool, scrub: Scrub
) -> Failure | None:
    """None for a 2xx (the caller checks its shape); else what the error means.

    `repeatable=False` (UpdateOffer): nothing is retried, and an answer that does not prove the
    update was refused is OutcomeUnknown.
    """
    status = response.status_code
    if 200 <= status < 300:
        return None
    code = rpc_code_of(response, body)
    request_id = request_id_of(response)
    answered = scrub(f"{call} answered {status} {code.name} with {describe_body(response, body)}")
    kind = RateLimited if status == 429 else error_kind(code)
    if kind is Unavailable or (status >= 500 and kind is BadResponse):
        if not repeatable:
            return Failure(OutcomeUnknown, answered + MAY_HAVE_APPLIED, False, status, request_id)
        return Failure(Unavailable, answered, True, status, request_id)
    # A 429 was refused before it was processed: the account is paused, and a read tries again.
    retryable = repeatable and kind is RateLimited
    return Failure(kind, answered, retryable, status, request_id)


def entry_error(status: Mapping[str, Any], *, call: str, endpoint: str) -> MarketplaceError:
    """The error one entry's own `Status` in a batch answer stands for (the caller scrubs)."""
    number = as_int(status.get("code"))
    known = number is not None and number in RpcCode._value2member_map_
    code = RpcCode(number) if known and number is not None else RpcCode.UNKNOWN
    message = status.get("message")
    said = f": {message.strip()!r}" if isinstance(message, str) and message.strip() else ""
    return error_kind(code)(f"{call}: {code.name}{said}", endpoint=endpoint, attempts=1)


def judge_shape(
    response: httpx.Response,
    body: object,
    problem: UnexpectedShape,
    *,
    call: str,
    repeatable: bool,
    scrub: Scrub,
) -> Failure:
    """A 2xx whose body is not what the method promises: retried on a read, OutcomeUnknown on
    UpdateOffer (Refurbed may have applied it whatever the body says)."""
    return common.judge_shape(
        problem,
        status=response.status_code,
        call=call,
        described=describe_body(response, body),
        request_id=request_id_of(response),
        repeatable=repeatable,
        scrub=scrub,
    )
