"""The `Status` error model of Refurbed's HTTP API: google.rpc codes and their HTTP statuses.

Every failure, of the API or of the edge in front of it, answers a `Status` body
``{"code", "message", "details"}`` with the HTTP status grpc-gateway gives that code.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import Any

from starlette.responses import JSONResponse


class Code(IntEnum):
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


# grpc-gateway's HTTPStatusFromCode.
HTTP_STATUS: Mapping[Code, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


class RpcError(Exception):
    """A call that fails with ``code``; answered as a `Status` by the handler in app.py."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def status_body(code: Code, message: str = "") -> dict[str, Any]:
    """A `Status` message as JSON (also a batch entry's per-offer result)."""
    return {"code": int(code), "message": message, "details": []}


def status_response(
    code: Code,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    http_status: int | None = None,
) -> JSONResponse:
    """A `Status` answer; ``http_status`` only where grpc-gateway departs from the code's
    own status (405 for a wrong HTTP method)."""
    return JSONResponse(
        status_body(code, message),
        status_code=http_status or HTTP_STATUS[code],
        headers=headers,
    )


def wrong_shape_response(headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A 200 whose body fits no response definition: every known field has the wrong type."""
    return JSONResponse(
        {
            "offer": "unavailable",
            "offers": {"unexpected": True},
            "orders": 0,
            "results": "unavailable",
            "has_more": "maybe",
        },
        status_code=200,
        headers=headers,
    )
