"""The status page: `GET /` (HTML, server-rendered), its start-a-sync form, the variation
look-up's set-quantity form and, when API_KEYS is set, its login and logout. None of it is part
of the JSON API's schema.

The browser proves who it is with a cookie holding an API key (set by the login form; HttpOnly,
SameSite=Strict, Secure over https). That cookie is accepted here only: the JSON API keeps
requiring the key in a header. Every form carries a CSRF token that must equal the token
cookie (double submit); the token needs no server secret, so it holds across workers.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import SQLAlchemyError

from app.config import FIRST_MARKETPLACE_ID
from app.deps import ContainerDep
from app.errors import Conflict, DomainError, InvalidRequest
from app.http_limits import INT_MAX
from app.models import RunTrigger
from app.routers import page_format
from app.services.marketplaces import SyncDisabled
from app.services.quantity import set_quantity
from app.services.status_page import read_status_page
from app.services.sync import SyncOptions

router = APIRouter(include_in_schema=False)
logger = logging.getLogger(__name__)

KEY_COOKIE = "stock_sync_key"
CSRF_COOKIE = "stock_sync_csrf"
CSRF_FIELD = "csrf_token"
# The page reloads itself this often while a run is going on.
REFRESH_SECONDS = 2

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent.parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_environment.filters.update(
    when=page_format.when, seconds=page_format.seconds, number=page_format.number
)
templates = Jinja2Templates(env=_environment)

# The page has no script, frames nothing and is framed by nothing; forms post only to itself.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@router.get("/", response_class=HTMLResponse)
async def status_page(request: Request, container: ContainerDep) -> Response:
    if not _signed_in(request, container.settings.api_keys):
        return _login_page(request, message=None)
    lookup = request.query_params.get("variation", "").strip()
    variation_id = _positive_int(lookup)
    try:
        page = await read_status_page(
            container.ctx,
            watchers=container.watchers,
            schedules={
                marketplace_id: scheduler.info()
                for marketplace_id, scheduler in container.schedulers.items()
            },
            variation_id=variation_id,
        )
    except SQLAlchemyError as exc:
        # What an operator opens when something is wrong: say so rather than answer a bare 500.
        logger.warning("status page: the database does not answer: %s", exc)
        return _render(
            request,
            "message.html",
            {
                "title": "Database unreachable",
                "message": "The service cannot read its database "
                f"({type(exc).__name__}); /readyz says why. Reload this page in a moment.",
            },
            status_code=503,
        )
    refresh_url = "/?" + urlencode({"variation": lookup}) if lookup else "/"
    return _render(
        request,
        "status.html",
        {
            "page": page,
            "lookup": lookup,
            "lookup_invalid": bool(lookup) and variation_id is None,
            "notice": _notice(request) or _set_notice(request),
            "live_quantities": _live_quantities(request),
            "refresh_seconds": REFRESH_SECONDS if page.syncing else None,
            "refresh_url": refresh_url,
            "login_required": bool(container.settings.api_keys),
            "now": datetime.now(UTC),
        },
    )


@router.post("/status/sync")
async def start_sync_from_page(request: Request, container: ContainerDep) -> Response:
    """Start a bulk sync of the form's marketplace (`marketplace_id`, 1 when absent) in the
    background, then back to the page."""
    form = await _form(request)
    if not _signed_in(request, container.settings.api_keys):
        return _login_page(request, message="Sign in first.")
    if not _csrf_ok(request, form):
        return _csrf_refused(request)
    marketplace_id = _positive_int(form.get("marketplace_id", str(FIRST_MARKETPLACE_ID)))
    if marketplace_id is None or marketplace_id not in container.ctx.marketplaces:
        return _see_other("/?" + urlencode({"unknown": form.get("marketplace_id", "")[:20]}))
    options = SyncOptions(marketplace_id=marketplace_id, trigger=RunTrigger.API)
    try:
        started, _task = await container.runner.start(options)
    except SyncDisabled:
        return _see_other("/?" + urlencode({"disabled": marketplace_id}))
    except Conflict as busy:
        return _see_other("/?" + urlencode({"busy": busy.extra.get("run_id", "")}))
    except InvalidRequest:
        return _see_other("/?" + urlencode({"unknown": marketplace_id}))
    return _see_other("/?" + urlencode({"started": started.id}))


@router.post("/status/set-quantity")
async def set_quantity_from_page(request: Request, container: ContainerDep) -> Response:
    """Set one marketplace's quantity of the looked-up variation, expecting the quantity the page
    showed (so a stale one is refused with the live quantity), then back to the look-up."""
    form = await _form(request)
    if not _signed_in(request, container.settings.api_keys):
        return _login_page(request, message="Sign in first.")
    if not _csrf_ok(request, form):
        return _csrf_refused(request)
    variation_id = _positive_int(form.get("variation_id", ""))
    marketplace_id = _positive_int(form.get("marketplace_id", ""))
    quantity = _whole_number(form.get("quantity", "").strip())
    expected = _whole_number(form.get("expected_quantity", ""))
    if variation_id is None or marketplace_id is None:
        return _see_other("/")
    back = {"variation": variation_id, "marketplace": marketplace_id}
    if quantity is None or expected is None:
        return _see_other("/?" + urlencode({**back, "set": "invalid"}))
    try:
        result = await set_quantity(
            container.ctx,
            variation_id=variation_id,
            quantity=quantity,
            expected_quantity=expected,
            marketplace_id=marketplace_id,
        )
    except DomainError as refused:
        outcome = str(refused.extra.get("reason") or "")
        details = {"live": refused.extra.get("live_quantity", "")}
        return _see_other("/?" + urlencode({**back, "set": outcome or "refused", **details}))
    applied = {
        "set": "applied",
        "previous": result.previous_quantity,
        "quantity": result.quantity,
        "sold": result.sales_during_update,
    }
    return _see_other("/?" + urlencode({**back, **applied}))


@router.post("/login")
async def login(request: Request, container: ContainerDep) -> Response:
    if not container.settings.api_keys:
        return _see_other("/")
    form = await _form(request)
    if not _csrf_ok(request, form):
        return _csrf_refused(request)
    presented = form.get("api_key", "")
    if not _valid_key(presented, container.settings.api_keys):
        return _login_page(request, message="That key is not valid.")
    response = _see_other("/")
    response.set_cookie(KEY_COOKIE, presented, **_cookie_flags(request))
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await _form(request)
    if not _csrf_ok(request, form):
        return _csrf_refused(request)
    response = _see_other("/")
    response.delete_cookie(KEY_COOKIE, **_cookie_flags(request))
    return response


# --- sign-in and CSRF ------------------------------------------------------------------------


def _cookie_flags(request: Request) -> dict[str, Any]:
    """Every cookie of the page: unreadable by scripts, never sent cross-site, https-only
    when the page is served over https."""
    return {
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
        "path": "/",
    }


def _valid_key(presented: str, keys: list[str]) -> bool:
    # Every key compared, each in constant time, as the API's header check does.
    return bool(presented) and any(
        [secrets.compare_digest(presented.encode(), key.encode()) for key in keys]
    )


def _signed_in(request: Request, keys: list[str]) -> bool:
    return not keys or _valid_key(request.cookies.get(KEY_COOKIE, ""), keys)


def _csrf_token(request: Request) -> str:
    """The browser's token (its cookie), or a new one that `_render` sets as the cookie."""
    token = request.cookies.get(CSRF_COOKIE, "")
    if len(token) < 32:
        token = getattr(request.state, "new_csrf_token", None) or secrets.token_urlsafe(32)
        request.state.new_csrf_token = token
    return token


