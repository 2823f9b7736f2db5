"""Logging for the whole process: JSON lines or text, the ids of the current work, no secrets.

`configure_logging(settings)` puts one handler on the root logger; the service's own loggers,
uvicorn's and APScheduler's all reach it by propagation, so every line has the same shape.
`log_context(run_id=...)` (or `bind_log_context`) names the work a line belongs to; the ids live
in contextvars, so an asyncio task started inside the block keeps them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from app.config import Settings

REDACTED = "[redacted]"
REQUEST_ID_HEADER = "X-Request-ID"

# Loggers that other libraries configure for themselves; their lines must reach our handler.
THIRD_PARTY_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "apscheduler")

_log_context: ContextVar[Mapping[str, object]] = ContextVar(
    "log_context", default=MappingProxyType({})
)

# Attributes every LogRecord has; anything else on a record came from `extra=`. uvicorn's
# `color_message` (the message again, with terminal colour codes) is left out too.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName", "color_message"}
)
_CORE_FIELDS = ("time", "level", "logger", "message")

# Credentials in a header's shape, whoever's they are: "Authorization: Bearer <x>", "Basic <x>",
# "Plain <x>" (Refurbed), "X-API-Key: <x>" (8 characters or more, so that "Basic checks" stays
# readable). Configured secrets are redacted wherever they appear, whatever their shape.
_CREDENTIAL_PATTERN = re.compile(
    r"""(\b(?:Basic|Bearer|Plain) +|\b(?i:x-api-key)['"]?\s*[:=]\s*['"]?)(?!\[redacted\])[^\s'",;)\]}]{8,}"""
)

# An incoming id is echoed into logs and a response header: keep it short and inert.
_ACCEPTABLE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def get_log_context() -> dict[str, object]:
    """The ids bound to the current task, e.g. {"run_id": 7, "request_id": "ab12..."}."""
    return dict(_log_context.get())


def bind_log_context(**ids: object) -> Token[Mapping[str, object]]:
    """Adds ids for the rest of the current context; a None value removes that id.

    Meant for the top of a task (a sync run, a scheduled job) whose context dies with it;
    elsewhere prefer `log_context`, or pass the token to `reset_log_context`.
    """
    merged = {**_log_context.get(), **ids}
    return _log_context.set({key: value for key, value in merged.items() if value is not None})


def reset_log_context(token: Token[Mapping[str, object]]) -> None:
    _log_context.reset(token)


@contextmanager
def log_context(**ids: object) -> Iterator[None]:
    """Lines logged inside the block (and in tasks it starts) carry these ids."""
    token = bind_log_context(**ids)
    try:
        yield
    finally:
        _log_context.reset(token)


class SecretRedactor:
    """Replaces each secret value, and any credential written as a header, with "[redacted]"."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is not left half visible.
        self._secrets = sorted({secret for secret in secrets if secret}, key=len, reverse=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretRedactor:
        # Every marketplace's token (BACKMARKET_TOKEN, MARKETPLACE_<ID>_TOKEN) and the API keys.
        return cls([*settings.secrets(), *_database_passwords(settings.database_url)])

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return _CREDENTIAL_PATTERN.sub(lambda match: match.group(1) + REDACTED, text)

    def redact_value(self, value: object) -> object:
        """Redacts inside strings, dicts and lists, keeping their shape for the JSON line."""
        if isinstance(value, str):
            return self.redact(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, Mapping):
            return {self.redact(str(key)): self.redact_value(item) for key, item in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.redact_value(item) for item in value]
        return self.redact(str(value))


def _database_passwords(url: str) -> list[str]:
    """DATABASE_URL's password as written (percent-encoded) and decoded."""
    try:
        written = urllib.parse.urlsplit(url).password
    except ValueError:
        return []
    return [written, urllib.parse.unquote(written)] if written else []


class RedactSecretsFilter(logging.Filter):
    """Scrubs the message, its arguments, the traceback and `extra=` fields of every record.

    It sits on the handler: a logger's own filters see only records logged on that logger,
    not the ones that propagate to it.
    """

    def __init__(self, redactor: SecretRedactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # A bad format string must not turn a log call into a crash of the caller.
            message = f"{record.msg!s} {record.args!r}"
        record.msg = self.redactor.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _RECORD_ATTRIBUTES:
                setattr(record, key, self.redactor.redact_value(value))
        return True


class _ContextFilter(logging.Filter):
    """Copies the ids of the current work onto the record while still in the emitting task."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "log_context"):
            record.log_context = get_log_context()
        return True


def _fields(record: logging.LogRecord) -> dict[str, object]:
    """The line's ids and `extra=` fields: an explicit extra wins over the bound context."""
    fields = dict(getattr(record, "log_context", {}))
    for key, value in record.__dict__.items():
        if key not in _RECORD_ATTRIBUTES and key != "log_context":
            fields[key] = value
    return fields


def _rfc3339(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, ids, extras, exception."""

    def __init__(self, redactor: SecretRedactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or SecretRedactor([])

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _fields(record).items():
            line[f"extra_{key}" if key in _CORE_FIELDS else key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        # Redacted before encoding: JSON escaping could otherwise hide a secret from the scrub.
        return json.dumps(
            {key: self.redactor.redact_value(value) for key, value in line.items()},
            default=str,
            ensure_ascii=False,
        )


class TextFormatter(logging.Formatter):
    """For a person at a terminal: `time LEVEL logger: message key=value ...` and the traceback."""

    def __init__(self, redactor: SecretRedactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or SecretRedactor([])

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f"{_rfc3339(record.created)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        ]
        parts += [f"{key}={value}" for key, value in _fields(record).items()]
        text = " ".join(parts)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + record.stack_info
        return self.redactor.redact(text)


class _StockSyncHandler(logging.StreamHandler[TextIO]):
    """Marks the handler this module owns, so configuring again replaces it."""


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> logging.Handler:
    """Sets LOG_FORMAT and LOG_LEVEL for the process; calling it again replaces the first set-up.

    Only this module's handler is replaced: others on the root logger (pytest's) stay.
    Give uvicorn `log_config=None` so it keeps its loggers as they are left here.
    """
    stream = sys.stderr if stream is None else stream
    log_format = settings.log_format
    if log_format is None:
        log_format = "text" if _is_terminal(stream) else "json"
    redactor = SecretRedactor.from_settings(settings)

    handler = _StockSyncHandler(stream)
    handler.setFormatter(
        JsonFormatter(redactor) if log_format == "json" else TextFormatter(redactor)
    )
    handler.addFilter(_ContextFilter())
    handler.addFilter(RedactSecretsFilter(redactor))

    root = logging.getLogger()
    for existing in [h for h in root.handlers if isinstance(h, _StockSyncHandler)]:
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.log_level)

    _route_library_loggers()
    # The Back Market client logs each call itself (at DEBUG); httpx's INFO line per call is noise.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return handler


@contextmanager
def logs_written_to(stream: TextIO) -> Iterator[None]:
    """Lines of `configure_logging`'s handler go to `stream` inside the block (the command
    line's progress bar writes them above itself)."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, _StockSyncHandler)]
    previous = [(handler, handler.setStream(stream)) for handler in handlers]
    try:
        yield
    finally:
        for handler, earlier in previous:
            if earlier is not None:
                handler.setStream(earlier)


def reroute_library_loggers() -> None:
    """Send uvicorn's and APScheduler's lines to this module's handler again.

    For the app's start: a uvicorn configured in the same process after `configure_logging`
    (the demo's simulator, a `log_config`) gives its loggers handlers and levels of its own.
    Does nothing when `configure_logging` has not run (tests that leave logging to pytest).
    """
    if any(isinstance(handler, _StockSyncHandler) for handler in logging.getLogger().handlers):
        _route_library_loggers()


def _route_library_loggers() -> None:
    for name in THIRD_PARTY_LOGGERS:
        third_party = logging.getLogger(name)
        third_party.handlers.clear()
        third_party.propagate = True
        third_party.setLevel(logging.NOTSET)
        third_party.disabled = False


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class RequestIdMiddleware:
    """Gives each HTTP request an id: the caller's X-Request-ID when sane, else a new one.

    The id is bound to the log context for the request (uvicorn's access line included, as it
    is written from inside `send`) and returned in the X-Request-ID response header.
    Add it last in `create_app` so that it wraps every other middleware.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        header = (REQUEST_ID_HEADER.lower().encode(), request_id.encode())

        async def send_with_request_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != header[0]
                ]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        with log_context(request_id=request_id):
            await self.app(scope, receive, send_with_request_id)


def _incoming_request_id(scope: Scope) -> str | None:
    wanted = REQUEST_ID_HEADER.lower().encode()
    for name, value in scope.get("headers", []):
        if name.lower() == wanted:
            candidate = value.decode("latin-1").strip()
            return candidate if _ACCEPTABLE_REQUEST_ID.fullmatch(candidate) else None
    return None
