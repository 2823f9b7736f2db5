"""Logs: JSON lines or text, the ids of the work, uvicorn's and APScheduler's lines, no secrets."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
import uvicorn
from apscheduler.schedulers.background import BackgroundScheduler
from fastapi import FastAPI

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
