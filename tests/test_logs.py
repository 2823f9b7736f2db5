"""Logs: JSON lines or text, the ids of the work, uvicorn's and APScheduler's lines, no secrets."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import uvicorn
from apscheduler.schedulers.background import BackgroundScheduler
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import ConfigurationError, Settings, load_settings
from app.logs import (
    THIRD_PARTY_LOGGERS,
    RequestIdMiddleware,
    bind_log_context,
    configure_logging,
    get_log_context,
    log_context,
    reset_log_context,
)
from app.main import create_app
from simulator.app import create_simulator_app
from simulator.config import SimulatorConfig
from tests.sync.support import link

REPOSITORY = Path(__file__).resolve().parents[1]

TOKEN = "bm-token-5f1c9e0a7d"
API_KEYS = ["key-alpha-1234", "key-beta-5678"]
RFC3339_UTC_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

log = logging.getLogger("app.test_logs")


class TerminalStream(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide loggers; put back what the other tests expect."""
    root = logging.getLogger()
    names = [*THIRD_PARTY_LOGGERS, "httpx"]
    saved = {
        name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers))
        for name in names
    }
    saved_propagate = {name: logging.getLogger(name).propagate for name in names}
    root_level = root.level
    yield
    for handler in [h for h in root.handlers if type(h).__name__ == "_StockSyncHandler"]:
        root.removeHandler(handler)
    root.setLevel(root_level)
    for name, (level, handlers) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = saved_propagate[name]


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "log_format": "json",
        "log_level": "INFO",
        "backmarket_token": TOKEN,
        "api_keys": API_KEYS,
    }
    values.update(overrides)
    return load_settings(**values)


def configure(**overrides: object) -> io.StringIO:
    stream = io.StringIO()
    configure_logging(make_settings(**overrides), stream=stream)
    return stream


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_time_level_logger_and_message() -> None:
    stream = configure()

    log.info("sync started for marketplace %d", 1, extra={"marketplace_id": 1})
    log.warning("second line")

    first, second = json_lines(stream)
    assert RFC3339_UTC_MS.fullmatch(str(first["time"]))
    logged_at = datetime.fromisoformat(str(first["time"]).replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - logged_at).total_seconds()) < 60
    assert first["level"] == "INFO"
    assert first["logger"] == "app.test_logs"
    assert first["message"] == "sync started for marketplace 1"
    assert first["marketplace_id"] == 1
    assert second["level"] == "WARNING"


def test_extra_fields_keep_their_json_shape() -> None:
    stream = configure()

    log.info("sync finished", extra={"counts": {"updated": 3, "unchanged": 9}, "dry_run": False})

    (line,) = json_lines(stream)
    assert line["counts"] == {"updated": 3, "unchanged": 9}
    assert line["dry_run"] is False


def test_lines_carry_the_ids_of_the_work_they_belong_to() -> None:
    stream = configure()

    with log_context(request_id="req-1"):
        with log_context(run_id=42, idempotency_key="idem-9"):
            log.info("inside the run")
        log.info("after the run")
    log.info("outside")

    inside, after, outside = json_lines(stream)
    assert inside["run_id"] == 42
    assert inside["request_id"] == "req-1"
    assert inside["idempotency_key"] == "idem-9"
    assert after["request_id"] == "req-1"
    assert "run_id" not in after
    assert not {"run_id", "request_id", "idempotency_key"} & outside.keys()


async def test_a_task_started_inside_the_context_keeps_its_ids() -> None:
    stream = configure()

    async def background_run() -> None:
        log.info("from the task")

    with log_context(run_id=7):
        task = asyncio.create_task(background_run())
    await task

    (line,) = json_lines(stream)
    assert line["run_id"] == 7


def test_bind_log_context_holds_until_reset() -> None:
    token = bind_log_context(run_id=3)
    try:
        assert get_log_context() == {"run_id": 3}
    finally:
        reset_log_context(token)
    assert get_log_context() == {}


