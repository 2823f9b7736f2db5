"""The service's configuration: every variable of the contract, read once from the environment."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CommaList = Annotated[list[str], NoDecode]

DEFAULT_USER_AGENT = "BM-ExampleCompany-StockSync;ops@example.com"

MarketplaceKind = Literal["backmarket", "refurbed"]
# The marketplace `BACKMARKET_*` configures; `MARKETPLACE_<ID>_*` configures any other.
FIRST_MARKETPLACE_ID = 1
DEFAULT_BASE_URLS: dict[str, str] = {
    "backmarket": "https://www.backmarket.fr",
    "refurbed": "https://api.refurbed.com",
}
_MARKETPLACE_VARIABLE = re.compile(r"MARKETPLACE_([^_]+)_(.+)", re.IGNORECASE)


def _is_http_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError("must be an http(s) URL such as https://www.backmarket.fr")
    return url.rstrip("/")


def _markets_look_like_locales(markets: list[str]) -> list[str]:
    if not markets:
        raise ValueError("at least one market is required, e.g. 'fr-fr'")
    for market in markets:
        parts = market.split("-")
        if len(parts) != 2 or not all(part.isalpha() and len(part) == 2 for part in parts):
            raise ValueError(f"{market!r} is not a market code like 'fr-fr'")
    return [market.lower() for market in markets]


def _split_comma_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class MarketplaceVariables(BaseModel):
    """`MARKETPLACE_<ID>_*` of one marketplace, as given; the field is the variable's suffix."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: MarketplaceKind
    token: SecretStr | None = None
    base_url: str | None = None
    requests_per_10s: int = Field(default=20, ge=1, le=10_000)
    updates_per_hour: int = Field(default=2000, ge=1, le=1_000_000)
    markets: CommaList | None = None
    user_agent: str | None = None
    name: str | None = Field(default=None, min_length=1, max_length=255)

    @field_validator("kind", mode="before")
    @classmethod
    def _kind_lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("markets", mode="before")
    @classmethod
    def _split_markets(cls, value: object) -> object:
        return _split_comma_list(value)

    @field_validator("markets")
    @classmethod
    def _markets_are_locales(cls, markets: list[str] | None) -> list[str] | None:
        return None if markets is None else _markets_look_like_locales(markets)

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, url: str | None) -> str | None:
        return None if url is None else _is_http_url(url)


