"""The service's configuration: every variable of the contract, read once from the environment."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CommaList = Annotated[list[str], NoDecode]

DEFAULT_USER_AGENT = "BM-ExampleCompany-StockSync;ops@example.com"


class Settings(BaseSettings):
    """One settings object; the environment variable of each field is its upper-case name."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    database_url: str = "sqlite+aiosqlite:///./stock_sync.db"
    database_pool_size: int = Field(default=10, ge=1, le=200)
    run_migrations_on_startup: bool = True

    backmarket_base_url: str = "https://www.backmarket.fr"
    backmarket_token: SecretStr | None = None
    backmarket_user_agent: str = DEFAULT_USER_AGENT
    backmarket_markets: CommaList = Field(default_factory=lambda: ["fr-fr"])
    backmarket_requests_per_10s: int = Field(default=20, ge=1, le=10_000)
    backmarket_updates_per_hour: int = Field(default=2000, ge=1, le=1_000_000)
    backmarket_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    backmarket_read_timeout_seconds: float = Field(default=30.0, gt=0)
    backmarket_max_attempts: int = Field(default=5, ge=1, le=20)
    backmarket_page_concurrency: int = Field(default=8, ge=1, le=100)

    sync_interval_minutes: int = Field(default=360, ge=0)
    # The orders watcher: how often it reads GET /ws/orders (0 = off), and how far back each
    # read starts before the watermark (orders that show late, clock differences).
    order_sync_interval_seconds: int = Field(default=60, ge=0, le=86_400)
    order_sync_overlap_seconds: int = Field(default=300, ge=0, le=86_400)
    sync_batch_size: int = Field(default=500, ge=1, le=50_000)
    add_quantity_limit: int = Field(default=10_000, ge=1)
    idempotency_ttl_hours: int = Field(default=48, ge=24)

    api_keys: CommaList = Field(default_factory=list)
    cors_origins: CommaList = Field(default_factory=list)

    # None: text when stderr is a terminal, JSON otherwise (decided in app.logs).
    log_format: Literal["json", "text"] | None = None
    log_level: str = "INFO"

    @field_validator("backmarket_markets", "api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("backmarket_markets")
    @classmethod
    def _markets_look_like_locales(cls, markets: list[str]) -> list[str]:
        if not markets:
            raise ValueError("at least one market is required, e.g. 'fr-fr'")
        for market in markets:
            parts = market.split("-")
            if len(parts) != 2 or not all(part.isalpha() and len(part) == 2 for part in parts):
                raise ValueError(f"{market!r} is not a market code like 'fr-fr'")
        return [market.lower() for market in markets]

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format_lower(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip().lower() or None
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level_is_a_level_name(cls, level: str) -> str:
        # WARN and FATAL are logging's own aliases; NOTSET would mean "everything", say DEBUG.
        accepted = set(logging.getLevelNamesMapping()) - {"NOTSET"}
        if level.strip().upper() not in accepted:
            raise ValueError(
                f"{level!r} is not a log level; use DEBUG, INFO, WARNING, ERROR or CRITICAL"
            )
        return level.strip().upper()

    @field_validator("database_url")
    @classmethod
    def _database_url_is_async(cls, url: str) -> str:
        if not url.startswith(("sqlite+aiosqlite://", "mysql+aiomysql://")):
            raise ValueError(
                "must start with 'sqlite+aiosqlite://' or 'mysql+aiomysql://' (an async driver)"
            )
        return url

    @field_validator("backmarket_base_url")
    @classmethod
    def _base_url_is_http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL such as https://www.backmarket.fr")
        return url.rstrip("/")

    @property
    def is_mysql(self) -> bool:
        return self.database_url.startswith("mysql")


class ConfigurationError(Exception):
    """Raised at start-up when a variable has an invalid value; the message names the variable."""


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; invalid values become one clear message naming each variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            variable = str(error["loc"][0]).upper() if error["loc"] else "?"
            problems.append(f"{variable}: {error['msg']}")
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
