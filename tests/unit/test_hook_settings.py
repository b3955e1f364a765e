"""Reading a connection: host normalisation, key header, extras, and the key kept out of repr."""

from __future__ import annotations

import logging

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_runway.exceptions import EachlabsAuthError
from airflow_runway.hooks.settings import (
    DEFAULT_BASE_URL,
    DEPRECATED_KEY_HEADER_EXTRA,
    KEY_HEADER_EXTRA,
    EachlabsSettings,
    normalize_base_url,
)

KEY = "sk-live-0123456789"


@pytest.mark.parametrize(
    ("host", "port", "schema", "expected"),
    [
        (None, None, None, DEFAULT_BASE_URL),
        ("", None, None, DEFAULT_BASE_URL),
        ("   ", None, None, DEFAULT_BASE_URL),
        ("api.eachlabs.ai", None, None, "https://api.eachlabs.ai"),
        ("https://api.eachlabs.ai/", None, None, "https://api.eachlabs.ai"),
        ("https://api.eachlabs.ai/v1/", None, None, "https://api.eachlabs.ai"),
        ("HTTPS://API.eachlabs.ai", None, None, "https://api.eachlabs.ai"),
        ("http://127.0.0.1:8089", None, None, "http://127.0.0.1:8089"),
        ("http://localhost", 8089, None, "http://localhost:8089"),
        ("localhost", 8089, None, "https://localhost:8089"),
        ("localhost", 8089, "http", "http://localhost:8089"),
        ("localhost", None, "ftp", "https://localhost"),
        ("http://localhost:1111", 2222, None, "http://localhost:2222"),
        ("https://proxy.example.com/eachlabs/", None, None, "https://proxy.example.com/eachlabs"),
        ("http://[::1]:8089", None, None, "http://[::1]:8089"),
    ],
)
def test_normalize_base_url(host, port, schema, expected):
    assert normalize_base_url(host, port, schema) == expected


@pytest.mark.parametrize("host", ["ftp://api.eachlabs.ai", "http://", "https:///v1"])
def test_invalid_hosts_are_refused(host):
    with pytest.raises(ValueError, match="http"):
        normalize_base_url(host)


def settings(**kwargs) -> EachlabsSettings:
    fields = {"host": None, "port": None, "schema": None, "password": KEY, "extra": {}}
    fields.update(kwargs)
    return EachlabsSettings.from_connection("eachlabs_default", **fields)


def test_defaults():
    read = settings()
    assert read.base_url == DEFAULT_BASE_URL
    assert read.rate_limit_per_minute == 60
    assert read.timeout == 30
    assert read.max_attempts == 5


def test_x_api_key_header_by_default():
    headers = settings().headers
    assert headers["X-API-Key"] == KEY
    assert "Authorization" not in headers
    assert headers["Accept"] == "application/json"


@pytest.mark.parametrize("value", ["bearer", "Bearer", " BEARER "])
def test_bearer_header_from_the_extra(value):
    headers = settings(extra={"key_header": value}).headers
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert "X-API-Key" not in headers


@pytest.mark.parametrize("value", [None, "", "x-api-key", "X-API-Key"])
def test_x_api_key_spellings(value):
    assert "X-API-Key" in settings(extra={"key_header": value}).headers


def test_unknown_key_header_is_a_clear_error():
    with pytest.raises(ValueError, match="'key_header'"):
        settings(extra={"key_header": "basic"})
    with pytest.raises(ValueError, match="'auth_header'"):
        settings(extra={"auth_header": "basic"})


def test_the_extra_name_is_not_one_airflow_masks():
    """Airflow hides (and its UI form saves as ``***``) the values of extras whose name looks secret."""
    from airflow.sdk._shared.secrets_masker import should_hide_value_for_key

    from airflow_runway.get_provider_info import CONN_FIELDS

    assert KEY_HEADER_EXTRA in CONN_FIELDS
    assert DEPRECATED_KEY_HEADER_EXTRA not in CONN_FIELDS  # masked from Airflow 3.3 on ("auth_header" joined the list)
    assert not [name for name in CONN_FIELDS if should_hide_value_for_key(name)]


def test_the_deprecated_name_is_still_read_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="airflow_runway.hooks.settings"):
        headers = settings(extra={"auth_header": "bearer"}).headers
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert "'auth_header' is deprecated" in caplog.text
    assert "'key_header'" in caplog.text


def test_the_new_name_wins_over_the_deprecated_one():
    assert "X-API-Key" in settings(extra={"key_header": "x-api-key", "auth_header": "bearer"}).headers
    assert "Authorization" in settings(extra={"key_header": "", "auth_header": "bearer"}).headers


@pytest.mark.parametrize(
    "extra",
    [
        {"auth_header": "***"},  # a connection saved untouched from Airflow's form before the rename
        {"key_header": "***"},  # a deployment whose sensitive_var_conn_names also masks "key_header"
        {"key_header": "***", "auth_header": "***"},
    ],
)
def test_the_masked_placeholder_is_ignored_with_a_warning(extra, caplog):
    with caplog.at_level(logging.WARNING, logger="airflow_runway.hooks.settings"):
        read = settings(extra=extra)
    assert read.auth_scheme == "x-api-key"
    assert read.headers["X-API-Key"] == KEY
    assert "masked placeholder" in caplog.text


@pytest.mark.parametrize("password", [None, "", "   "])
def test_missing_key_is_a_clear_permanent_error(password):
    with pytest.raises(EachlabsAuthError, match="has no API key") as caught:
        settings(password=password)
    assert isinstance(caught.value, AirflowFailException)
    assert "eachlabs_default" in str(caught.value)


def test_extras_are_read_including_strings_from_the_ui():
    read = settings(extra={"rate_limit_per_minute": "120", "timeout": 5, "max_attempts": "3"})
    assert (read.rate_limit_per_minute, read.timeout, read.max_attempts) == (120.0, 5.0, 3)


def test_explicit_arguments_win_over_extras():
    read = EachlabsSettings.from_connection(
        "c",
        host=None,
        port=None,
        schema=None,
        password=KEY,
        extra={"timeout": 5, "max_attempts": 3},
        timeout=1.5,
        max_attempts=7,
    )
    assert (read.timeout, read.max_attempts) == (1.5, 7)


@pytest.mark.parametrize(
    "extra",
    [
        {"rate_limit_per_minute": 0},
        {"rate_limit_per_minute": "lots"},
        {"timeout": -1},
        {"max_attempts": 2.5},
        {"max_attempts": True},
        {"timeout": "inf"},
    ],
)
def test_invalid_extras_are_clear_errors(extra):
    with pytest.raises(ValueError, match=next(iter(extra))):
        settings(extra=extra)


def test_the_key_is_not_in_repr():
    for scheme in ("x-api-key", "bearer"):
        read = settings(extra={"key_header": scheme})
        assert KEY not in repr(read)
        assert KEY not in str(read)