def _csrf_ok(request: Request, form: dict[str, str]) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = form.get(CSRF_FIELD, "")
    return len(cookie) >= 32 and secrets.compare_digest(cookie.encode(), sent.encode())


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body (the app installs no multipart parser); the last value wins."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        return {}
    body = (await request.body()).decode("utf-8", errors="replace")
    return {name: values[-1] for name, values in parse_qs(body).items()}


# --- answers -----------------------------------------------------------------------------------


def _render(
    request: Request, template: str, context: dict[str, Any], *, status_code: int = 200
) -> Response:
    context = {**context, "csrf_field": CSRF_FIELD, "csrf_token": _csrf_token(request)}
    response = templates.TemplateResponse(
        request, template, context, status_code=status_code, headers=SECURITY_HEADERS
    )
    new_token = getattr(request.state, "new_csrf_token", None)
    if new_token is not None:
        response.set_cookie(CSRF_COOKIE, new_token, **_cookie_flags(request))
    return response


def _login_page(request: Request, *, message: str | None) -> Response:
    return _render(request, "login.html", {"message": message}, status_code=401)


def _csrf_refused(request: Request) -> Response:
    return _render(
        request,
        "message.html",
        {
            "title": "Form refused",
            "message": "The form's security token is missing or does not match this browser's. "
            "Reload the page and try again.",
        },
        status_code=403,
    )


