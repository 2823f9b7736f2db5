"""OrderService/ListOrders: released orders, cursor pages, filtered by released_at and more."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from simulator.refurbed import messages
from simulator.refurbed.offers_api import StateDep, body_of, require_plain_token

router = APIRouter(
    prefix="/refb.merchant.v1.OrderService", dependencies=[Depends(require_plain_token)]
)


@router.post("/ListOrders")
async def list_orders(request: Request, state: StateDep) -> JSONResponse:
    body = await body_of(request)
    page = messages.pagination(body)
    orders, has_more = state.orders_page(
        matches=messages.order_filter(body),
        limit=page.limit,
        starting_after=page.starting_after,
        ending_before=page.ending_before,
        descending=messages.descending(body, sort_by=messages.ORDER_SORT_BY_ENUM),
    )
    return JSONResponse({"orders": orders, "has_more": has_more})
