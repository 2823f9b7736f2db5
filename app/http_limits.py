"""What a request may carry: integers within the range of the column they are stored in or
looked up by, and a body of at most MAX_BODY_BYTES.

An id past its column's range can match nothing and would make the driver fail (a 500); the
types below let the request's validation refuse it with a 422 instead, and put the bounds in
the OpenAPI document.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.models import BIGINT_MAX, INT_MAX

# INT: variation.id, and marketplace_id in stock_sync_logs, marketplace_stock_history and
# idempotency_keys (marketplace.id is a BIGINT, but a run or a change could not record more).
# BIGINT: stock_sync_logs.id.
VariationId = Annotated[int, Field(ge=1, le=INT_MAX)]
MarketplaceId = Annotated[int, Field(ge=1, le=INT_MAX)]
RunId = Annotated[int, Field(ge=1, le=BIGINT_MAX)]

# Far above any body this API takes (an add-quantity or bulk-sync body is a few dozen bytes).
MAX_BODY_BYTES = 64 * 1024
BODY_TOO_LARGE = f"the request body is larger than {MAX_BODY_BYTES} bytes"


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a streamed body passes the limit.

    An HTTPException, so that FastAPI's body reading lets it through (it turns any other error
    into a 400) and the app's handler answers it like any other error.
    """

    def __init__(self) -> None:
        super().__init__(status_code=413, detail=BODY_TOO_LARGE)


class BodySizeLimitMiddleware:
    """413 for a body above `max_body_bytes`: at once when Content-Length says so, otherwise
    (a chunked body) as soon as the bytes received pass the limit, before the rest is read."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await _too_large(scope, receive, send)
            return

        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge()
            return message

        async def watching_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLarge:
            # Read by something outside the app's own error handling; answer it here.
            if response_started:
                raise
            await _too_large(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _too_large(scope: Scope, receive: Receive, send: Send) -> None:
    await JSONResponse(status_code=413, content={"detail": BODY_TOO_LARGE})(scope, receive, send)
