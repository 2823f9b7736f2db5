"""FastAPI dependencies: the process's container, the use cases' context and the API-key check."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from app.services.context import ServiceContext
from app.wiring import Container


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


def get_context(container: ContainerDep) -> ServiceContext:
    return container.ctx


ContextDep = Annotated[ServiceContext, Depends(get_context)]


def require_api_key(request: Request, container: ContainerDep) -> None:
    """When API_KEYS is set, a request needs `Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    keys = container.settings.api_keys
    if not keys:
        return
    presented = request.headers.get("x-api-key")
    authorization = request.headers.get("authorization", "")
    if presented is None and authorization.lower().startswith("bearer "):
        presented = authorization[7:].strip()
    if presented and any(secrets.compare_digest(presented, key) for key in keys):
        return
    raise HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="missing or invalid API key (send 'Authorization: Bearer <key>' or 'X-API-Key: <key>')",
        headers={"WWW-Authenticate": "Bearer"},
    )


def require_json_body(request: Request) -> None:
    """A request that carries a body must say it is JSON (422, a bad body, with what to send).

    FastAPI only parses bodies labelled as JSON (which keeps browsers from posting to this
    API without a CORS preflight); without this check the caller would get a puzzling 422.
    """
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in (
        request.headers
    )
    if not has_body:
        return
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        return
    raise HTTPException(
        status_code=422,
        detail=f"the request body must be JSON: send 'Content-Type: application/json' "
        f"(got {media_type or 'no Content-Type'})",
    )