def _see_other(url: str) -> Response:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def _whole_number(text: str) -> int | None:
    """0..INT_MAX written in digits, else None."""
    if not text.isascii() or not text.isdigit():
        return None
    number = int(text)
    return number if number <= INT_MAX else None


def _positive_int(text: str) -> int | None:
    if not text.isascii() or not text.isdigit():
        return None
    number = int(text)
    return number if 1 <= number <= INT_MAX else None


def _notice(request: Request) -> tuple[str, str] | None:
    """The outcome of the start form, named by the redirect's query (never free text)."""
    started = _positive_int(request.query_params.get("started", ""))
    if started is not None:
        return ("ok", f"Bulk sync run {started} started.")
    if "busy" in request.query_params:
        running = _positive_int(request.query_params.get("busy", ""))
        which = f" (run {running})" if running is not None else ""
        return ("warn", f"A bulk sync is already running{which}; no new run was started.")
    if "disabled" in request.query_params:
        disabled = _positive_int(request.query_params.get("disabled", ""))
        return (
            "warn",
            f"Bulk sync of marketplace {disabled} is turned off (sync_enabled = 0); "
            "no run was started.",
        )
    if "unknown" in request.query_params:
        return ("warn", "That marketplace is not configured here; no run was started.")
    return None


# What the set form's redirect names (never free text): its outcome, by refusal reason.
_SET_REFUSALS = {
    "invalid": "The quantity must be a whole number from 0; nothing was sent.",
    "outcome_unknown": "The update was sent but got no answer: it may or may not have been "
    "applied. Look the variation up again before trying once more.",
    "update_budget_spent": "The hourly update budget is spent; nothing was sent.",
    "backmarket_rate_limited": "The marketplace is rate limiting; nothing was sent.",
    "busy": "Another change of this variation is running; nothing was sent, try again.",
    "lock_lost": "The variation's lock was lost; nothing was sent, try again.",
    "listing_not_found": "The marketplace does not know this listing; nothing was sent.",
    "backmarket_failed": "The marketplace failed; nothing was recorded as applied.",
    "no_reference": "This variation has no listing reference; nothing was sent.",
}


def _set_notice(request: Request) -> tuple[str, str] | None:
    """The outcome of the set form, from the redirect's query."""
    outcome = request.query_params.get("set")
    if outcome is None:
        return None
    marketplace = _positive_int(request.query_params.get("marketplace", "")) or "?"
    if outcome == "applied":
        quantity = _whole_number(request.query_params.get("quantity", ""))
        previous = _whole_number(request.query_params.get("previous", ""))
        sold = _whole_number(request.query_params.get("sold", "")) or 0
        text = f"Marketplace {marketplace}: quantity set, {previous} → {quantity}."
        if sold:
            text += f" {sold} unit(s) sold during the update were subtracted again."
        return ("ok", text)
    if outcome == "quantity_changed":
        live = next(iter(_live_quantities(request).values()), "?")
        return (
            "warn",
            f"Marketplace {marketplace} holds {live} now, not the quantity shown: the stock moved, "
            "and nothing was sent. The form below expects the live quantity; decide again.",
        )
    text = _SET_REFUSALS.get(outcome, "The marketplace refused the quantity; nothing was sent.")
    return ("warn", f"Marketplace {marketplace}: {text}")


def _live_quantities(request: Request) -> dict[int, int]:
    """marketplace id -> the live quantity a refused set answered: the set form of that
    marketplace expects it (the stored row, shown beside it, is older)."""
    if request.query_params.get("set") != "quantity_changed":
        return {}
    marketplace = _positive_int(request.query_params.get("marketplace", ""))
    live = _whole_number(request.query_params.get("live", ""))
    return {} if marketplace is None or live is None else {marketplace: live}
