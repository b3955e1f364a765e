"""The hook without a network: connection lookup, requests it sends, create-retry rule, test_connection, registry."""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any
from unittest import mock

import pytest
import requests
from airflow.sdk import BaseHook, Connection
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import MaxRetryError, NewConnectionError

from airflow_runway.exceptions import (
    EachlabsAuthError,
    EachlabsConnectionError,
    EachlabsMalformedResponseError,
    EachlabsServerError,
)
from airflow_runway.hooks.eachlabs import EachlabsHook
from airflow_runway.hooks.retry import EachlabsRetryPolicy
from airflow_runway.hooks.session import POOL_SIZE, SessionRegistry, make_limiter
from airflow_runway.models import PredictionStatus

KEY = "sk-live-0123456789"
RUNWAY_INPUT = {"promptText": "a lighthouse", "model": "gen3a_turbo", "ratio": "16:9", "duration": "5"}


def set_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str = "eachlabs_default", **fields: Any) -> None:
    fields.setdefault("password", KEY)
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "eachlabs", **fields}))


@pytest.fixture(autouse=True)
def connection(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, host="http://eachlabs.test")


def response(status: int, payload: Any = None, headers: dict[str, str] | None = None) -> requests.Response:
    answer = requests.Response()
    answer.status_code = status
    answer._content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    answer.headers = CaseInsensitiveDict(headers or {})
    answer.reason = HTTPStatus(status).phrase
    return answer


def refused() -> requests.ConnectionError:
    reason = NewConnectionError(mock.Mock(), "Failed to establish a new connection: [Errno 111] Connection refused")
    return requests.ConnectionError(MaxRetryError(mock.Mock(), "/v1/prediction/", reason))


class FakeSession:
    """Answers (or raises) from a script, recording every request."""

    def __init__(self, *script: requests.Response | BaseException) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        self.requests.append({"method": method, "url": url, **kwargs})
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        pass


def hook_with(*script: requests.Response | BaseException, **kwargs: Any) -> tuple[EachlabsHook, FakeSession, list]:
    sleeps: list[float] = []
    hook = EachlabsHook(**kwargs)
    hook.retry_policy = EachlabsRetryPolicy(max_attempts=kwargs.get("max_attempts", 5), sleep=sleeps.append)
    session = FakeSession(*script)
    hook._session = session  # type: ignore[assignment]
    return hook, session, sleeps


class TestIdentity:
    def test_connection_type_attributes(self):
        assert EachlabsHook.conn_name_attr == "eachlabs_conn_id"
        assert EachlabsHook.default_conn_name == "eachlabs_default"
        assert EachlabsHook.conn_type == "eachlabs"
        assert EachlabsHook.hook_name == "Eachlabs"
        assert isinstance(EachlabsHook(), BaseHook)
        assert EachlabsHook.get_ui_field_behaviour()["relabeling"]["password"] == "API key"

    def test_the_key_is_never_in_repr(self):
        hook = EachlabsHook()
        assert hook.settings.api_key == KEY
        assert KEY not in repr(hook)
        assert KEY not in repr(hook.settings)
        assert repr(hook) == "EachlabsHook(eachlabs_conn_id='eachlabs_default')"

    @pytest.mark.parametrize(
        "kwargs",
        [{"timeout": 0}, {"max_attempts": 0}, {"retry_wait_min": -1}, {"retry_wait_min": 2, "retry_wait_max": 1}],
    )
    def test_rejects_nonsense_arguments(self, kwargs):
        with pytest.raises(ValueError):
            EachlabsHook(**kwargs)


