"""What can go wrong with a Back Market call: the marketplace errors, under the names the Back
Market modules have always used (`ListingNotFound`, not `NotFound`, so that both it and the HTTP
errors of `app.errors` can be imported side by side).

Only a 2xx with the expected JSON shape is success; anything else is one of these, never an empty
page or "no change". `str()` says what happened and never contains the token.
"""

from __future__ import annotations

from app.services.marketplace.errors import (
    BadResponse,
    IncompleteFeed,
    MarketplaceError,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    Unauthorized,
    Unavailable,
)

BackMarketError = MarketplaceError
# 5xx, timeout, network error, HTML page or Cloudflare challenge, still after the retries.
BackMarketUnavailable = Unavailable
# 404: the listing is unknown or not the seller's.
ListingNotFound = NotFound

__all__ = [
    "BackMarketError",
    "BackMarketUnavailable",
    "BadResponse",
    "IncompleteFeed",
    "ListingNotFound",
    "OutcomeUnknown",
    "RateLimited",
    "Unauthorized",
]
