"""Where the API key goes: only to the configured host, never along a redirect, never with ambient credentials.

Real loopback HTTP: the emulator is the API; a second loopback server (:class:`RecordingServer`) stands for
"another host" (a redirect target, a proxy) or for the API itself when the exact headers received matter.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_runway.exceptions import EachlabsRedirectError
from airflow_runway.hooks.eachlabs import EachlabsHook
from airflow_runway.models import PredictionStatus
from tests.fixtures.emulator import RUNWAY_INPUT
from tests.fixtures.recording import Canned, RecordingServer

pytestmark = pytest.mark.integration

CONN_ID = "eachlabs_default"
SYNC_CALLS: dict[str, Callable[[EachlabsHook], Any]] = {
    "create": lambda hook: hook.create_prediction(model="runway", version="0.0.1", input=RUNWAY_INPUT),
    "get": lambda hook: hook.get_prediction("p-123"),
    "cancel": lambda hook: hook.cancel_prediction("p-123"),
}
ASYNC_CALLS: dict[str, Callable[[EachlabsHook], Any]] = {
    "get": lambda hook: hook.aget_prediction("p-123"),
    "cancel": lambda hook: hook.acancel_prediction("p-123"),
}


@pytest.fixture
def other_host() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


@pytest.fixture
def connect(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    def _connect(host: str, key: str, **extra: Any) -> None:
        conn = {"conn_type": "eachlabs", "host": host, "password": key, "extra": extra}
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))

    return _connect


@pytest.fixture
def netrc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A real netrc file (``$NETRC``) with Basic credentials for 127.0.0.1, where every test server listens."""
    path = tmp_path / "netrc"
    path.write_text("machine 127.0.0.1 login netrc-user password netrc-secret\n")
    path.chmod(0o600)
    monkeypatch.setenv("NETRC", str(path))
    return "netrc-secret"


def assert_key_sent_only_as_configured(received: Any, key: str, auth_header: str) -> None:
    if auth_header == "bearer":
        assert received.header("Authorization") == f"Bearer {key}"
        assert received.header("X-API-Key") is None
    else:
        assert received.header("X-API-Key") == key
        assert received.header("Authorization") is None


# ---- 10. no redirects -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("call", sorted(SYNC_CALLS))
def test_sync_api_calls_never_follow_a_redirect(emulator, connect, other_host, call, status):
    connect(emulator.url, emulator.api_key)
    emulator.inject(route=call, kind="redirect", status=status, location=f"{other_host.url}/steal?token=abc")
    with EachlabsHook(CONN_ID) as hook, pytest.raises(EachlabsRedirectError) as raised:
        SYNC_CALLS[call](hook)
    assert other_host.received == []  # the key never left for the other host
    message = str(raised.value)
    assert f"HTTP {status}" in message
    assert f"'127.0.0.1:{other_host.port}'" in message
    assert "token=abc" not in message and emulator.api_key not in message
    assert not raised.value.transient  # a configuration error: not retried, and a create is not "uncertain"
    stats = emulator.stats()
    assert stats[{"create": "create_requests", "get": "gets", "cancel": "cancels"}[call]] == 1
    assert stats["creates"] == 0


@pytest.mark.parametrize("status", [302, 307])
@pytest.mark.parametrize("call", sorted(ASYNC_CALLS))
async def test_async_api_calls_never_follow_a_redirect(emulator, connect, other_host, call, status):
    connect(emulator.url, emulator.api_key, rate_limit_per_minute=600_000)
    emulator.inject(route=call, kind="redirect", status=status, location=f"{other_host.url}/steal")
    async with EachlabsHook(CONN_ID) as hook:
        with pytest.raises(EachlabsRedirectError, match=f"HTTP {status} .*'127.0.0.1:{other_host.port}'"):
            await ASYNC_CALLS[call](hook)
    assert other_host.received == []
    assert emulator.stats()[{"get": "gets", "cancel": "cancels"}[call]] == 1


# ---- 11. no ambient credentials ---------------------------------------------------------------------------------


@pytest.mark.parametrize("auth_header", ["x-api-key", "bearer"])
def test_sync_requests_ignore_netrc(connect, other_host, netrc, auth_header):
    other_host.canned = Canned(body=b'{"id": "p-1", "status": "running"}')
    connect(other_host.url, "the-key", auth_header=auth_header)
    with EachlabsHook(CONN_ID) as hook:
        assert hook.get_prediction("p-1")["status"] == "running"
        hook.cancel_prediction("p-1")
    assert len(other_host.received) == 2
    for received in other_host.received:
        assert_key_sent_only_as_configured(received, "the-key", auth_header)


@pytest.mark.parametrize("auth_header", ["x-api-key", "bearer"])
async def test_async_requests_ignore_netrc(connect, other_host, netrc, auth_header):
    other_host.canned = Canned(body=b'{"id": "p-1", "status": "running"}')
    connect(other_host.url, "the-key", auth_header=auth_header, rate_limit_per_minute=600_000)
    async with EachlabsHook(CONN_ID) as hook:
        assert (await hook.aget_prediction("p-1"))["status"] == "running"
        await hook.acancel_prediction("p-1")
    assert len(other_host.received) == 2
    for received in other_host.received:
        assert_key_sent_only_as_configured(received, "the-key", auth_header)


@pytest.mark.parametrize("auth_header", ["x-api-key", "bearer"])
async def test_the_emulator_accepts_the_key_with_a_netrc_present(emulator, connect, netrc, auth_header):
    connect(emulator.url, emulator.api_key, auth_header=auth_header, rate_limit_per_minute=600_000)
    with EachlabsHook(CONN_ID) as hook:
        pid = hook.create_prediction(model="runway", version="0.0.1", input=RUNWAY_INPUT)
        assert hook.get_prediction_state(pid).status is not PredictionStatus.FAILED
    async with EachlabsHook(CONN_ID) as hook:
        assert (await hook.aget_prediction_state(pid)).id == pid
    assert emulator.stats()["create_requests"] == 1


@pytest.fixture
def proxy(other_host: RecordingServer, monkeypatch: pytest.MonkeyPatch) -> RecordingServer:
    """The recording server as the environment's HTTP proxy (NO_PROXY still lists loopback only)."""
    other_host.canned = Canned(body=b'{"id": "p-1", "status": "running"}')
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, other_host.url)
    return other_host


def test_sync_requests_honour_the_proxy_variables(connect, proxy, netrc):
    connect("http://api.eachlabs.invalid", "the-key")
    with EachlabsHook(CONN_ID) as hook:
        assert hook.get_prediction("p-1")["status"] == "running"
    (received,) = proxy.received
    assert received.target == "http://api.eachlabs.invalid/v1/prediction/p-1"
    assert received.header("Proxy-Authorization") is None and received.header("Authorization") is None


async def test_async_requests_honour_the_proxy_variables(connect, proxy, netrc):
    connect("http://api.eachlabs.invalid", "the-key", rate_limit_per_minute=600_000)
    async with EachlabsHook(CONN_ID) as hook:
        assert (await hook.aget_prediction("p-1"))["status"] == "running"
    (received,) = proxy.received
    assert received.target == "http://api.eachlabs.invalid/v1/prediction/p-1"
    assert received.header("Proxy-Authorization") is None and received.header("Authorization") is None
