"""The marketplace seam: one interface, neutral types and errors, and the registry.

* `protocol`: `Marketplace`, the operations the use cases need from any marketplace.
* `types`: `Listing`, `ListingRef`, `ListingPage`, `OrderLine`, `OrderLinesPage`.
* `errors`: `MarketplaceError` and one subclass per way a call fails.
* `budget`: `RequestBudget`, the per-account request budget, and `CallKind` (who a call is for).
* `registry`: `MarketplaceRegistry`, marketplace id -> adapter, built once by the wiring.

What the HTTP adapters share, imported by them only: `transport` (`RetryingTransport`, one
request with retries within the budget), `answers` (the vendor-neutral reading of an answer),
`account` (`AccountConnection`, an account's HTTP client and budget) and `times` (RFC 3339).

Adapters live beside this package (`app.services.backmarket`, `app.services.refurbed`); the use
cases import only this one.
"""

from app.services.marketplace.budget import (
    BudgetSnapshot,
    CallKind,
    Clock,
    PausedTooLong,
    RequestBudget,
    Sleep,
)
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
from app.services.marketplace.protocol import Marketplace, MarketplaceKind
from app.services.marketplace.registry import MarketplaceNotConfigured, MarketplaceRegistry
from app.services.marketplace.types import (
    Listing,
    ListingPage,
    ListingRef,
    OrderLine,
    OrderLinesPage,
    OrderTime,
)

__all__ = [
    "BadResponse",
    "BudgetSnapshot",
    "CallKind",
    "Clock",
    "IncompleteFeed",
    "Listing",
    "ListingPage",
    "ListingRef",
    "Marketplace",
    "MarketplaceError",
    "MarketplaceKind",
    "MarketplaceNotConfigured",
    "MarketplaceRegistry",
    "NotFound",
    "OrderLine",
    "OrderLinesPage",
    "OrderTime",
    "OutcomeUnknown",
    "PausedTooLong",
    "RateLimited",
    "RequestBudget",
    "Sleep",
    "Unauthorized",
    "Unavailable",
]
