"""The status page (`GET /`) and its forms, through the ASGI app: what it shows, its sign-in with
API_KEYS, its CSRF check, its start button and its variation look-up."""

from __future__ import annotations

import asyncio
import html
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app.models import RunTrigger
from app.routers.status_page import CSRF_COOKIE, KEY_COOKIE
from app.services.sync import runs
from tests.api.test_health import running_service, service_settings
from tests.conftest import SECOND_ACCOUNT, TwoAccounts, unreachable_database_url
from tests.sync.support import link, wait_for_run

API_KEY = "page-key-0123456789"
KEYED = {"backmarket_requests_per_10s": 10_000, "backmarket_max_attempts": 2, "api_keys": API_KEY}
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token_of(page: httpx.Response) -> str:
    found = CSRF_INPUT.search(page.text)
    assert found is not None, page.text
    return found.group(1)


async def token(http: httpx.AsyncClient) -> str:
    """Loads the page (which sets the CSRF cookie) and returns the token its forms carry."""
    return csrf_token_of(await http.get("/"))


def form(**fields: str) -> dict[str, Any]:
    return {"data": fields, "headers": {"Content-Type": "application/x-www-form-urlencoded"}}


async def wait_until_finished(service: Any, run_id: int) -> runs.Run:
    """Read from the database: the JSON API may want a key these tests do not send."""
    for _ in range(2000):
        run = await runs.get_run(service.engine, run_id=run_id)
        if run.status != "running":
            return run
        await asyncio.sleep(0.005)
    raise AssertionError(f"run {run_id} still running")


async def run_count(service: Any) -> int:
    return len(await runs.list_runs(service.engine, marketplace_id=None, limit=100))


async def test_page_shows_runs_the_watcher_the_schedule_and_both_budgets(service: Any) -> None:
    await link(service.engine, service.simulator, 0)
    finished = (await service.http.post("/sync/bulk", params={"wait": "true"})).json()["run"]
    await service.app.state.container.watcher.poll()

    page = await service.http.get("/")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    text = page.text
    assert f'<tr id="run-{finished["id"]}">' in text
    assert 'class="status status-completed">completed<' in text
    assert "No bulk sync running." in text
    assert 'id="watcher-last-poll-1">none yet<' not in text
    assert re.search(r'id="watcher-last-poll-1">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC<', text)
    assert "Off (<code>SYNC_INTERVAL_MINUTES=0</code>)" in text
    assert "of 10000 requests used in the last 10 s" in text
    assert "<td>bulk</td>" in text and "<td>live</td>" in text and "<td>watcher</td>" in text
    assert 'id="updates-left-1">2\u202f000<' in text
    # Nothing is running: the page does not reload itself.
    assert 'http-equiv="refresh"' not in text


async def test_a_partial_run_shows_its_errors_escaped(service: Any) -> None:
    async with service.engine.begin() as conn:
        run = await runs.create_run(
            conn, marketplace_id=1, trigger=RunTrigger.API, dry_run=False, markets=["fr-fr"]
        )
        run.status = "partial"
        run.add_error(
            {"kind": "page_failed", "market": "fr-fr", "page": 3, "message": "<b>502</b> twice"}
        )
        await runs.save_run(conn, run=run)

    text = (await service.http.get("/")).text

    assert 'class="status status-partial">partial<' in text
    assert "<strong>page_failed</strong> · fr-fr · page 3: &lt;b&gt;502&lt;/b&gt; twice" in text


async def test_running_run_shows_a_progress_bar_and_reloads_the_page(service: Any) -> None:
    await link(service.engine, service.simulator, 0)
    hold = service.simulator.hold("/ws/listings", page=2)
    started = (await service.http.post("/sync/bulk")).json()["run"]
    await wait_for_run(service, started["id"], until=lambda run: run["pages_expected"] > 0)
    try:
        text = (await service.http.get("/?variation=1")).text
    finally:
        service.simulator.release(hold)
    await wait_for_run(service, started["id"])

    assert re.search(r'<progress id="sync-progress-1" max="3" value="[0-3]">', text)
    assert '<meta http-equiv="refresh" content="2; url=/?variation=1">' in text
    assert "calls used" in text


