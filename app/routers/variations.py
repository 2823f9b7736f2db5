"""GET /variations/{id}/quantity and POST /variations/{id}/add-quantity: HTTP only.

The logic lives in app.services.quantity; domain errors become HTTP answers in app.errors.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from app.deps import ServicesDep, require_json_body
from app.services.quantity import AddResult, Quantity, add_quantity, refresh_quantity

router = APIRouter(prefix="/variations", tags=["variations"])


class AddQuantityBody(BaseModel):
    """`{"quantity": n}`: a non-zero integer; its bound (ADD_QUANTITY_LIMIT) is the service's."""

    model_config = ConfigDict(extra="forbid")

    # Strict: "5", 5.0 and true are refused rather than guessed at.
    quantity: StrictInt = Field(description="units to add (negative removes); never zero")

    @field_validator("quantity")
    @classmethod
    def _not_zero(cls, quantity: int) -> int:
        if quantity == 0:
            raise ValueError("quantity must not be zero")
        return quantity


MarketplaceQuery = Annotated[int, Query(description="marketplace.id; only 1 has a live client")]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    described = {
        404: "unknown variation",
        409: "conflict (see detail and reason)",
        422: "invalid request",
        429: "update budget spent or Back Market rate limiting; see Retry-After",
        502: "Back Market failed; nothing recorded as applied",
        504: "update sent without answer; previous_quantity and target_quantity given",
    }
    return {status: {"description": described[status]} for status in statuses}


@router.get("/{variation_id}/quantity", responses=_errors(404, 409, 422))
async def get_quantity(
    variation_id: int,
    services: ServicesDep,
    marketplace_id: MarketplaceQuery = 1,
    refresh: Annotated[bool, Query(description="read Back Market live first")] = True,
) -> Quantity:
    return await refresh_quantity(
        engine=services.engine,
        client=services.backmarket,
        settings=services.settings,
        locks=services.locks,
        variation_id=variation_id,
        marketplace_id=marketplace_id,
        refresh=refresh,
    )


@router.post(
    "/{variation_id}/add-quantity",
    responses=_errors(404, 409, 422, 429, 502, 504),
    dependencies=[Depends(require_json_body)],
)
async def post_add_quantity(
    variation_id: int,
    body: AddQuantityBody,
    services: ServicesDep,
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
        engine=services.engine,
        client=services.backmarket,
        settings=services.settings,
        locks=services.locks,
        variation_id=variation_id,
        quantity=body.quantity,
        marketplace_id=marketplace_id,
        idempotency_key=idempotency_key,
    )
