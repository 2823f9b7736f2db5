"""Settings: the contract's defaults, environment overrides, start-up errors naming the variable."""

from __future__ import annotations

import os
import re

import pytest
from pydantic import SecretStr

from app.config import ConfigurationError, Settings, load_settings

CONTRACT_VARIABLES = (
    "DATABASE_URL",
    "BACKMARKET_BASE_URL",
    "BACKMARKET_TOKEN",
    "BACKMARKET_USER_AGENT",
    "BACKMARKET_MARKETS",
    "BACKMARKET_REQUESTS_PER_10S",
    "BACKMARKET_UPDATES_PER_HOUR",
    "SYNC_INTERVAL_MINUTES",
    "API_KEYS",
    "CORS_ORIGINS",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing from the developer's shell reaches the settings (names are case-insensitive)."""
    settings_variables = {name.upper() for name in Settings.model_fields}
    assert set(CONTRACT_VARIABLES) <= settings_variables
    for name in list(os.environ):
        if name.upper() in settings_variables:
            monkeypatch.delenv(name)


def test_defaults_are_the_contract_defaults() -> None:
    settings = load_settings()

    assert settings.database_url == "sqlite+aiosqlite:///./stock_sync.db"
    assert settings.backmarket_base_url == "https://www.backmarket.fr"
    assert settings.backmarket_token is None
    assert settings.backmarket_markets == ["fr-fr"]
    assert settings.backmarket_requests_per_10s == 20
    assert settings.backmarket_updates_per_hour == 2000
    assert settings.sync_interval_minutes == 360
    assert settings.api_keys == []
    assert settings.cors_origins == []


def test_default_user_agent_has_the_documented_company_integration_email_form() -> None:
    user_agent = load_settings().backmarket_user_agent

    assert re.fullmatch(r"BM-[A-Za-z0-9]+-[A-Za-z0-9]+;[^@\s;]+@[^@\s;]+\.[a-z]+", user_agent)


def test_environment_variables_override_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql+aiomysql://stock:pw@db.internal:3306/shop")
    monkeypatch.setenv("BACKMARKET_BASE_URL", "https://preprod.backmarket.fr/")
    monkeypatch.setenv("BACKMARKET_TOKEN", "dG9rZW4=")
    monkeypatch.setenv("BACKMARKET_USER_AGENT", "BM-Acme-StockSync;dev@acme.test")
    monkeypatch.setenv("BACKMARKET_REQUESTS_PER_10S", "5")
    monkeypatch.setenv("BACKMARKET_UPDATES_PER_HOUR", "500")
    monkeypatch.setenv("SYNC_INTERVAL_MINUTES", "15")

    settings = load_settings()

    assert settings.database_url == "mysql+aiomysql://stock:pw@db.internal:3306/shop"
    assert settings.backmarket_base_url == "https://preprod.backmarket.fr"
    assert settings.backmarket_token is not None
    assert settings.backmarket_token.get_secret_value() == "dG9rZW4="
    assert settings.backmarket_user_agent == "BM-Acme-StockSync;dev@acme.test"
    assert settings.backmarket_requests_per_10s == 5
    assert settings.backmarket_updates_per_hour == 500
    assert settings.sync_interval_minutes == 15


def test_comma_list_variables_are_split_and_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKMARKET_MARKETS", " fr-fr , de-DE,es-es ")
    monkeypatch.setenv("API_KEYS", "key-one, key-two ,,")
    monkeypatch.setenv("CORS_ORIGINS", "https://ui.example.com , http://localhost:5173")

    settings = load_settings()

    assert settings.backmarket_markets == ["fr-fr", "de-de", "es-es"]
    assert settings.api_keys == ["key-one", "key-two"]
    assert settings.cors_origins == ["https://ui.example.com", "http://localhost:5173"]


def test_empty_api_keys_leaves_the_api_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", "")

    assert load_settings().api_keys == []


def test_sync_interval_zero_is_accepted_to_turn_the_schedule_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SYNC_INTERVAL_MINUTES", "0")

    assert load_settings().sync_interval_minutes == 0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BACKMARKET_REQUESTS_PER_10S", "twenty"),
        ("BACKMARKET_REQUESTS_PER_10S", "0"),
        ("BACKMARKET_UPDATES_PER_HOUR", "1.5"),
        ("SYNC_INTERVAL_MINUTES", "-5"),
        ("SYNC_INTERVAL_MINUTES", "often"),
        ("BACKMARKET_MARKETS", "france"),
        ("BACKMARKET_MARKETS", "fr-fr,fr_be"),
        ("BACKMARKET_MARKETS", " , "),
        ("DATABASE_URL", "mysql://root@127.0.0.1:3306/shop"),
        ("DATABASE_URL", "sqlite:///./stock_sync.db"),
        ("BACKMARKET_BASE_URL", "www.backmarket.fr"),
    ],
)
def test_invalid_value_raises_configuration_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigurationError, match=variable):
        load_settings()


def test_configuration_error_names_every_invalid_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNC_INTERVAL_MINUTES", "-1")
    monkeypatch.setenv("BACKMARKET_MARKETS", "france")

    with pytest.raises(ConfigurationError) as raised:
        load_settings()

    assert "SYNC_INTERVAL_MINUTES" in str(raised.value)
    assert "BACKMARKET_MARKETS" in str(raised.value)


def test_token_is_a_secret_kept_out_of_the_settings_text(monkeypatch: pytest.MonkeyPatch) -> None:
    token = "bm-t0ken-4f9a8c7e6d"
    monkeypatch.setenv("BACKMARKET_TOKEN", token)

    settings = load_settings()

    assert isinstance(settings.backmarket_token, SecretStr)
    assert settings.backmarket_token.get_secret_value() == token
    assert token not in repr(settings)
    assert token not in str(settings)


def test_configuration_error_does_not_echo_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    token = "bm-t0ken-4f9a8c7e6d"
    monkeypatch.setenv("BACKMARKET_TOKEN", token)
    monkeypatch.setenv("DATABASE_URL", "postgresql://nope")

    with pytest.raises(ConfigurationError) as raised:
        load_settings()

    assert token not in str(raised.value)