async def test_start_button_starts_a_run_and_redirects_to_the_page(service: Any) -> None:
    csrf = await token(service.http)

    answer = await service.http.post("/status/sync", **form(csrf_token=csrf))

    assert answer.status_code == 303
    location = answer.headers["location"]
    run_id = int(location.removeprefix("/?started="))
    assert (await wait_for_run(service, run_id))["trigger"] == "api"
    page = await service.http.get(location)
    assert f"Bulk sync run {run_id} started." in page.text


async def test_start_button_while_a_run_is_going_says_so_and_starts_nothing(service: Any) -> None:
    hold = service.simulator.hold("/ws/listings", page=1)
    running = (await service.http.post("/sync/bulk")).json()["run"]["id"]
    try:
        csrf = await token(service.http)
        answer = await service.http.post("/status/sync", **form(csrf_token=csrf))
        page = await service.http.get(answer.headers["location"])
    finally:
        service.simulator.release(hold)
    await wait_for_run(service, running)

    assert answer.status_code == 303
    assert f"A bulk sync is already running (run {running}); no new run was started." in page.text
    assert await run_count(service) == 1


@pytest.mark.parametrize(
    "sent",
    [None, "wrong-token-wrong-token-wrong-token-0000", ""],
    ids=["no-token", "other-token", "empty-token"],
)
async def test_start_form_without_its_csrf_token_is_refused(service: Any, sent: str | None) -> None:
    await token(service.http)
    fields = {} if sent is None else {"csrf_token": sent}

    answer = await service.http.post("/status/sync", **form(**fields))

    assert answer.status_code == 403
    assert "security token" in answer.text
    assert await run_count(service) == 0


async def test_start_form_without_the_csrf_cookie_is_refused(service: Any) -> None:
    csrf = await token(service.http)
    service.http.cookies.clear()

    answer = await service.http.post("/status/sync", **form(csrf_token=csrf))

    assert answer.status_code == 403
    assert await run_count(service) == 0


@pytest.mark.parametrize("settings_overrides", [KEYED], ids=["api-keys"])
async def test_with_api_keys_the_page_asks_for_a_key_once_and_keeps_it_in_a_cookie(
    service: Any,
) -> None:
    first = await service.http.get("/")
    assert first.status_code == 401
    assert 'action="/login"' in first.text
    assert "Recent runs" not in first.text
    csrf = csrf_token_of(first)
    cookie_line = first.headers["set-cookie"]
    assert cookie_line.startswith(f"{CSRF_COOKIE}=")
    assert "HttpOnly" in cookie_line and "SameSite=strict" in cookie_line

    wrong = await service.http.post("/login", **form(csrf_token=csrf, api_key="not-the-key"))
    assert wrong.status_code == 401
    assert "That key is not valid." in wrong.text
    assert KEY_COOKIE not in service.http.cookies

    signed_in = await service.http.post("/login", **form(csrf_token=csrf, api_key=API_KEY))
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/"
    key_cookie = signed_in.headers["set-cookie"]
    assert key_cookie.startswith(f"{KEY_COOKIE}=")
    assert "HttpOnly" in key_cookie and "SameSite=strict" in key_cookie
    # Plain http here; over https the cookie is Secure.
    assert "Secure" not in key_cookie
    assert API_KEY not in signed_in.headers["location"]

    page = await service.http.get("/")
    assert page.status_code == 200
    assert "Recent runs" in page.text and "Sign out" in page.text

    started = await service.http.post("/status/sync", **form(csrf_token=csrf))
    assert started.status_code == 303
    await wait_until_finished(service, int(started.headers["location"].removeprefix("/?started=")))

    signed_out = await service.http.post("/logout", **form(csrf_token=csrf))
    assert signed_out.status_code == 303
    assert KEY_COOKIE not in service.http.cookies
    assert (await service.http.get("/")).status_code == 401


