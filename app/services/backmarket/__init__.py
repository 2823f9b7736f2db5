"""Back Market seller API client: read the listings, read one listing, update one listing's stock.

Modules, one job each:

* `client`: `BackMarketClient`, the calls callers make, composed from the modules below.
* `listing`: `Listing`, `ListingPage`, the listing paths.
* `orders`: `GET /ws/orders`, the orders feed (`Order`, `OrderLine`).
* `pages`: reading a whole paginated collection (concurrent pages, `next`, completeness).
* `transport`: one request with retries; `answers`: what an answer means.
* `budget`: the request budget every call of one client shares.
* `errors`: `BackMarketError` and one subclass per way a call fails.

Only a 2xx with the expected JSON shape is success. Anything else is a typed `BackMarketError`;
an error is never turned into an empty page or "no change". A 2xx JSON body of the wrong shape
(an error body answered with 200, a page without `results`) is retried like a 5xx on a read, then
`BadResponse`; on an update it is `OutcomeUnknown`, never retried. The token is sent only in the
`Authorization` header and is scrubbed from every message.
"""

from app.services.backmarket.budget import CallKind
from app.services.backmarket.client import BackMarketClient
from app.services.backmarket.errors import (
    BackMarketError,
    BackMarketUnavailable,
    BadResponse,
    IncompleteFeed,
    ListingNotFound,
    OutcomeUnknown,
    RateLimited,
    Unauthorized,
)
from app.services.backmarket.listing import (
    ENDPOINT_GET_LISTING,
    ENDPOINT_LIST_LISTINGS,
    ENDPOINT_UPDATE_LISTING,
    LISTINGS_PATH,
    Listing,
    ListingPage,
    listing_from_api,
)
from app.services.backmarket.orders import ENDPOINT_LIST_ORDERS, Order, OrderLine, OrderPage
from app.services.backmarket.pages import MAX_PAGE_SIZE
from app.services.backmarket.transport import REQUESTS_COUNTER

__all__ = [
    "ENDPOINT_GET_LISTING",
    "ENDPOINT_LIST_LISTINGS",
    "ENDPOINT_LIST_ORDERS",
    "ENDPOINT_UPDATE_LISTING",
    "LISTINGS_PATH",
    "MAX_PAGE_SIZE",
    "REQUESTS_COUNTER",
    "BackMarketClient",
    "BackMarketError",
    "BackMarketUnavailable",
    "BadResponse",
    "CallKind",
    "IncompleteFeed",
    "Listing",
    "ListingNotFound",
    "ListingPage",
    "Order",
    "OrderLine",
    "OrderPage",
    "OutcomeUnknown",
    "RateLimited",
    "Unauthorized",
    "listing_from_api",
]
