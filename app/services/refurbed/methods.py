"""The Refurbed merchant API methods the adapter calls, and the limits the document sets on them.

Every method is an HTTP `POST` of a JSON body to `/<package>.<Service>/<Method>` (the HTTP twin of
the gRPC API), so a method is named by its service and its name, never by a URL template.
"""

from __future__ import annotations

from dataclasses import dataclass

PACKAGE = "refb.merchant.v1"
# ListOffers and ListOrders: "Between 1 and 100. Default and maximum is 100."
MAX_PAGE_SIZE = 100
# BatchGetOffers: "Offers to get. Between 1 and 50."
MAX_BATCH_SIZE = 50


@dataclass(frozen=True, slots=True)
class RpcMethod:
    service: str
    name: str

    @property
    def path(self) -> str:
        """Where the method is posted: `/refb.merchant.v1.OfferService/ListOffers`."""
        return f"/{PACKAGE}.{self.service}/{self.name}"

    @property
    def endpoint(self) -> str:
        """The label of its metrics and errors: `OfferService/ListOffers`."""
        return f"{self.service}/{self.name}"

    def __str__(self) -> str:
        return self.endpoint


LIST_OFFERS = RpcMethod("OfferService", "ListOffers")
GET_OFFER = RpcMethod("OfferService", "GetOffer")
BATCH_GET_OFFERS = RpcMethod("OfferService", "BatchGetOffers")
UPDATE_OFFER = RpcMethod("OfferService", "UpdateOffer")
LIST_ORDERS = RpcMethod("OrderService", "ListOrders")
