"""Bodies Back Market and its Cloudflare front answer with when things go wrong."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import HTMLResponse, JSONResponse

ERROR_CODES: Mapping[int, str] = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    429: "too_many_requests",
    500: "internal_server_error",
    502: "bad_gateway",
    503: "service_unavailable",
}


def error_payload(code: str, message: str, request_id: str) -> dict[str, Any]:
    """ErrorResponseV1."""
    return {"error": {"code": code, "message": message}, "requestId": request_id}


def error_response(
    status: int,
    message: str,
    request_id: str,
    *,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_payload(code or ERROR_CODES.get(status, "error"), message, request_id),
        status_code=status,
        headers=headers,
    )


def rate_limited(request_id: str, *, retry_after_s: float | None) -> JSONResponse:
    headers = {}
    if retry_after_s is not None:
        # Whole seconds, rounded up so a client waiting exactly that long gets through.
        headers["Retry-After"] = str(max(1, int(-(-retry_after_s // 1))))
    return error_response(
        429, "Too many requests. Client has been rate limited.", request_id, headers=headers
    )


def _cloudflare_page(title: str, explanation: str, cf_ray: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en-US">
<head><title>{title}</title><meta charset="UTF-8"></head>
<body>
<div id="cf-wrapper">
<h1>{title}</h1>
<p>{explanation}</p>
<p>Cloudflare Ray ID: <strong>{cf_ray}</strong></p>
</div>
</body>
</html>
"""


def html_challenge(cf_ray: str) -> HTMLResponse:
    """The WAF's 403: an HTML page, not JSON, so a client must not parse it blindly."""
    return HTMLResponse(
        _cloudflare_page(
            "Attention Required! | Cloudflare",
            "Sorry, you have been blocked. Please enable cookies and complete the challenge.",
            cf_ray,
        ),
        status_code=403,
        headers={"cache-control": "max-age=15"},
    )


def bot_challenge(request_id: str) -> JSONResponse:
    """Bot Management's 403, documented in the spec's introduction."""
    return JSONResponse(
        {
            "errors": [
                {
                    "code": "bot-need-challenge",
                    "message": "Forbidden",
                    "challengePath": "/testchallengepage",
                }
            ],
            "requestId": request_id,
        },
        status_code=403,
    )


def origin_timeout(cf_ray: str) -> HTMLResponse:
    """Cloudflare's 524: the origin did not answer in time."""
    return HTMLResponse(
        _cloudflare_page(
            "A timeout occurred | Cloudflare",
            "The origin web server timed out responding to this request.",
            cf_ray,
        ),
        status_code=524,
    )