class TestConnection:
    def test_env_connection_is_read_once(self, monkeypatch):
        set_connection(monkeypatch, "my_eachlabs", host="localhost", port=8089, extra={"key_header": "bearer"})
        hook = EachlabsHook("my_eachlabs")
        with mock.patch.object(EachlabsHook, "get_connection", wraps=EachlabsHook.get_connection) as lookup:
            assert hook.settings.base_url == "https://localhost:8089"
            assert hook.settings.headers["Authorization"] == f"Bearer {KEY}"
            hook.settings  # noqa: B018 - cached
        assert lookup.call_count == 1

    def test_extras_apply_when_arguments_are_left_at_their_defaults(self, monkeypatch):
        set_connection(monkeypatch, extra={"timeout": 5, "max_attempts": 2, "rate_limit_per_minute": 30})
        hook = EachlabsHook()
        assert (hook.settings.timeout, hook.settings.max_attempts, hook.settings.rate_limit_per_minute) == (5, 2, 30)
        assert hook._policy(hook.settings).max_attempts == 2
        explicit = EachlabsHook(timeout=1.0, max_attempts=4, retry_wait_min=0.1, retry_wait_max=0.2)
        assert (explicit.settings.timeout, explicit.settings.max_attempts) == (1.0, 4)
        assert explicit._policy(explicit.settings) == EachlabsRetryPolicy(max_attempts=4, wait_min=0.1, wait_max=0.2)

    def test_missing_key_is_an_auth_error_not_a_key_error(self, monkeypatch):
        set_connection(monkeypatch, password="")
        with pytest.raises(EachlabsAuthError, match="no API key"):
            EachlabsHook().get_prediction("abc")

    async def test_async_lookup_is_done_once_and_async_where_airflow_allows(self):
        # Airflow >= 3.3.2 masks secrets asynchronously (Connection.aextra_dejson): aget_connection is safe there.
        # On 3.2 the sync lookup runs in a thread instead (next test).
        native = hasattr(Connection, "aextra_dejson")
        hook = EachlabsHook()
        with (
            mock.patch.object(EachlabsHook, "aget_connection", wraps=EachlabsHook.aget_connection) as alookup,
            mock.patch.object(EachlabsHook, "get_connection", wraps=EachlabsHook.get_connection) as lookup,
        ):
            settings = await hook.aget_settings()
            await hook.aget_settings()
        assert settings.base_url == "http://eachlabs.test"
        assert (alookup.call_count, lookup.call_count) == ((1, 0) if native else (0, 1))

    async def test_async_lookup_falls_back_to_a_thread_on_older_airflow(self, monkeypatch):
        # Before 3.3.2 aget_connection masked secrets with a blocking supervisor call; Connection had no
        # aextra_dejson. Then the sync lookup must run off the event loop.
        monkeypatch.delattr(Connection, "aextra_dejson", raising=False)
        set_connection(monkeypatch, host="http://eachlabs.test", extra={"key_header": "bearer"})
        loop_thread = asyncio.get_running_loop()._thread_id  # type: ignore[attr-defined]
        threads: list[int | None] = []
        original = EachlabsHook.get_connection.__func__  # type: ignore[attr-defined]

        def spy(cls, conn_id):
            import threading

            threads.append(threading.get_ident())
            return original(cls, conn_id)

        monkeypatch.setattr(EachlabsHook, "get_connection", classmethod(spy))
        with mock.patch.object(EachlabsHook, "aget_connection") as alookup:
            settings = await EachlabsHook().aget_settings()
        assert alookup.call_count == 0
        assert threads and threads[0] != loop_thread
        assert settings.auth_scheme == "bearer"


class TestSyncRequests:
    def test_create_sends_model_version_input_and_the_key_header(self):
        hook, session, _ = hook_with(response(200, {"status": "success", "predictionID": "p-1"}))
        assert hook.create_prediction("runway", "0.0.1", RUNWAY_INPUT) == "p-1"
        (sent,) = session.requests
        assert sent["method"] == "POST"
        assert sent["url"] == "http://eachlabs.test/v1/prediction/"
        assert sent["json"] == {"model": "runway", "version": "0.0.1", "input": RUNWAY_INPUT}
        assert sent["headers"]["X-API-Key"] == KEY
        assert sent["timeout"] == 30.0

    def test_create_sends_webhook_fields_only_when_given(self):
        hook, session, _ = hook_with(response(201, {"predictionID": "p-2"}))
        hook.create_prediction("runway", "0.0.1", {}, webhook_url="https://hooks.test/x", webhook_secret="s")
        assert session.requests[0]["json"]["webhook_url"] == "https://hooks.test/x"
        assert session.requests[0]["json"]["webhook_secret"] == "s"

    def test_create_retries_a_refused_connection_and_429_and_503(self):
        hook, session, sleeps = hook_with(
            refused(),
            response(429, {"error": "Rate limit exceeded"}, {"Retry-After": "2"}),
            response(503, b"<html><title>503 Service Unavailable</title></html>"),
            response(200, {"predictionID": "p-3"}),
        )
        assert hook.create_prediction("runway", "0.0.1", RUNWAY_INPUT) == "p-3"
        assert len(session.requests) == 4
        assert len(sleeps) == 3 and sleeps[1] >= 2.0

    @pytest.mark.parametrize(
        ("answer", "error_class"),
        [
            (requests.ReadTimeout("Read timed out"), EachlabsConnectionError),
            (requests.ConnectionError("Connection aborted: reset by peer"), EachlabsConnectionError),
            (response(500, {"error": "Failed to create prediction"}), EachlabsServerError),
            (response(502, b"bad gateway"), EachlabsServerError),
            (
                response(200, {"status": "success", "message": "Prediction created successfully"}),
                EachlabsMalformedResponseError,
            ),
            (response(200, b"<html>"), EachlabsMalformedResponseError),
        ],
    )
    def test_create_is_sent_once_when_it_may_have_created_something(self, answer, error_class):
        hook, session, sleeps = hook_with(answer, response(200, {"predictionID": "duplicate"}))
        with pytest.raises(error_class):
            hook.create_prediction("runway", "0.0.1", RUNWAY_INPUT)
        assert len(session.requests) == 1
        assert sleeps == []

    def test_get_state_retries_a_body_without_status(self):
        hook, session, _ = hook_with(
            response(200, {"message": "OK"}),
            response(200, {"id": "p", "status": "success", "output": "https://cdn.test/v.mp4"}),
        )
        state = hook.get_prediction_state("p")
        assert state.status is PredictionStatus.SUCCEEDED
        assert state.video_url == "https://cdn.test/v.mp4"
        assert len(session.requests) == 2

    def test_get_and_cancel_paths(self):
        hook, session, _ = hook_with(
            response(200, {"id": "a/b", "status": "processing"}),
            response(200, {"status": "cancelled", "predictionID": "a/b"}),
        )
        assert hook.get_prediction("a/b")["status"] == "processing"
        assert hook.cancel_prediction("a/b")["status"] == "cancelled"
        assert session.requests[0]["url"] == "http://eachlabs.test/v1/prediction/a%2Fb"
        assert session.requests[1]["method"] == "POST"
        assert session.requests[1]["url"] == "http://eachlabs.test/v1/prediction/a%2Fb/cancel"

    @pytest.mark.parametrize("prediction_id", ["", "  ", None])
    def test_an_empty_prediction_id_is_refused(self, prediction_id):
        with pytest.raises(ValueError):
            EachlabsHook().get_prediction(prediction_id)

    def test_a_key_echoed_by_the_api_is_redacted(self, caplog):
        hook, _, _ = hook_with(
            response(500, {"error": f"key {KEY} is weird"}), response(401, {"error": f"Invalid API key {KEY}"})
        )
        with pytest.raises(EachlabsAuthError) as caught:
            hook.get_prediction("p")
        assert KEY not in str(caught.value)
        assert KEY not in caplog.text

    def test_get_conn_is_reused_and_closed(self):
        hook = EachlabsHook()
        session = hook.get_conn()
        assert hook.get_conn() is session
        with hook:
            pass
        assert hook._session is None


