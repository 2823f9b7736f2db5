"""The front of the API: rate limit with its headers, faults, holds and latency.

A pure ASGI middleware rather than a route dependency because some answers never
reach the RPC handler (429, timeouts, wrong-shape 200s) and one reaches it but is lost
on the way back ("lost_response", "lost_timeout"), which only a layer wrapping the
whole exchange can do. The control API (``/_sim``) passes straight through.
"""

from __future__ import annotations

import asyncio
from typing import Final

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from simulator.refurbed.responses import Code, status_response, wrong_shape_response
from simulator.refurbed.state import Admission, RefurbedSimulatorState

CONTROL_PREFIX: Final = "/_sim"


class RefurbedEdge:
    def __init__(self, app: ASGIApp, *, state: RefurbedSimulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        # The limit is per account: one token's calls never use up another's.
        authorization = Headers(scope=scope).get("authorization") or ""
        admission = self.state.admit(path=scope["path"], rate_key=authorization)
        rate_headers = admission.rate.headers() if admission.rate is not None else {}
        raw_rate_headers = [(k.lower().encode(), v.encode()) for k, v in rate_headers.items()]
        status = 500

        async def send_with_rate(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *raw_rate_headers]}
            await send(message)

        try:
            await self._answer(admission, scope, receive, send_with_rate)
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

        refusal: Response | None = None
        if admission.rate is not None and admission.rate.refused:
            refusal = status_response(Code.RESOURCE_EXHAUSTED, "rate limit exceeded")
        elif admission.fault == "500":
            refusal = status_response(Code.INTERNAL, "simulated internal error")
        elif admission.fault == "503":
            refusal = status_response(Code.UNAVAILABLE, "simulated unavailability")
        elif admission.fault == "429":
            refusal = status_response(Code.RESOURCE_EXHAUSTED, "simulated rate limit")
        elif admission.fault == "timeout":
            # Silence past any sensible client timeout; a patient client gets a 504.
            await self.state.pause(config.timeout_fault_s)
            refusal = status_response(Code.DEADLINE_EXCEEDED, "simulated timeout")
        elif admission.fault == "wrong_shape":
            refusal = wrong_shape_response()
        elif admission.fault in ("lost_response", "lost_timeout"):
            # The call is carried out; its answer never reaches the client.
            await self.app(scope, receive, _discard)
            if admission.fault == "lost_timeout":
                await self.state.pause(config.timeout_fault_s)
                refusal = status_response(Code.DEADLINE_EXCEEDED, "simulated timeout")
            else:
                refusal = status_response(Code.UNAVAILABLE, "simulated lost answer")

        if refusal is not None:
            await refusal(scope, receive, send)
        else:
            await self.app(scope, receive, send)


async def _discard(message: Message) -> None:
    """Send target for an answer the client never gets."""
