"""Refurbed merchant API adapter: one Refurbed account behind the `Marketplace` interface.

Modules, one job each:

* `client`: `RefurbedMarketplace`, the operations callers make, and
  `build_refurbed_marketplace`, the factory the wiring calls.
* `feeds`: ListOffers and ListOrders read to their end with the id cursor.
* `offers`: an `Offer` read into a neutral `Listing`; `OfferIdentifier`; a ListOffers page.
* `orders`: an `Order`'s items read into neutral order lines (one item, one unit).
* `transport`: one call with retries, the rate-limit headers and the 429 pause.
* `answers`: what an answer means (`Status` bodies, google.rpc codes -> typed errors).
* `methods`: the RPC methods called and the document's limits (100 a page, 50 a batch).

Only a 2xx with the expected JSON shape is success; anything else is a typed error of
`app.services.marketplace.errors`, never an empty page or "no change". The token is sent only in
`Authorization: Plain <token>` and is scrubbed from every message.
"""

from app.services.refurbed.client import (
    DEFAULT_BASE_URL,
    OfferResult,
    RefurbedMarketplace,
    build_refurbed_marketplace,
)
from app.services.refurbed.feeds import OFFERS_FEED
from app.services.refurbed.methods import (
    BATCH_GET_OFFERS,
    GET_OFFER,
    LIST_OFFERS,
    LIST_ORDERS,
    MAX_BATCH_SIZE,
    MAX_PAGE_SIZE,
    UPDATE_OFFER,
    RpcMethod,
)
from app.services.refurbed.transport import REQUESTS_COUNTER

__all__ = [
    "BATCH_GET_OFFERS",
    "DEFAULT_BASE_URL",
    "GET_OFFER",
    "LIST_OFFERS",
    "LIST_ORDERS",
    "MAX_BATCH_SIZE",
    "MAX_PAGE_SIZE",
    "OFFERS_FEED",
    "REQUESTS_COUNTER",
    "UPDATE_OFFER",
    "OfferResult",
    "RefurbedMarketplace",
    "RpcMethod",
    "build_refurbed_marketplace",
]
