"""GET /variations/{id}/quantity, GET /variations/quantities, POST /variations/{id}/add-quantity
and PUT /variations/{id}/quantity: HTTP only.

The logic lives in app.services.quantity; domain errors become HTTP answers in app.errors.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from app.deps import ContextDep, require_json_body
from app.errors import error_responses
from app.http_limits import INT_MAX, MAX_BODY_BYTES, MarketplaceId, VariationId
from app.services.quantity import (
    MAX_BATCH_IDS,
    AddResult,
    Quantities,
    Quantity,
    SetResult,
    add_quantity,
    parse_variation_ids,
    read_quantities,
    refresh_quantity,
    set_quantity,
)

router = APIRouter(prefix="/variations", tags=["variations"])


def whole_number(value: object) -> object:
    """A float holding a whole number as that integer; anything else as it came."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class AddQuantityBody(BaseModel):
    """`{"quantity": n}`: a non-zero integer; its bound (ADD_QUANTITY_LIMIT) is the service's."""

    model_config = ConfigDict(extra="forbid")

    # Strict: "5", 2.5 and true are refused rather than guessed at. 5.0 is the number 5 (JSON has
    # one number type, and the document's `integer` admits it), so it is taken as 5.
    quantity: StrictInt = Field(description="units to add (negative removes); never zero")

    @field_validator("quantity", mode="before")
    @classmethod
    def _whole_number(cls, quantity: object) -> object:
        return whole_number(quantity)

    @field_validator("quantity")
    @classmethod
    def _not_zero(cls, quantity: int) -> int:
        if quantity == 0:
            raise ValueError("quantity must not be zero")
        return quantity


class SetQuantityBody(BaseModel):
    """`{"quantity": n, "expected_quantity": m}`: integers from 0; the quantity's bound
    (ADD_QUANTITY_LIMIT) is the service's."""

    model_config = ConfigDict(extra="forbid")

    quantity: StrictInt = Field(ge=0, le=INT_MAX, description="the quantity the listing must hold")
    expected_quantity: StrictInt | None = Field(
        default=None,
        ge=0,
        le=INT_MAX,
        description=(
            "the quantity the caller saw: when the marketplace's live quantity differs, nothing "
            "is sent and 409 quantity_changed answers the live one"
        ),
    )

    # Strict as an addition's quantity: 5.0 is 5, "5", 2.5 and true are refused.
    @field_validator("quantity", "expected_quantity", mode="before")
    @classmethod
    def _whole_number(cls, quantity: object) -> object:
        return whole_number(quantity)


MarketplaceQuery = Annotated[
    MarketplaceId, Query(description="marketplace.id; only 1 has a live client")
]
VariationPath = Annotated[VariationId, Path(description="variation.id", examples=[1])]

# The longest max_age accepted: a day.
MAX_AGE_LIMIT_SECONDS = 86_400