@dataclass(frozen=True, slots=True)
class MarketplaceSettings:
    """Everything one marketplace adapter is built from, defaults resolved: marketplace 1 from
    `BACKMARKET_*`, any other from `MARKETPLACE_<ID>_*`. The timeouts, attempts and page
    concurrency are the `BACKMARKET_*` ones for every account."""

    id: int
    kind: MarketplaceKind
    name: str
    token: SecretStr | None
    base_url: str
    requests_per_10s: int
    updates_per_hour: int
    # Back Market kind only: the Accept-Language markets its bulk sync reads, its User-Agent.
    markets: tuple[str, ...]
    user_agent: str
    connect_timeout_seconds: float
    read_timeout_seconds: float
    max_attempts: int
    page_concurrency: int


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

    # Every marketplace other than 1, by id: `MARKETPLACE_<ID>_*` (read by `load_settings`).
    marketplaces: dict[int, MarketplaceVariables] = Field(default_factory=dict)

    @field_validator("backmarket_markets", "api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_comma_list(cls, value: object) -> object:
        return _split_comma_list(value)

    @field_validator("backmarket_markets")
    @classmethod
    def _markets_look_like_locales(cls, markets: list[str]) -> list[str]:
        return _markets_look_like_locales(markets)

    @field_validator("marketplaces")
    @classmethod
    def _marketplace_ids_are_not_1(
        cls, marketplaces: dict[int, MarketplaceVariables]
    ) -> dict[int, MarketplaceVariables]:
        for marketplace_id in marketplaces:
            if marketplace_id == FIRST_MARKETPLACE_ID or marketplace_id < 1:
                raise ValueError(
                    f"marketplace {marketplace_id}: the id must be a positive integer other "
                    "than 1 (marketplace 1 is configured by BACKMARKET_*)"
                )
        return marketplaces

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
        return _is_http_url(url)

    @property
    def is_mysql(self) -> bool:
        return self.database_url.startswith("mysql")

    def marketplace_settings(self) -> list[MarketplaceSettings]:
        """Every configured marketplace, marketplace 1 first, each with its defaults resolved."""
        shared: dict[str, Any] = {
            "connect_timeout_seconds": self.backmarket_connect_timeout_seconds,
            "read_timeout_seconds": self.backmarket_read_timeout_seconds,
            "max_attempts": self.backmarket_max_attempts,
            "page_concurrency": self.backmarket_page_concurrency,
        }
        configured = [
            MarketplaceSettings(
                id=FIRST_MARKETPLACE_ID,
                kind="backmarket",
                name="BackMarket",
                token=self.backmarket_token,
                base_url=self.backmarket_base_url,
                requests_per_10s=self.backmarket_requests_per_10s,
                updates_per_hour=self.backmarket_updates_per_hour,
                markets=tuple(self.backmarket_markets),
                user_agent=self.backmarket_user_agent,
                **shared,
            )
        ]
        for marketplace_id, given in sorted(self.marketplaces.items()):
            default_name = (
                "Refurbed" if given.kind == "refurbed" else f"BackMarket {marketplace_id}"
            )
            configured.append(
                MarketplaceSettings(
                    id=marketplace_id,
                    kind=given.kind,
                    name=given.name or default_name,
                    token=given.token,
                    base_url=given.base_url or DEFAULT_BASE_URLS[given.kind],
                    requests_per_10s=given.requests_per_10s,
                    updates_per_hour=given.updates_per_hour,
                    markets=tuple(given.markets or ["fr-fr"]),
                    user_agent=given.user_agent or self.backmarket_user_agent,
                    **shared,
                )
            )
        return configured

    def secrets(self) -> list[str]:
        """Every configured secret value: tokens, API keys (not the database password)."""
        tokens = [self.backmarket_token, *(given.token for given in self.marketplaces.values())]
        return [token.get_secret_value() for token in tokens if token is not None] + list(
            self.api_keys
        )


class ConfigurationError(Exception):
    """Raised at start-up when a variable has an invalid value; the message names the variable."""


def marketplace_variables(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """`MARKETPLACE_<ID>_<FIELD>` variables grouped by id as written: {"4": {"kind": ...}}.

    A marketplace is configured when its `_KIND` is set; its other variables without a kind are
    still returned, so that validation says the kind is missing instead of ignoring them.
    """
    grouped: dict[str, dict[str, str]] = {}
    for variable, value in environ.items():
        match = _MARKETPLACE_VARIABLE.fullmatch(variable)
        if match is not None:
            marketplace_id, field = match.groups()
            grouped.setdefault(marketplace_id, {})[field.lower()] = value
    return grouped


def _misplaced_variables(marketplace_id: str, given: Mapping[str, str]) -> list[str]:
    """What a marketplace's variables say that its kind cannot take, or a missing token."""
    problems = []
    prefix = f"MARKETPLACE_{marketplace_id}_"
    if not given.get("token", "").strip():
        problems.append(f"{prefix}TOKEN: required when {prefix}KIND is set")
    if given["kind"].strip().lower() != "backmarket":
        for field in ("markets", "user_agent"):
            if field in given:
                problems.append(
                    f"{prefix}{field.upper()}: only for kind 'backmarket', not {given['kind']!r}"
                )
    return problems


def _variable_of(location: tuple[int | str, ...]) -> str:
    """The environment variable a validation error's location stands for."""
    if not location:
        return "?"
    if location[0] == "marketplaces" and len(location) >= 2:
        field = str(location[2]).upper() if len(location) >= 3 else "KIND"
        marketplace_id = str(location[1]).split(",")[0]
        return f"MARKETPLACE_{marketplace_id}_{field}"
    return str(location[0]).upper()


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Read the environment once; invalid values become one clear message naming each variable."""
    environ = os.environ if environ is None else environ
    problems = []
    if "marketplaces" not in overrides:
        marketplaces: dict[str, dict[str, str]] = {}
        for marketplace_id, given in marketplace_variables(environ).items():
            if not marketplace_id.isdigit():
                problems.append(
                    f"MARKETPLACE_{marketplace_id}_*: {marketplace_id!r} is not a marketplace id "
                    "(an integer)"
                )
            elif int(marketplace_id) == FIRST_MARKETPLACE_ID:
                problems.append(
                    f"MARKETPLACE_{marketplace_id}_{next(iter(given)).upper()}: marketplace 1 is "
                    "configured by the BACKMARKET_* variables"
                )
            elif "kind" not in given:
                names = ", ".join(f"MARKETPLACE_{marketplace_id}_{key.upper()}" for key in given)
                problems.append(
                    f"MARKETPLACE_{marketplace_id}_KIND: not set, but {names} is; set it to "
                    "'backmarket' or 'refurbed'"
                )
            else:
                problems.extend(_misplaced_variables(marketplace_id, given))
                marketplaces[marketplace_id] = given
        overrides = {**overrides, "marketplaces": marketplaces}
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        for error in exc.errors():
            problems.append(f"{_variable_of(error['loc'])}: {error['msg']}")
        settings = None
    if problems or settings is None:
        raise ConfigurationError("invalid configuration: " + "; ".join(problems))
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
