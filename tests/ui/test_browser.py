"""The status page in a real browser (Playwright driving /usr/bin/chromium) against a real server
process and simulator: start a sync with the button, watch the progress bar move as the page
reloads itself, see the run complete, look a variation up; with JavaScript off, as the page
needs none. Screenshots go to artifacts/.

A budget of 40 requests per 10 s makes the 40-page catalogue take about ten seconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.db import create_engine
from app.migrate import run_migrations
from tests.processes.support import REPOSITORY, Server, Simulator, link_catalogue

CHROMIUM = Path("/usr/bin/chromium")
LISTINGS = 2000  # 40 pages of 50
ARTIFACTS = REPOSITORY / "artifacts"
STEP_TIMEOUT_S = 40.0

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is missing (Debian: apt-get install chromium); the browser test needs it",
)


async def _prepare_database(url: str, simulator: Simulator) -> None:
    engine = create_engine(url)
    try:
        # Migrating also adds marketplace 1, Back Market.
        await run_migrations(engine)
        await link_catalogue(engine, await simulator.pages())
    finally:
        await engine.dispose()


@pytest.fixture
def running_server(tmp_path: Path) -> Iterator[Server]:
    simulator = Simulator(tmp_path, listings=LISTINGS).start()
    server: Server | None = None
    try:
        database_url = f"sqlite+aiosqlite:///{tmp_path / 'stock_sync.db'}"
        asyncio.run(_prepare_database(database_url, simulator))
        server = Server(
            tmp_path,
            database_url,
            simulator.base_url,
            settings={
                "BACKMARKET_REQUESTS_PER_10S": "40",
                # A batch per page, so the run's record (and the bar) moves with every page.
                "SYNC_BATCH_SIZE": "50",
                "SYNC_INTERVAL_MINUTES": "360",
                "ORDER_SYNC_INTERVAL_SECONDS": "60",
            },
        ).start()
        yield server
    finally:
        if server is not None:
            server.stop()
        simulator.stop()


def eventually(read: Callable[[], Any], accept: Callable[[Any], bool], what: str) -> Any:
    """Read until accepted; a read that fails while the page is reloading is read again."""
    deadline = time.monotonic() + STEP_TIMEOUT_S
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = read()
        except Exception as exc:  # the page reloads itself under the reader
            last = exc
        else:
            if accept(last):
                return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: last seen {last!r}")


def test_start_button_progress_bar_completed_run_and_look_up(running_server: Server) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            # The page needs no script: reading, the forms and the self-reload work without.
            page = browser.new_page(
                viewport={"width": 1280, "height": 900}, java_script_enabled=False
            )
            page.set_default_timeout(STEP_TIMEOUT_S * 1000)
            page.goto(running_server.url + "/")
            assert page.locator("#bulk-sync-1").inner_text().count("No bulk sync running.") == 1

            page.click("#start-sync-1")
            page.wait_for_url("**/?started=*")
            run_id = page.url.rsplit("=", 1)[1]
            assert page.locator("#notice").inner_text() == f"Bulk sync run {run_id} started."

            def progress() -> float:
                value = page.locator("#sync-progress-1").get_attribute("value", timeout=2000)
                return float(value or 0)

            first = eventually(progress, lambda value: value > 0, "the bar never filled")

            # Looked up while the run goes on: the page keeps the look-up as it reloads.
            page.fill("input[name=variation]", "1")
            page.click("#lookup")
            page.wait_for_url("**/?variation=1")
            second = eventually(progress, lambda value: value > first, "the bar never moved")
            assert second > first

            status = f"#run-{run_id} .status"
            eventually(
                lambda: page.locator(status).inner_text(timeout=2000),
                lambda text: text == "completed",
                "the run never showed completed",
            )
            # The run is over: the page no longer reloads itself.
            assert page.locator("meta[http-equiv=refresh]").count() == 0
            assert "No bulk sync running." in page.locator("#bulk-sync-1").inner_text()
            pages = page.locator(f"#run-{run_id} td.n").nth(1).inner_text()
            assert pages == "40/40"
            history = page.locator("#variation-history").inner_text()
            assert "bulk_sync" in history and f"run {run_id}" in history
            # Every row the run wrote held the seeded sentinel, above what Back Market showed.
            drift = page.locator("#drift-1")
            assert f"Run {run_id} (completed" in drift.inner_text()
            assert drift.locator(".drift-rows").inner_text() == "1\u202f800 of 1\u202f800 written"
            assert drift.locator(".drift-higher").inner_text().startswith("1\u202f800 ")
            assert drift.locator("tbody tr").count() == 20
            page.screenshot(path=str(ARTIFACTS / "status-page-finished.png"), full_page=True)

            # A second run, past a third of the way, under the drift the first one found: the
            # screenshot the README shows.
            page.click("#start-sync-1")
            page.wait_for_url("**/?started=*")
            eventually(progress, lambda value: value > 13, "the second run's bar never moved")
            assert f"Run {run_id} (completed" in page.locator("#drift-1").inner_text()
            page.screenshot(path=str(ARTIFACTS / "status-page.png"), full_page=True)
        finally:
            browser.close()