@pytest.mark.parametrize("settings_overrides", [KEYED], ids=["api-keys"])
async def test_the_key_cookie_does_not_authorize_the_json_api(service: Any) -> None:
    csrf = await token(service.http)
    await service.http.post("/login", **form(csrf_token=csrf, api_key=API_KEY))
    assert KEY_COOKIE in service.http.cookies

    assert (await service.http.get("/sync/runs")).status_code == 401
    assert (await service.http.post("/sync/bulk")).status_code == 401
    with_header = await service.http.get("/sync/runs", headers={"X-API-Key": API_KEY})
    assert with_header.status_code == 200


@pytest.mark.parametrize("settings_overrides", [KEYED], ids=["api-keys"])
async def test_with_api_keys_the_start_form_needs_the_key_cookie(service: Any) -> None:
    csrf = await token(service.http)

    answer = await service.http.post("/status/sync", **form(csrf_token=csrf))

    assert answer.status_code == 401
    assert await run_count(service) == 0


@pytest.mark.parametrize("settings_overrides", [KEYED], ids=["api-keys"])
async def test_login_form_without_its_csrf_token_is_refused(service: Any) -> None:
    await token(service.http)

    answer = await service.http.post("/login", **form(api_key=API_KEY))

    assert answer.status_code == 403
    assert KEY_COOKIE not in service.http.cookies


async def test_look_up_shows_the_stock_per_marketplace_and_the_latest_changes(
    service: Any,
) -> None:
    linked = await link(service.engine, service.simulator, 0, listed_stock=9999, locked_stock=2)
    quantity = 7
    service.simulator.set_quantity(linked.listing_uuid, quantity)
    run = (await service.http.post("/sync/bulk", params={"wait": "true"})).json()["run"]

    text = (await service.http.get("/", params={"variation": str(linked.variation_id)})).text

    variation = text[text.index('<div id="variation">') :]
    assert f"Variation <strong>{linked.variation_id}</strong>: SKU {linked.sku}" in variation
    assert (
        f'<td>1 BackMarket</td><td class="n">{quantity}</td><td class="n">2</td>'
        f'<td class="n">{quantity - 2}</td>'
    ) in variation
    history = variation[variation.index('id="variation-history"') :]
    assert "<td>bulk_sync</td>" in history
    assert f"9999 → {quantity}" in history
    assert f"run {run['id']}" in history


def drift_panel(text: str, marketplace_id: int) -> str:
    """The drift panel inside a marketplace's section."""
    section = text[text.index(f'<section class="marketplace" id="marketplace-{marketplace_id}">') :]
    panel = section[section.index(f'<section class="drift" id="drift-{marketplace_id}">') :]
    return panel[: panel.index("</section>")]


async def test_drift_panel_shows_what_the_last_run_of_each_marketplace_found(
    two_accounts: TwoAccounts,
) -> None:
    service = two_accounts.service
    simulator = service.simulator
    higher = await link(service.engine, simulator, 0, listed_stock=30)
    simulator.set_quantity(higher.listing_uuid, 4)
    lower = await link(service.engine, simulator, 1, listed_stock=2)
    simulator.set_quantity(lower.listing_uuid, 5)
    async with service.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE marketplace_stock SET last_synced_at = :at WHERE variation_id = :v"),
            {"at": datetime(2026, 11, 30, 7, 15), "v": lower.variation_id},
        )
        other = await runs.create_run(
            conn,
            marketplace_id=SECOND_ACCOUNT,
            trigger=RunTrigger.CLI,
            dry_run=False,
            markets=["fr-fr"],
        )
        other.status = "completed"
        await runs.save_run(conn, run=other)
    run = (await service.http.post("/sync/bulk", params={"wait": "true"})).json()["run"]

    text = (await service.http.get("/")).text

    back_market = drift_panel(text, 1)
    assert f"Run {run['id']} (completed" in back_market
    assert '<dd class="drift-rows">2 of 2 written</dd>' in back_market
    assert re.search(r'class="drift-higher late">1 \(the database showed more', back_market)
    assert '<dd class="drift-lower">1</dd>' in back_market
    assert '<dd class="drift-units">29</dd>' in back_market
    assert '<dd class="drift-oldest">2026-11-30 07:15:00 UTC</dd>' in back_market
    examples = re.findall(
        r'variation=(\d+)">\d+</a></td><td class="n">(\d+)</td><td class="n">(\d+)</td>'
        r'<td class="n">([+-]\d+)</td>',
        back_market,
    )
    assert examples == [
        (str(higher.variation_id), "30", "4", "+26"),
        (str(lower.variation_id), "2", "5", "-3"),
    ]
    second_account = drift_panel(text, SECOND_ACCOUNT)
    assert f"Run {other.id} (completed" in second_account
    assert "No drift" in second_account