def test_apscheduler_lines_come_out_in_the_same_json_format() -> None:
    stream = configure()
    ran = threading.Event()
    scheduler = BackgroundScheduler(timezone=UTC)
    # An interval job stays in the store: a one-off job is removed by the scheduler's thread,
    # which can race with shutdown.
    scheduler.add_job(
        ran.set, "interval", hours=1, next_run_time=datetime.now(UTC), id="probe", name="probe"
    )

    scheduler.start()
    try:
        assert ran.wait(timeout=10)
    finally:
        scheduler.shutdown(wait=True)

    lines = json_lines(stream)
    scheduler_lines = [line for line in lines if str(line["logger"]).startswith("apscheduler")]
    assert any(line["message"] == "Scheduler started" for line in scheduler_lines)
    assert {"apscheduler.scheduler", "apscheduler.executors.default"} <= {
        str(line["logger"]) for line in scheduler_lines
    }
    for line in scheduler_lines:
        assert RFC3339_UTC_MS.fullmatch(str(line["time"]))
        assert line["level"] == "INFO"


async def test_uvicorn_lines_come_out_in_the_same_json_format_with_the_request_id() -> None:
    stream = configure()
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        log.info("pong")
        return {"status": "ok"}

    app.add_middleware(RequestIdMiddleware)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(trust_env=False) as client:
            response = await client.get(
                f"http://127.0.0.1:{port}/ping", headers={"X-Request-ID": "trace-123"}
            )
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=10)

    assert response.headers["X-Request-ID"] == "trace-123"
    lines = json_lines(stream)
    by_logger: dict[str, list[dict[str, object]]] = {}
    for line in lines:
        by_logger.setdefault(str(line["logger"]), []).append(line)
    assert any("Uvicorn running on" in str(line["message"]) for line in by_logger["uvicorn.error"])
    (access,) = by_logger["uvicorn.access"]
    assert "GET /ping HTTP/1.1" in str(access["message"])
    assert access["request_id"] == "trace-123"
    (pong,) = by_logger["app.test_logs"]
    assert pong["request_id"] == "trace-123"


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_the_token_and_api_keys_never_appear(log_format: str) -> None:
    stream = configure(log_format=log_format)

    log.info("calling with Authorization: Basic %s", TOKEN)
    log.warning(f"rejected key {API_KEYS[0]}", extra={"header": f"Bearer {API_KEYS[1]}"})
    log.info("nested", extra={"request": {"headers": [f"Basic {TOKEN}"]}})
    with log_context(idempotency_key=f"k-{API_KEYS[1]}"):
        try:
            raise RuntimeError(f"Back Market answered 401 for token {TOKEN}")
        except RuntimeError:
            log.exception("call failed with key %r", API_KEYS[0])

    output = stream.getvalue()
    for secret in [TOKEN, *API_KEYS]:
        assert secret not in output
    assert output.count("[redacted]") >= 6
    assert "RuntimeError: Back Market answered 401 for token [redacted]" in output
    if log_format == "json":
        failed = json_lines(stream)[-1]
        assert failed["message"] == "call failed with key '[redacted]'"
        assert "Traceback" in str(failed["exception"])


def test_a_secret_that_contains_another_is_redacted_whole() -> None:
    stream = configure(backmarket_token="abcdef-long-token", api_keys=["abcdef"])

    log.info("abcdef-long-token")

    assert json_lines(stream)[0]["message"] == "[redacted]"


def test_text_is_chosen_on_a_terminal() -> None:
    stream = TerminalStream()
    configure_logging(make_settings(log_format=None), stream=stream)

    with log_context(run_id=5):
        log.info("hello")

    line = stream.getvalue().strip()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO +app\.test_logs: hello run_id=5", line
    )


def test_json_is_chosen_when_not_a_terminal() -> None:
    stream = configure(log_format=None)

    log.info("hello")

    assert json_lines(stream)[0]["message"] == "hello"


def test_log_format_set_explicitly_wins_over_the_terminal_check() -> None:
    stream = TerminalStream()
    configure_logging(make_settings(log_format="json"), stream=stream)

    log.info("hello")

    assert json.loads(stream.getvalue())["message"] == "hello"


def test_log_level_is_respected() -> None:
    stream = configure(log_level="warning")

    log.info("not shown")
    logging.getLogger("uvicorn.error").info("not shown either")
    log.warning("shown")

    assert [line["message"] for line in json_lines(stream)] == ["shown"]
    assert logging.getLogger().level == logging.WARNING


def test_configuring_twice_leaves_one_handler() -> None:
    configure()
    stream = configure()

    log.info("once")

    assert len(json_lines(stream)) == 1
    ours = [h for h in logging.getLogger().handlers if type(h).__name__ == "_StockSyncHandler"]
    assert len(ours) == 1


