"""OfferService: the offer RPCs the stock service uses, as the Swagger document defines them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from simulator.refurbed import messages
from simulator.refurbed.config import MAX_BATCH_ENTRIES
from simulator.refurbed.messages import OfferKey
from simulator.refurbed.responses import Code, RpcError, status_body
from simulator.refurbed.state import RefurbedSimulatorState
from simulator.refurbed.store import render_offer

# UpdateOfferRequest fields besides the identifier; only stock is simulated.
_UNSIMULATED_UPDATE_FIELDS = (
    "grading",
    "warranty",
    "shipping_profile_id",
    "secondary_shipping_profile_id",
    "delete_secondary_shipping_profile_id",
    "taxation",
    "reference_currency_code",
    "reference_price",
    "reference_min_price",
    "delete_reference_min_price",
)


def get_state(request: Request) -> RefurbedSimulatorState:
    state: RefurbedSimulatorState = request.app.state.sim
    return state


StateDep = Annotated[RefurbedSimulatorState, Depends(get_state)]


def require_plain_token(request: Request, state: StateDep) -> None:
    """``Authorization: Plain <token>``; Basic and Bearer are refused like a wrong token."""
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme != "Plain" or token.strip() != state.config.token:
        raise RpcError(Code.UNAUTHENTICATED, "authorization header is missing or invalid")


router = APIRouter(
    prefix="/refb.merchant.v1.OfferService", dependencies=[Depends(require_plain_token)]
)


async def body_of(request: Request) -> dict[str, Any]:
    return messages.parse_body(await request.body())


def _find(state: RefurbedSimulatorState, key: OfferKey) -> dict[str, Any]:
    offer = state.find_offer(id=key.id, sku=key.sku)
    if offer is None:
        raise RpcError(Code.NOT_FOUND, f"offer with {key.describe()} not found")
    return render_offer(offer)


def _stock_change(update: dict[str, Any]) -> int | None:
    for name in _UNSIMULATED_UPDATE_FIELDS:
        if update.get(name) not in (None, False):
            raise RpcError(Code.UNIMPLEMENTED, f"{name}: only stock updates are simulated")
    return messages.optional(update, "stock", messages.uint32)


def _apply_update(
    state: RefurbedSimulatorState, update: dict[str, Any], *, rpc: str
) -> dict[str, Any]:
    """Set one offer's stock as asked; the offer after it (RpcError otherwise, recorded)."""
    try:
        key = messages.offer_key(update)
    except RpcError as refused:
        state.record_update(rpc=rpc, identifier={}, stock=None, code=refused.code)
        raise
    try:
        stock = _stock_change(update)
        if stock is None:
            # Nothing to change: the offer as it is.
            updated = _find(state, key)
        else:
            found = state.update_stock(id=key.id, sku=key.sku, stock=stock)
            if found is None:
                raise RpcError(Code.NOT_FOUND, f"offer with {key.describe()} not found")
            updated = found
    except RpcError as refused:
        state.record_update(
            rpc=rpc, identifier=key.as_json(), stock=update.get("stock"), code=refused.code
        )
        raise
    state.record_update(rpc=rpc, identifier=key.as_json(), stock=stock, code=Code.OK)
    return updated


@router.post("/ListOffers")
async def list_offers(request: Request, state: StateDep) -> JSONResponse:
    body = await body_of(request)
    page = messages.pagination(body)
    offers, has_more = state.offers_page(
        matches=messages.offer_filter(body),
        limit=page.limit,
        starting_after=page.starting_after,
        ending_before=page.ending_before,
        descending=messages.descending(body, sort_by=messages.OFFER_SORT_BY_ENUM),
    )
    return JSONResponse({"offers": offers, "has_more": has_more})


@router.post("/GetOffer")
async def get_offer(request: Request, state: StateDep) -> JSONResponse:
    key = messages.offer_key(await body_of(request))
    return JSONResponse({"offer": _find(state, key)})


@router.post("/BatchGetOffers")
async def batch_get_offers(request: Request, state: StateDep) -> JSONResponse:
    entries = messages.batch_entries(await body_of(request), limit=MAX_BATCH_ENTRIES)
    results = []
    for entry in entries:
        try:
            offer = _find(state, messages.offer_key(entry))
        except RpcError as failed:
            results.append({"status": status_body(failed.code, failed.message)})
        else:
            results.append({"status": status_body(Code.OK), "offer": offer})
    return JSONResponse({"results": results})


@router.post("/UpdateOffer")
async def update_offer(request: Request, state: StateDep) -> JSONResponse:
    updated = _apply_update(state, await body_of(request), rpc="OfferService/UpdateOffer")
    return JSONResponse({"offer": updated})


@router.post("/BatchUpdateOffers")
async def batch_update_offers(request: Request, state: StateDep) -> JSONResponse:
    """Each entry applied or refused on its own, results in request order."""
    entries = messages.batch_entries(await body_of(request), limit=MAX_BATCH_ENTRIES)
    results = []
    for entry in entries:
        try:
            updated = _apply_update(state, entry, rpc="OfferService/BatchUpdateOffers")
        except RpcError as failed:
            results.append({"status": status_body(failed.code, failed.message)})
        else:
            results.append({"status": status_body(Code.OK), "offer": updated})
    return JSONResponse({"results": results})
