"""The Cloudflare-like front of /ws: rate limit, faults, holds, latency, cf-ray.

A pure ASGI middleware rather than a route dependency because some answers never
reach the origin (429, 403 challenge, 524) and one reaches it but is lost on the
way back ("lost_response"), which only a layer wrapping the whole exchange can do.
"""

from __future__ import annotations

import asyncio
from typing import Final

from starlette.datastructures import Headers, QueryParams
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from simulator import responses
from simulator.state import Admission, SimulatorState

CONTROL_PREFIX: Final = "/_sim"
ADMISSION_SCOPE_KEY: Final = "simulator.admission"


def admission_of(scope: Scope) -> Admission | None:
    admission = scope.get(ADMISSION_SCOPE_KEY)
    return admission if isinstance(admission, Admission) else None


def _page_number(query: QueryParams) -> int | None:
    raw = query.get("page")
    return int(raw) if raw is not None and raw.isdigit() else None


class CloudflareEdge:
    def __init__(self, app: ASGIApp, *, state: SimulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        # Back Market's (Django) URLs are written with and without a trailing slash.
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/") or "/"
        headers = Headers(scope=scope)
        client = scope.get("client")
        admission = self.state.admit(
            method=scope["method"],
            path=path,
            page=_page_number(QueryParams(scope["query_string"])),
            client=client[0] if client else "unknown",
            user_agent=headers.get("user-agent"),
        )
        scope = {**scope, "path": path, ADMISSION_SCOPE_KEY: admission}
        status = 500
        ray_headers = [(b"cf-ray", admission.cf_ray.encode()), (b"server", b"cloudflare")]

        async def send_with_ray(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *ray_headers]}
            await send(message)

        try:
            await self._answer(admission, scope, receive, send_with_ray)
        finally:
            self.state.finish(admission, status)

    async def _answer(
        self, admission: Admission, scope: Scope, receive: Receive, send: Send
    ) -> None:
        config = self.state.config
        if admission.hold is not None:
            await self.state.wait_for_release(admission.hold)
        if config.latency_ms > 0:
            await asyncio.sleep(config.latency_ms / 1000)

        request_id = admission.request_id
        send_retry_after = config.send_retry_after
        refusal: Response | None = None
        if admission.blocked_for_s is not None:
            refusal = responses.rate_limited(
                request_id, retry_after_s=admission.blocked_for_s if send_retry_after else None
            )
        elif admission.fault in ("500", "502", "503"):
            status = int(admission.fault)
            refusal = responses.error_response(status, "Simulated server error.", request_id)
        elif admission.fault == "429":
            refusal = responses.rate_limited(
                request_id, retry_after_s=config.rate_limit_block_s if send_retry_after else None
            )
        elif admission.fault == "html403":
            refusal = responses.html_challenge(admission.cf_ray)
        elif admission.fault == "json403":
            refusal = responses.bot_challenge(request_id)
        elif admission.fault == "timeout":
            await self.state.pause(config.timeout_fault_s)
            refusal = responses.origin_timeout(admission.cf_ray)
        elif admission.fault == "slow":
            await self.state.pause(config.slow_fault_s)
        elif admission.fault == "error200":
            # Seen from real servers: an ErrorResponseV1 body with status 200.
            refusal = responses.error_response(
                200, "Simulated error answered with 200.", request_id, code="E008"
            )
        elif admission.fault == "lost_response":
            await self.app(scope, receive, _discard)
            refusal = responses.error_response(502, "Simulated bad gateway.", request_id)

        if refusal is not None:
            await refusal(scope, receive, send)
        else:
            await self.app(scope, receive, send)


async def _discard(message: Message) -> None:
    """Send target for an answer the client never gets."""