def test_log_settings_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("LOG_FORMAT", "TEXT")

    settings = load_settings()

    assert settings.log_level == "DEBUG"
    assert settings.log_format == "text"


def test_an_unknown_log_level_fails_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "verbose")

    with pytest.raises(ConfigurationError, match=r"LOG_LEVEL: .*'verbose' is not a log level"):
        load_settings()


def test_an_unknown_log_format_fails_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_FORMAT", "xml")

    with pytest.raises(ConfigurationError, match="LOG_FORMAT"):
        load_settings()


def request_id_app() -> FastAPI:
    app = FastAPI()

    @app.get("/work")
    async def work() -> dict[str, object]:
        log.info("doing the work")
        return {"context": get_log_context()}

    app.add_middleware(RequestIdMiddleware)
    return app


async def test_request_id_middleware_echoes_the_incoming_id_in_header_and_logs() -> None:
    stream = configure()
    transport = httpx.ASGITransport(app=request_id_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/work", headers={"X-Request-ID": "abc-123"})

    assert response.headers["X-Request-ID"] == "abc-123"
    assert response.json() == {"context": {"request_id": "abc-123"}}
    assert json_lines(stream)[0]["request_id"] == "abc-123"
    assert get_log_context() == {}


@pytest.mark.parametrize("incoming", [None, b"x" * 129, b"has space", "evil\u2028line".encode()])
async def test_request_id_middleware_makes_a_new_id_when_none_usable_is_given(
    incoming: bytes | None,
) -> None:
    stream = configure()
    headers = {b"X-Request-ID": incoming} if incoming else {}
    transport = httpx.ASGITransport(app=request_id_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        first = await client.get("/work", headers=headers)
        second = await client.get("/work", headers=headers)

    request_id = first.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert second.headers["X-Request-ID"] != request_id
    assert json_lines(stream)[0]["request_id"] == request_id


def test_the_database_password_and_any_credential_header_never_appear() -> None:
    stream = configure(
        database_url="mysql+aiomysql://stock:p%40ss-w0rd-9@db.internal:3306/backoffice"
    )

    log.info("connecting to %s", "mysql+aiomysql://stock:p%40ss-w0rd-9@db.internal:3306/backoffice")
    log.warning("access denied for user stock with password p@ss-w0rd-9")
    log.info("forwarded headers %s", {"Authorization": "Bearer someone-elses-token-1"})
    log.info("X-API-Key: not-one-of-ours-5678 rejected")

    output = stream.getvalue()
    for secret in ["p%40ss-w0rd-9", "p@ss-w0rd-9", "someone-elses-token-1", "not-one-of-ours-5678"]:
        assert secret not in output
    messages = [line["message"] for line in json_lines(stream)]
    assert (
        messages[0] == "connecting to mysql+aiomysql://stock:[redacted]@db.internal:3306/backoffice"
    )
    assert messages[2] == "forwarded headers {'Authorization': 'Bearer [redacted]'}"
    assert messages[3] == "X-API-Key: [redacted] rejected"


async def test_a_sync_and_an_addition_log_their_ids_and_never_a_secret(
    db_url: str, engine: AsyncEngine
) -> None:
    """The real flows, through the handler `configure_logging` installs, at DEBUG."""
    stream = configure(
        database_url=db_url,
        backmarket_base_url="http://bm.test",
        log_level="DEBUG",
        sync_interval_minutes=0,
        order_sync_interval_seconds=0,
        run_migrations_on_startup=False,
        backmarket_requests_per_10s=10_000,
    )
    settings = make_settings(
        database_url=db_url,
        backmarket_base_url="http://bm.test",
        sync_interval_minutes=0,
        order_sync_interval_seconds=0,
        run_migrations_on_startup=False,
        backmarket_requests_per_10s=10_000,
    )
    simulator_app = create_simulator_app(SimulatorConfig(listings=60, seed=7, token=TOKEN))
    simulator = simulator_app.state.sim
    # Stored 4 above what Back Market shows: the run finds that drift.
    live = simulator.quantity_of(simulator.store.identity(0).id)
    linked = await link(engine, simulator, 0, listed_stock=live + 4)
    backmarket_http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=simulator_app), base_url=settings.backmarket_base_url
    )
    app = create_app(settings, backmarket_http=backmarket_http)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        synced = await http.post(
            "/sync/bulk",
            params={"wait": "true"},
            headers={"Authorization": f"Bearer {API_KEYS[0]}", "X-Request-ID": "req-sync-1"},
        )
        added = await http.post(
            f"/variations/{linked.variation_id}/add-quantity",
            json={"quantity": 2},
            headers={"X-API-Key": API_KEYS[1], "Idempotency-Key": "idem-logs-1"},
        )
        refused = await http.get("/sync/runs", headers={"Authorization": "Bearer wrong-key-42x"})
        # A careless line is scrubbed too.
        log.debug("settings at start: %s", settings.model_dump(mode="json"))
        log.debug("sent with %s", {"Authorization": f"Basic {TOKEN}"})
    await backmarket_http.aclose()

    assert synced.status_code == 200, synced.text
    assert added.status_code == 200, added.text
    assert refused.status_code == 401
    run_id = synced.json()["run"]["id"]
    lines = json_lines(stream)
    started = [line for line in lines if line.get("event") == "bulk_sync_started"]
    finished = [line for line in lines if line.get("event") == "bulk_sync_finished"]
    assert [(line["run_id"], line["request_id"]) for line in started + finished] == [
        (run_id, "req-sync-1"),
        (run_id, "req-sync-1"),
    ]
    assert finished[0]["status"] == "completed"
    assert finished[0]["listings"] == 60
    assert finished[0]["updated"] == 1
    drift = {key: value for key, value in finished[0].items() if key.startswith("drift_")}
    assert drift == {
        "drift_rows": 1,
        "drift_higher": 1,
        "drift_lower": 0,
        "drift_units": 4,
        "drift_oldest_confirmed_at": None,
    }
    assert finished[0]["variations_resummed"] == 1
    addition_lines = [line for line in lines if line.get("idempotency_key") == "idem-logs-1"]
    assert addition_lines
    assert all("run_id" not in line for line in addition_lines)
    output = stream.getvalue()
    for secret in [TOKEN, *API_KEYS, "wrong-key-42x"]:
        assert secret not in output
    assert "[redacted]" in output


