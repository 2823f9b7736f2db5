"""Back Market's failures as the quantity use cases report them: a refresh's `error` text, an
addition's domain error (and so its HTTP status)."""

from __future__ import annotations

import math

from app.errors import DomainError, TooManyRequests, UpstreamFailed
from app.services import marketplace as mp

# Back Market (Cloudflare) blocks for 10 s after a 429 and rarely says for how long.
DEFAULT_RATE_LIMIT_RETRY_SECONDS = 10

_KINDS: dict[type[mp.MarketplaceError], str] = {
    mp.RateLimited: "rate_limited",
    mp.Unavailable: "unavailable",
    mp.NotFound: "not_found",
    mp.Unauthorized: "unauthorized",
    mp.BadResponse: "bad_response",
}


def error_kind(exc: mp.MarketplaceError) -> str:
    """A short label of the failure, for metrics (`stale_<kind>`)."""
    return next((kind for cls, kind in _KINDS.items() if isinstance(exc, cls)), "error")


def read_failure_message(exc: mp.MarketplaceError, listing_ref: str) -> str:
    """Why a refresh answers the stored values."""
    why = {
        "rate_limited": "Back Market is rate limiting",
        "unavailable": "Back Market is unavailable or timed out",
        "not_found": f"Back Market does not know listing {listing_ref} (404)",
        "unauthorized": "Back Market refused the credentials",
        "bad_response": "Back Market answered something unexpected",
    }.get(error_kind(exc), "Back Market could not be read")
    return f"{why}; stored values returned ({exc})"


def upstream_error(exc: mp.MarketplaceError, *, doing: str, listing_ref: str) -> DomainError:
    """The domain error of an addition that Back Market failed; nothing was applied."""
    if isinstance(exc, mp.RateLimited):
        retry_after = max(
            1,
            math.ceil(
                exc.retry_after if exc.retry_after is not None else DEFAULT_RATE_LIMIT_RETRY_SECONDS
            ),
        )
        return TooManyRequests(
            f"Back Market is rate limiting ({doing}); nothing was recorded as applied",
            headers={"Retry-After": str(retry_after)},
            reason="backmarket_rate_limited",
            retry_after_seconds=retry_after,
        )
    if isinstance(exc, mp.NotFound):
        return UpstreamFailed(
            f"Back Market does not know listing {listing_ref} (404, {doing}); "
            "nothing was recorded as applied",
            reason="listing_not_found",
        )
    return UpstreamFailed(
        f"Back Market failed ({doing}): {exc}; nothing was recorded as applied",
        reason="backmarket_failed",
    )
