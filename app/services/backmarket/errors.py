"""What can go wrong with a Back Market call: one `BackMarketError` subclass per way.

Only a 2xx with the expected JSON shape is success; anything else is one of these, never an empty
page or "no change". `str()` says what happened and never contains the token. The names differ
from the HTTP errors of `app.errors` (`ListingNotFound`, not `NotFound`), so both can be imported
side by side.
"""

from __future__ import annotations


class BackMarketError(Exception):
    """A Back Market call that did not succeed; `str()` says what happened (never the token)."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str = "",
        status: int | None = None,
        request_id: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status
        self.request_id = request_id
        self.attempts = attempts


class RateLimited(BackMarketError):
    """429 still after the retries, or the client is paused by a 429 for too long to wait.

    `retry_after` is the pause the client applied: the server's Retry-After, else 10 s.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str = "",
        status: int | None = None,
        request_id: str | None = None,
        attempts: int = 1,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, endpoint=endpoint, status=status, request_id=request_id, attempts=attempts
        )
        self.retry_after = retry_after


class BackMarketUnavailable(BackMarketError):
    """5xx, timeout, network error, HTML page or Cloudflare challenge, still after the retries."""


class ListingNotFound(BackMarketError):
    """404: the listing is unknown or not the seller's. Not retried."""


class Unauthorized(BackMarketError):
    """401, or a 403 that is not a Cloudflare challenge. Not retried."""


class BadResponse(BackMarketError):
    """A 2xx of the wrong shape, or a 4xx other than 401/403/404/429 (a 400 may be a string)."""


class OutcomeUnknown(BackMarketError):
    """update_listing only: the POST may have been processed and no usable answer came.

    Never retried automatically: read the listing back before deciding to send again.
    """


class IncompleteFeed(BackMarketError):
    """One market's collection was not all read; every page that did arrive was yielded first.

    `failed_pages`: page number -> its error. `unusable`: page number -> why each of its items
    that could not be used was left out. `expected` is the largest `count` any page reported,
    `smallest_count` the smallest. `noun` names the collection in the message ("listings").
    """

    def __init__(
        self,
        market: str,
        failed_pages: dict[int, BackMarketError],
        expected: int,
        received: int,
        *,
        endpoint: str,
        noun: str,
        attempts: int = 0,
        unusable: dict[int, list[str]] | None = None,
        smallest_count: int | None = None,
    ) -> None:
        unusable = unusable or {}
        reasons = []
        if failed_pages:
            failures = ", ".join(
                f"{page} ({type(error).__name__})" for page, error in sorted(failed_pages.items())
            )
            reasons.append(f"pages failed: {failures}")
        if unusable:
            why_unusable = [why for _, whys in sorted(unusable.items()) for why in whys]
            shown = "; ".join(why_unusable[:3])
            more = f" and {len(why_unusable) - 3} more" if len(why_unusable) > 3 else ""
            reasons.append(f"{len(why_unusable)} unusable {noun} left out: {shown}{more}")
        if not reasons:
            reasons.append("no page failed, so a page came back short")
        if smallest_count is not None and smallest_count != expected:
            reasons.append(
                f"'count' changed during the read (between {smallest_count} and {expected})"
            )
        super().__init__(
            f"{noun} of {market} incomplete: {received} unique {noun} of {expected} "
            f"expected; {'; '.join(reasons)}",
            endpoint=endpoint,
            attempts=attempts,
        )
        self.market = market
        self.failed_pages = failed_pages
        self.expected = expected
        self.received = received
        self.unusable = unusable
        self.smallest_count = expected if smallest_count is None else smallest_count