_DESCRIBED = {
    404: "unknown variation",
    409: "conflict (see detail and reason)",
    413: f"a body larger than {MAX_BODY_BYTES} bytes",
    422: (
        f"invalid request: an id or marketplace_id outside 1..{INT_MAX}, an unknown "
        "marketplace, or (add-quantity, set) a body that is not UTF-8 JSON of this shape"
    ),
    429: "update budget spent or Back Market rate limiting; see Retry-After",
    502: "Back Market failed; nothing recorded as applied",
    503: "nothing was sent: the update budget's lock was busy or the variation's lock was lost",
    504: "update sent without answer; previous_quantity and target_quantity given",
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return error_responses({status: _DESCRIBED[status] for status in statuses})


# One variation id, 1..INT_MAX, digit by digit: the range `parse_variation_ids` checks.
_VARIATION_ID = (
    "(?:[1-9][0-9]{0,8}|1[0-9]{9}|20[0-9]{8}|21[0-3][0-9]{7}|214[0-6][0-9]{6}|2147[0-3][0-9]{5}"
    "|21474[0-7][0-9]{4}|214748[0-2][0-9]{3}|2147483[0-5][0-9]{2}|21474836[0-3][0-9]"
    "|214748364[0-7])"
)
IDS_PATTERN = f"^{_VARIATION_ID}(?:,{_VARIATION_ID}){{0,{MAX_BATCH_IDS - 1}}}$"
IDS_MAX_LENGTH = MAX_BATCH_IDS * len(str(INT_MAX)) + MAX_BATCH_IDS - 1


def document_checked_inputs(document: dict[str, Any], *, add_quantity_limit: int) -> dict[str, Any]:
    """State in the OpenAPI document what the service checks itself, so that clients generated
    from it (and the fuzzer) send what is accepted.

    `ids` is parsed by the service, not by FastAPI, so that a bad list gets a message naming
    the bad item; FastAPI documents it as an optional list of any strings. It is required, each
    value a comma-separated list of ids in range. An addition's quantity is a non-zero integer
    within ±ADD_QUANTITY_LIMIT, a setting, which the model's static schema cannot carry; a set's
    quantity is within 0..ADD_QUANTITY_LIMIT likewise.
    """
    body = document["components"]["schemas"]["AddQuantityBody"]["properties"]["quantity"]
    body.update(minimum=-add_quantity_limit, maximum=add_quantity_limit)
    body["not"] = {"const": 0}
    document["components"]["schemas"]["SetQuantityBody"]["properties"]["quantity"].update(
        maximum=add_quantity_limit
    )
    operation = document["paths"]["/variations/quantities"]["get"]
    for parameter in operation["parameters"]:
        if parameter["name"] == "ids":
            parameter["required"] = True
            parameter["style"] = "form"
            parameter["explode"] = True
            parameter["schema"] = {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH_IDS,
                "items": {"type": "string", "pattern": IDS_PATTERN, "maxLength": IDS_MAX_LENGTH},
                "title": "Ids",
                "examples": [["1,2,3"]],
            }
    return document


# Declared before /{variation_id}/quantity so that no path parameter ever shadows it.
@router.get(
    "/quantities",
    responses={
        200: {"description": "the known variations' stored quantities, and the unknown ids"},
        **error_responses(
            {
                422: (
                    f"no ids, more than {MAX_BATCH_IDS} distinct ids, an id that is not an "
                    f"integer in 1..{INT_MAX}, or an unknown marketplace"
                )
            }
        ),
    },
)
async def get_quantities(
    ctx: ContextDep,
    ids: Annotated[
        list[str] | None,
        Query(
            description=(
                f"comma-separated variation ids, at most {MAX_BATCH_IDS} distinct "
                "(duplicates answered once); repeating ids= works too"
            ),
            examples=["1,2,3"],
        ),
    ] = None,
    marketplace_id: MarketplaceQuery = 1,
) -> Quantities:
    """Many variations' stored stock at once, for a listing page: from the database, with no
    Back Market call. `age_seconds` is the time since Back Market last confirmed each one
    (null when never synced). Unknown ids are listed in `unknown_ids`, not a 404."""
    return await read_quantities(
        ctx, variation_ids=parse_variation_ids(ids or []), marketplace_id=marketplace_id
    )


@router.get("/{variation_id}/quantity", responses=_errors(404, 409, 422))
async def get_quantity(
    variation_id: VariationPath,
    ctx: ContextDep,
    marketplace_id: MarketplaceQuery = 1,
    refresh: Annotated[bool, Query(description="read Back Market live first")] = True,
    max_age: Annotated[
        int | None,
        Query(
            ge=0,
            le=MAX_AGE_LIMIT_SECONDS,
            description=(
                "seconds: answer from the database, with no Back Market call, when Back "
                "Market confirmed the stored stock less than this long ago; 0 always reads live"
            ),
        ),
    ] = None,
) -> Quantity:
    return await refresh_quantity(
        ctx,
        variation_id=variation_id,
        marketplace_id=marketplace_id,
        refresh=refresh,
        max_age=max_age,
    )


@router.post(
    "/{variation_id}/add-quantity",
    responses=_errors(404, 409, 413, 422, 429, 502, 503, 504),
    dependencies=[Depends(require_json_body)],
)
async def post_add_quantity(
    variation_id: VariationPath,
    body: AddQuantityBody,
    ctx: ContextDep,
    marketplace_id: MarketplaceQuery = 1,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="repeats with the same key and body answer the first result",
        ),
    ] = None,
) -> AddResult:
    return await add_quantity(
        ctx,
        variation_id=variation_id,
        quantity=body.quantity,
        marketplace_id=marketplace_id,
        idempotency_key=idempotency_key,
    )


@router.put(
    "/{variation_id}/quantity",
    responses=_errors(404, 409, 413, 422, 429, 502, 503, 504),
    dependencies=[Depends(require_json_body)],
)
async def put_quantity(
    variation_id: VariationPath,
    body: SetQuantityBody,
    ctx: ContextDep,
    marketplace_id: MarketplaceQuery = 1,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="repeats with the same key and body answer the first result",
        ),
    ] = None,
) -> SetResult:
    """Set the listing's quantity; with `expected_quantity`, only while the live quantity is
    still that one (409 `quantity_changed` with `live_quantity` otherwise, nothing sent)."""
    return await set_quantity(
        ctx,
        variation_id=variation_id,
        quantity=body.quantity,
        expected_quantity=body.expected_quantity,
        marketplace_id=marketplace_id,
        idempotency_key=idempotency_key,
    )