async def test_the_apps_start_brings_uvicorns_loggers_back_to_the_handler(
    db_url: str, engine: AsyncEngine
) -> None:
    """`serve --demo`: the simulator's uvicorn configures its loggers after the command line did."""
    stream = configure()
    uvicorn.Config(FastAPI(), log_level="warning", access_log=False)
    app = create_app(
        make_settings(
            database_url=db_url,
            sync_interval_minutes=0,
            order_sync_interval_seconds=0,
            run_migrations_on_startup=False,
        )
    )

    async with LifespanManager(app):
        logging.getLogger("uvicorn.error").info("Uvicorn running on probe")
        logging.getLogger("uvicorn.access").info("GET /probe")

    messages = {str(line["logger"]): line["message"] for line in json_lines(stream)}
    assert messages["uvicorn.error"] == "Uvicorn running on probe"
    assert messages["uvicorn.access"] == "GET /probe"


def test_uvicorn_started_on_app_main_writes_every_line_as_json(tmp_path: Path) -> None:
    """`uvicorn app.main:app` (no CLI): uvicorn's own lines, the app's and APScheduler's."""
    environment = {
        **os.environ,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'served.db'}",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "BACKMARKET_TOKEN": TOKEN,
        "API_KEYS": ",".join(API_KEYS),
        "SYNC_INTERVAL_MINUTES": "0",
        "ORDER_SYNC_INTERVAL_SECONDS": "0",
    }
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    errors = (tmp_path / "stderr.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)],
        cwd=REPOSITORY,
        env=environment,
        stdout=errors,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(300):
            assert server.poll() is None, (tmp_path / "stderr.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        answer = httpx.get(
            f"http://127.0.0.1:{port}/sync/runs",
            headers={"Authorization": f"Bearer {API_KEYS[0]}", "X-Request-ID": "req-served"},
        )
    finally:
        server.terminate()
        server.wait(timeout=20)
        errors.close()

    assert answer.status_code == 200
    output = (tmp_path / "stderr.log").read_text()
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    loggers = {str(line["logger"]) for line in lines}
    assert {"uvicorn.error", "uvicorn.access", "apscheduler.scheduler"} <= loggers
    assert any(
        line["logger"] == "uvicorn.access"
        and "GET /sync/runs" in str(line["message"])
        and line["request_id"] == "req-served"
        for line in lines
    )
    assert all("color_message" not in line for line in lines)
    for secret in [TOKEN, *API_KEYS]:
        assert secret not in output