@pytest.mark.parametrize(
    ("asked", "message"),
    [
        ("987654", "No variation 987654."),
        ("abc", "“abc” is not a variation id"),
        ("<script>x</script>", "“&lt;script&gt;x&lt;/script&gt;” is not a variation id"),
        ("99999999999999999999", "is not a variation id"),
    ],
    ids=["unknown", "not-a-number", "markup", "too-large"],
)
async def test_look_up_of_an_unknown_or_invalid_variation_says_so(
    service: Any, asked: str, message: str
) -> None:
    page = await service.http.get("/", params={"variation": asked})

    assert page.status_code == 200
    assert message in page.text
    assert "<script>x" not in page.text
    assert f'value="{html.escape(asked)}"' in page.text


@pytest.mark.parametrize("backend", ["mysql", "sqlite"])
async def test_page_says_the_database_is_unreachable_with_a_503(
    backend: str, tmp_path: Path
) -> None:
    url = unreachable_database_url(backend, tmp_path)

    async with running_service(service_settings(url)) as client:
        page = await client.get("/")

    assert page.status_code == 503
    assert page.headers["content-type"].startswith("text/html")
    assert "Database unreachable" in page.text
    assert "OperationalError" in page.text


SET_FORM = re.compile(
    r'<form class="inline set-quantity".*?name="marketplace_id" value="(\d+)">\s*'
    r'<input type="hidden" name="expected_quantity" value="(\d+)">',
    re.DOTALL,
)


async def look_up(service: Any, variation_id: int) -> httpx.Response:
    return await service.http.get("/", params={"variation": str(variation_id)})


async def submit_set_form(
    service: Any, page: httpx.Response, *, variation_id: int, quantity: int, **fields: str
) -> httpx.Response:
    """The look-up's set form as the browser sends it: the expected quantity the page shows."""
    [(marketplace_id, expected)] = SET_FORM.findall(page.text)
    values = {
        "csrf_token": csrf_token_of(page),
        "variation_id": str(variation_id),
        "marketplace_id": marketplace_id,
        "expected_quantity": expected,
        "quantity": str(quantity),
        **fields,
    }
    return await service.http.post("/status/set-quantity", **form(**values))


async def test_the_look_ups_set_form_expects_the_shown_quantity_and_sets_it(
    service: Any,
) -> None:
    linked = await link(service.engine, service.simulator, 0, listed_stock=4)
    service.simulator.set_quantity(linked.listing_uuid, 4)
    page = await look_up(service, linked.variation_id)
    assert SET_FORM.findall(page.text) == [("1", "4")]

    answer = await submit_set_form(service, page, variation_id=linked.variation_id, quantity=6)
    shown = await service.http.get(answer.headers["location"])

    assert answer.status_code == 303
    assert service.simulator.quantity_of(linked.listing_uuid) == 6
    assert "Marketplace 1: quantity set, 4 → 6." in shown.text
    assert SET_FORM.findall(shown.text) == [("1", "6")]


async def test_a_sale_after_the_page_was_read_refuses_the_set_and_shows_the_live_quantity(
    service: Any,
) -> None:
    linked = await link(service.engine, service.simulator, 0, listed_stock=4)
    service.simulator.set_quantity(linked.listing_uuid, 4)
    page = await look_up(service, linked.variation_id)
    service.simulator.place_order(linked.listing_uuid)
    updates = len(service.simulator.stats()["updates"])

    answer = await submit_set_form(service, page, variation_id=linked.variation_id, quantity=6)
    shown = await service.http.get(answer.headers["location"])

    assert answer.status_code == 303
    assert len(service.simulator.stats()["updates"]) == updates
    assert service.simulator.quantity_of(linked.listing_uuid) == 3
    assert "Marketplace 1 holds 3 now, not the quantity shown" in shown.text
    # The form now expects the live quantity, so the person decides again from it.
    assert SET_FORM.findall(shown.text) == [("1", "3")]


