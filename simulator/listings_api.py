"""The Back Market origin: /ws/listings endpoints as the OpenAPI file describes them."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal
from urllib import parse

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from simulator.config import currency_of
from simulator.edge import admission_of
from simulator.state import InvalidPageError, SimulatorState
from simulator.store import PUBLICATION_STATES, InvalidUpdate, ListingUpdate, parse_uuid


class BackMarketError(Exception):
    """Answered as ErrorResponseV1 by the handler registered in app.py."""

    def __init__(self, status: int, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class UpdateRejected(Exception):
    """A 400 on POST /ws/listings/{id}, whose body style is configurable."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def get_state(request: Request) -> SimulatorState:
    state: SimulatorState = request.app.state.sim
    return state


StateDep = Annotated[SimulatorState, Depends(get_state)]


def require_token(request: Request, state: StateDep) -> None:
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "basic" or token.strip() != state.config.token:
        raise BackMarketError(401, "Authentication credentials were not provided or are invalid.")


def market_of(request: Request, state: StateDep) -> str:
    """The market picked by Accept-Language; the first tag counts, case-insensitively."""
    raw = request.headers.get("accept-language", "").strip()
    if not raw:
        return state.config.default_market
    market = raw.split(",")[0].split(";")[0].strip().lower()
    if market not in state.config.markets:
        raise BackMarketError(400, f"Unsupported Accept-Language {raw!r}.", code="invalid_language")
    return market


MarketDep = Annotated[str, Depends(market_of)]

router = APIRouter(prefix="/ws", dependencies=[Depends(require_token)])


def optional_int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise BackMarketError(400, f"{name}: a valid integer is required.") from None


def page_size_of(request: Request, state: SimulatorState) -> int:
    # Like DRF: a missing or bad page-size means the default; too big is capped.
    # Only the hyphenated name counts; page_size is ignored.
    raw = request.query_params.get("page-size", "")
    try:
        requested = int(raw)
    except ValueError:
        return state.config.default_page_size
    if requested < 1:
        return state.config.default_page_size
    return min(requested, state.config.max_page_size)


def page_number_of(request: Request) -> int | Literal["last"]:
    raw = request.query_params.get("page", "1")
    if raw == "last":
        return "last"
    try:
        return int(raw)
    except ValueError:
        raise BackMarketError(404, "Invalid page.") from None


def page_link(request: Request, state: SimulatorState, number: int) -> str:
    """DRF's replace_query_param / remove_query_param on the absolute request URL."""
    scheme, netloc, path, query, fragment = parse.urlsplit(str(request.url))
    if state.config.public_base_url:
        public = parse.urlsplit(state.config.public_base_url)
        scheme, netloc = public.scheme, public.netloc
    params = parse.parse_qs(query, keep_blank_values=True)
    if number == 1:
        params.pop("page", None)
    else:
        params["page"] = [str(number)]
    query = parse.urlencode(sorted(params.items()), doseq=True)
    return parse.urlunsplit((scheme, netloc, path, query, fragment))


def paged_answer(
    request: Request,
    state: SimulatorState,
    *,
    count: int,
    number: int,
    page_size: int,
    results: list[dict[str, Any]],
) -> JSONResponse:
    """DRF's page envelope: {count, next, previous, results}, links absolute."""
    has_next = number * page_size < count
    return JSONResponse(
        {
            "count": count,
            "next": page_link(request, state, number + 1) if has_next else None,
            "previous": page_link(request, state, number - 1) if number > 1 else None,
            "results": results,
        }
    )


@router.get("/listings")
async def list_listings(request: Request, state: StateDep, market: MarketDep) -> JSONResponse:
    publication_state = optional_int(request, "publication_state")
    if publication_state is not None and publication_state not in PUBLICATION_STATES:
        raise BackMarketError(400, f"publication_state: {publication_state} is not a valid choice.")
    page_size = page_size_of(request, state)
    try:
        count, number, results = state.read_page(
            market,
            page=page_number_of(request),
            page_size=page_size,
            publication_state=publication_state,
            min_quantity=optional_int(request, "min_quantity"),
            max_quantity=optional_int(request, "max_quantity"),
        )
    except InvalidPageError:
        raise BackMarketError(404, "Invalid page.") from None
    admission = admission_of(request.scope)
    if admission is not None and admission.fault == "truncate":
        # The failure the seed app read as "no more listings": a short page mid-way.
        results = results[: len(results) // 2]
    return paged_answer(
        request, state, count=count, number=number, page_size=page_size, results=results
    )


def _single(listing: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse({**listing, "statuscode": status}, status_code=status)


def _not_found() -> BackMarketError:
    return BackMarketError(404, "Listing not found.")


@router.get("/listings/detail")
async def listing_detail(request: Request, state: StateDep, market: MarketDep) -> JSONResponse:
    sku = request.query_params.get("sku") or None
    listing_id = optional_int(request, "listing_id")
    listing_uuid = request.query_params.get("id") or None
    if listing_uuid is not None and parse_uuid(listing_uuid) is None:
        raise BackMarketError(400, "id: must be a valid UUID.")
    if sku is None and listing_id is None and listing_uuid is None:
        raise BackMarketError(400, "One of sku, listing_id or id is required.")
    listing = state.read_listing(market, id=listing_uuid, listing_id=listing_id, sku=sku)
    if listing is None:
        raise _not_found()
    return _single(listing)


def _path_criteria(listing_ref: str) -> dict[str, Any]:
    """The path names a listing by UUID (preferred) or by deprecated integer id."""
    if listing_ref.isdigit():
        return {"listing_id": int(listing_ref)}
    if parse_uuid(listing_ref) is not None:
        return {"id": listing_ref}
    raise BackMarketError(400, "listingId must be a UUID or an integer.")


@router.get("/listings/{listing_ref}")
async def get_listing(listing_ref: str, state: StateDep, market: MarketDep) -> JSONResponse:
    listing = state.read_listing(market, **_path_criteria(listing_ref))
    if listing is None:
        raise _not_found()
    return _single(listing)


@router.post("/listings/{listing_ref}")
async def update_listing(
    listing_ref: str, request: Request, state: StateDep, market: MarketDep
) -> JSONResponse:
    criteria = _path_criteria(listing_ref)
    index = state.lookup_index(**criteria)
    raw = await request.body()
    malformed = False
    try:
        body: object = json.loads(raw) if raw.strip() else {}
    except ValueError:
        body, malformed = raw.decode(errors="replace"), True
    if index is None:
        state.record_update(listing_ref, index=None, quantity=None, body=body, status=404)
        raise _not_found()
    try:
        if malformed:
            raise InvalidUpdate("request body is not valid JSON")
        update = ListingUpdate.from_body(body, currency=currency_of(market))
    except InvalidUpdate as rejected:
        state.record_update(listing_ref, index=index, quantity=None, body=body, status=400)
        raise UpdateRejected(str(rejected)) from None
    updated = state.update_listing(market, update, **criteria)
    if updated is None:
        # Removed between the lookup and the update.
        raise _not_found()
    status = state.config.update_status_code
    state.record_update(
        listing_ref, index=index, quantity=update.quantity, body=body, status=status
    )
    return _single(updated, status)
