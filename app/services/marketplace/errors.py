"""What can go wrong with a marketplace call: one `MarketplaceError` subclass per way.

Every adapter maps its own failures (Back Market's status codes, Refurbed's `Status` bodies) to
these, so the use cases handle one set. Only an answer of the expected shape is success; anything
else is one of these, never an empty page or "no change". `str()` says what happened and never
contains a token.
"""

from __future__ import annotations


class MarketplaceError(Exception):
    """A marketplace call that did not succeed; `str()` says what happened (never the token)."""

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


class RateLimited(MarketplaceError):
    """429 still after the retries, or the account is paused by a 429 for too long to wait.

    `retry_after` is the pause the adapter applied: the server's answer, else its default.
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


class Unavailable(MarketplaceError):
    """5xx, timeout, network error, an HTML page or a challenge, still after the retries."""


class NotFound(MarketplaceError):
    """The listing or offer is unknown or not the seller's. Not retried."""


class Unauthorized(MarketplaceError):
    """The token was refused. Not retried."""


class BadResponse(MarketplaceError):
    """An answer of the wrong shape, or a refusal that is none of the above."""


class OutcomeUnknown(MarketplaceError):
    """set_quantity only: the update may have been applied and no usable answer came.

    Never retried automatically: read the listing back before deciding to send again.
    """


class IncompleteFeed(MarketplaceError):
    """One feed's listings were not all read; every page that did arrive was yielded first.

    `failed_pages`: page number (in reading order, from 1) -> its error. `unusable`: page number
    -> why each of its items that could not be used was left out. `expected` is the largest total
    the feed announced, None when it announces none (a cursor feed), `smallest_count` the
    smallest. `noun` names the collection in the message ("listings", "offers").
    """

    def __init__(
        self,
        feed: str,
        failed_pages: dict[int, MarketplaceError],
        expected: int | None,
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
        if expected is not None and smallest_count is not None and smallest_count != expected:
            reasons.append(
                f"'count' changed during the read (between {smallest_count} and {expected})"
            )
        of_expected = "" if expected is None else f" of {expected} expected"
        super().__init__(
            f"{noun} of {feed} incomplete: {received} unique {noun}{of_expected}; "
            f"{'; '.join(reasons)}",
            endpoint=endpoint,
            attempts=attempts,
        )
        self.feed = feed
        self.failed_pages = failed_pages
        self.expected = expected
        self.received = received
        self.unusable = unusable
        self.smallest_count = expected if smallest_count is None else smallest_count

    @property
    def market(self) -> str:
        """Back Market's name for a feed (an Accept-Language market)."""
        return self.feed