class TestTestConnection:
    @pytest.mark.parametrize(
        ("answer", "expected"),
        [
            (response(404, {"error": "Prediction not found"}), (True, "Connection successfully tested")),
            (response(401, {"error": "Invalid or missing API key"}), (False, "Invalid or missing API key")),
            (response(503, b""), (False, "HTTP 503 Service Unavailable")),
        ],
    )
    def test_outcomes_with_one_request(self, answer, expected):
        hook, session, _ = hook_with(answer, response(404, {"error": "Prediction not found"}))
        assert hook.test_connection() == expected
        assert len(session.requests) == 1
        assert session.requests[0]["method"] == "GET"

    def test_connection_error_gives_its_message(self):
        hook, _, _ = hook_with(refused())
        ok, message = hook.test_connection()
        assert not ok and "Connection refused" in message

    def test_unknown_connection(self):
        ok, message = EachlabsHook("no_such_connection").test_connection()
        assert not ok and "no_such_connection" in message


class TestRegistry:
    async def test_one_lease_per_hook_one_session_per_connection(self):
        registry = SessionRegistry()
        first = registry.lease("c", "http://x", 60)
        second = registry.lease("c", "http://x", 120)
        other = registry.lease("d", "http://x", 60)
        assert first is second and first is not other
        assert first.limiter.interval == 1.0  # 60/min, spread out
        assert registry.leases() == {("c", "http://x"): 2, ("d", "http://x"): 1}
        assert first.session.connector is not None and first.session.connector.limit == POOL_SIZE
        await registry.release(first)
        assert not first.session.closed
        await registry.release(second)
        assert first.session.closed
        assert registry.leases() == {("d", "http://x"): 1}
        await registry.release(other)
        assert len(registry) == 0

    def test_sessions_never_cross_event_loops(self):
        registry = SessionRegistry()

        async def lease_and_keep():
            return registry.lease("c", "http://x", 60)

        first_loop = asyncio.new_event_loop()
        try:
            leaked = first_loop.run_until_complete(lease_and_keep())  # never released
        finally:
            first_loop.close()

        async def in_second_loop():
            fresh = registry.lease("c", "http://x", 60)
            assert fresh is not leaked and fresh.loop is asyncio.get_running_loop()
            assert len(registry) == 1  # the closed loop's entry was forgotten
            await registry.release(leaked)  # a stale lease is harmless
            await registry.release(fresh)
            assert fresh.session.closed

        asyncio.run(in_second_loop())
        assert len(registry) == 0

    def test_a_hook_moved_to_another_loop_takes_a_new_lease(self):
        hook = EachlabsHook()

        async def lease():
            settings = await hook.aget_settings()
            return hook._shared(settings)

        first = asyncio.run(lease())
        second = asyncio.run(lease())
        assert first is not second
        assert first.refs == 0  # handed back when the hook moved
        asyncio.run(hook.aclose())
        assert second.refs == 0

    @pytest.mark.parametrize(("rate", "period"), [(60, 1.0), (120, 0.5), (1, 60.0)])
    def test_budget_is_spread_evenly(self, rate, period):
        limiter = make_limiter(rate)
        assert limiter.interval == pytest.approx(period)