async def test_the_set_form_without_its_csrf_token_is_refused_and_sends_nothing(
    service: Any,
) -> None:
    linked = await link(service.engine, service.simulator, 0, listed_stock=4)
    service.simulator.set_quantity(linked.listing_uuid, 4)
    page = await look_up(service, linked.variation_id)
    updates = len(service.simulator.stats()["updates"])

    answer = await submit_set_form(
        service, page, variation_id=linked.variation_id, quantity=6, csrf_token="forged" * 8
    )

    assert answer.status_code == 403
    assert len(service.simulator.stats()["updates"]) == updates
    assert service.simulator.quantity_of(linked.listing_uuid) == 4


@pytest.mark.watcher_off("asserts that no poll has run yet")
async def test_page_shows_every_configured_marketplace_and_starts_the_one_asked_for(
    two_accounts: TwoAccounts,
) -> None:
    service = two_accounts.service
    await service.app.state.container.watchers[SECOND_ACCOUNT].poll()
    csrf = await token(service.http)

    answer = await service.http.post(
        "/status/sync", **form(csrf_token=csrf, marketplace_id=str(SECOND_ACCOUNT))
    )
    run_id = int(answer.headers["location"].removeprefix("/?started="))
    finished = await wait_until_finished(service, run_id)
    text = (await service.http.get("/")).text

    assert answer.status_code == 303
    assert finished.marketplace_id == SECOND_ACCOUNT
    for marketplace_id, name in ((1, "BackMarket"), (SECOND_ACCOUNT, "BackMarket 7")):
        section = text[
            text.index(f'<section class="marketplace" id="marketplace-{marketplace_id}">') :
        ]
        assert f"Marketplace {marketplace_id} · {name}" in section
        assert f'<input type="hidden" name="marketplace_id" value="{marketplace_id}">' in section
        assert f'id="start-sync-{marketplace_id}"' in section
        assert f'id="updates-left-{marketplace_id}"' in section
        assert "of 10000 requests used in the last 10 s" in section
    second = text[text.index(f'id="marketplace-{SECOND_ACCOUNT}"') :]
    assert re.search(rf'id="watcher-last-poll-{SECOND_ACCOUNT}">\d{{4}}-', second)
    assert f'<p id="last-run-{SECOND_ACCOUNT}">Last run: <a href="#run-{run_id}">' in second
    first = text[
        text.index('id="marketplace-1"') : text.index(f'id="marketplace-{SECOND_ACCOUNT}"')
    ]
    assert '<p id="last-run-1">Last run: none yet.</p>' in first
    assert 'id="watcher-last-poll-1"' not in first  # off (interval 0) and never polled


async def test_start_button_of_a_disabled_marketplace_is_gone_and_a_forged_one_starts_nothing(
    service: Any,
) -> None:
    async with service.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE marketplace SET sync_enabled = 0 WHERE id = 1"))
    page = await service.http.get("/")
    # No form of the page carries the token now: the browser's cookie holds it.
    csrf = service.http.cookies[CSRF_COOKIE]

    answer = await service.http.post("/status/sync", **form(csrf_token=csrf, marketplace_id="1"))
    unknown = await service.http.post("/status/sync", **form(csrf_token=csrf, marketplace_id="9"))
    told = await service.http.get(answer.headers["location"])

    assert 'id="start-sync-1"' not in page.text
    assert 'id="sync-disabled-1"' in page.text
    assert answer.headers["location"] == "/?disabled=1"
    assert "Bulk sync of marketplace 1 is turned off" in told.text
    assert unknown.headers["location"] == "/?unknown=9"
    assert await run_count(service) == 0
