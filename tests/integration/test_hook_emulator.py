"""The hook over real loopback HTTP against the emulator: every fault, the create-retry rule, the shared pool and
the shared rate budget.

The connection comes from an ``AIRFLOW_CONN_*`` environment variable: outside a task the task SDK's connection
lookup (sync and async) falls back to its environment-variable secrets backend, so no supervisor is needed.
Sleeps between retries are recorded, not slept, so waits are asserted exactly and without wall-clock timing.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_runway.emulator import EmulatorConfig, EmulatorServer
from airflow_runway.exceptions import (
    EachlabsAuthError,
    EachlabsConnectionError,
    EachlabsError,
    EachlabsInvalidInputError,
    EachlabsMalformedResponseError,
    EachlabsNotFoundError,
    EachlabsPaymentRequiredError,
    EachlabsServerError,
)
from airflow_runway.hooks.eachlabs import EachlabsHook
from airflow_runway.hooks.retry import EachlabsRetryPolicy
from airflow_runway.hooks.session import POOL_SIZE, SESSIONS
from airflow_runway.models import PredictionStatus

pytestmark = pytest.mark.integration

KEY = "sk-emulator-0123456789"
CONN_ID = "eachlabs_default"
BASE = EmulatorConfig(api_key=KEY, duration=10, speed=100, max_in_flight=None)
RUNWAY_INPUT = {
    "promptText": "a lighthouse in a storm",
    "model": "gen3a_turbo",
    "ratio": "16:9",
    "duration": "10",
    "watermark": "false",
    "seed": None,
}
#: Generous: the emulator answers in milliseconds, and a timeout here is never what a test measures.
TIMEOUT = 5.0


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer(BASE, port=0) as server:
        yield server


@pytest.fixture(autouse=True)
def fresh(emu: EmulatorServer) -> None:
    emu.configure(**BASE.to_dict())
    emu.reset()


Connect = Callable[..., None]


@pytest.fixture
def connect(emu: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> Connect:
    """Point ``eachlabs_default`` at the emulator (or ``host``), with ``extra``; a large budget by default."""

    def _connect(*, host: str | None = None, password: str = KEY, **extra: Any) -> None:
        extra.setdefault("rate_limit_per_minute", 600_000)
        conn = {"conn_type": "eachlabs", "host": host or emu.url, "password": password, "extra": extra}
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))

    _connect()
    return _connect


class Sleeps(list):
    """Recorded retry waits, for the sync and the async path."""

    def sleep(self, seconds: float) -> None:
        self.append(seconds)

    async def async_sleep(self, seconds: float) -> None:
        self.append(seconds)


def make_hook(sleeps: Sleeps | None = None, *, max_attempts: int = 5, timeout: float = TIMEOUT) -> EachlabsHook:
    hook = EachlabsHook(CONN_ID, timeout=timeout, max_attempts=max_attempts, retry_wait_min=0.01, retry_wait_max=0.05)
    if sleeps is not None:
        hook.retry_policy = EachlabsRetryPolicy(
            max_attempts=max_attempts, wait_min=0.01, wait_max=0.05, sleep=sleeps.sleep, async_sleep=sleeps.async_sleep
        )
    return hook


def create(hook: EachlabsHook, **kwargs: Any) -> str:
    return hook.create_prediction(model="runway", version="0.0.1", input=RUNWAY_INPUT, **kwargs)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Faults on a read: each is retried, then the read succeeds. ``slow`` needs a timeout shorter than its delay.
GET_FAULTS: list[dict[str, Any]] = [
    {"kind": "http", "status": 500},
    {"kind": "http", "status": 502},
    {"kind": "http", "status": 503},
    {"kind": "http", "status": 504},
    {"kind": "http", "status": 429},
    {"kind": "http", "status": 429, "retry_after": 1},
    {"kind": "http", "status": 503, "retry_after": 2},
    {"kind": "reset"},
    {"kind": "slow", "delay": 1.0},
    {"kind": "malformed"},
    {"kind": "malformed_json_object"},
]


def fault_id(value: Any) -> str | None:
    """A fault's id: its values joined (other parameters get pytest's default id)."""
    return "-".join(str(item) for item in value.values()) if isinstance(value, dict) else None


# ---- sync -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key_header", ["x-api-key", "bearer"])
def test_sync_round_trip(emu, connect, key_header):
    connect(key_header=key_header)
    with make_hook() as hook:
        pid = create(hook, webhook_url=None)
        assert emu.prediction(pid)["auth_scheme"] == key_header
        assert hook.get_prediction_state(pid).status is PredictionStatus.PENDING
        assert hook.get_prediction(pid)["id"] == pid
        emu.advance(20)
        done = hook.get_prediction_state(pid)
        assert done.status is PredictionStatus.SUCCEEDED
        assert done.video_url and done.video_url.startswith(emu.url)
        assert hook.cancel_prediction(pid)["predictionID"] == pid
    stats = emu.stats()
    assert (stats["creates"], stats["create_requests"], stats["gets"], stats["cancels"]) == (1, 1, 3, 1)


def test_sync_cancel_of_a_running_prediction(emu, connect):
    with make_hook() as hook:
        pid = create(hook)
        assert hook.cancel_prediction(pid)["status"] == "cancelled"
        assert hook.get_prediction_state(pid).status is PredictionStatus.CANCELLED


@pytest.mark.parametrize("fault", GET_FAULTS, ids=fault_id)
def test_sync_get_faults_are_retried(emu, connect, fault):
    sleeps = Sleeps()
    with make_hook(sleeps, timeout=0.3 if fault["kind"] == "slow" else TIMEOUT) as hook:
        pid = create(hook)
        emu.inject(route="get", times=2, **fault)
        assert hook.get_prediction_state(pid).id == pid
    stats = emu.stats()
    assert stats["gets"] == 3
    assert stats["faults_applied"] == 2
    assert len(sleeps) == 2
    if "retry_after" in fault:
        assert all(wait >= fault["retry_after"] for wait in sleeps)


def test_sync_get_gives_up_with_the_last_typed_error(emu, connect):
    sleeps = Sleeps()
    with make_hook(sleeps, max_attempts=3) as hook:
        pid = create(hook)
        emu.inject(route="get", kind="http", status=503, times=5)
        with pytest.raises(EachlabsServerError) as caught:
            hook.get_prediction(pid)
    assert caught.value.http_status == 503
    assert emu.stats()["gets"] == 3


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "http", "status": 429},  # the newer body: "too many requests"
        {"kind": "http", "status": 429, "retry_after": 1},  # the older body, with Retry-After
        {"kind": "http", "status": 503},
    ],
    ids=fault_id,
)
def test_create_is_retried_when_nothing_was_created(emu, connect, fault):
    sleeps = Sleeps()
    with make_hook(sleeps) as hook:
        emu.inject(route="create", times=2, **fault)
        pid = create(hook)
    stats = emu.stats()
    assert (stats["creates"], stats["create_requests"]) == (1, 3)
    assert emu.prediction(pid)["id"] == pid
    assert len(sleeps) == 2
    if "retry_after" in fault:
        assert sleeps == [pytest.approx(1.0, abs=0.06)] * 2 and min(sleeps) >= 1.0


def test_create_honours_429_from_the_concurrency_cap(emu, connect):
    emu.configure(max_in_flight=1)
    sleeps = Sleeps()
    with make_hook(sleeps, max_attempts=2) as hook:
        create(hook)
        with pytest.raises(EachlabsError) as caught:
            create(hook)
    assert caught.value.http_status == 429
    assert "too many requests" in str(caught.value)
    assert emu.stats()["create_requests"] == 3  # 1 + 2 attempts, never more


@pytest.mark.parametrize(
    ("fault", "error_class", "created"),
    [
        ({"kind": "http", "status": 500}, EachlabsServerError, 0),
        ({"kind": "http", "status": 502}, EachlabsServerError, 0),
        ({"kind": "http", "status": 504}, EachlabsServerError, 0),
        ({"kind": "reset"}, EachlabsConnectionError, 0),
        ({"kind": "reset_after_create"}, EachlabsConnectionError, 1),
        ({"kind": "slow_after_create", "delay": 1.0}, EachlabsConnectionError, 1),
        ({"kind": "malformed"}, EachlabsMalformedResponseError, 0),
        ({"kind": "malformed_json_object"}, EachlabsMalformedResponseError, 0),
    ],
    ids=fault_id,
)
def test_create_is_never_sent_twice_when_it_may_have_created_something(emu, connect, fault, error_class, created):
    sleeps = Sleeps()
    with make_hook(sleeps, timeout=0.3) as hook:
        emu.inject(route="create", **fault)
        with pytest.raises(error_class) as caught:
            create(hook)
    if isinstance(caught.value, EachlabsConnectionError):
        assert caught.value.request_sent is True
    stats = emu.stats()
    assert stats["create_requests"] == 1
    assert stats["creates"] == created
    assert sleeps == []


@pytest.mark.parametrize(
    ("setup", "kwargs", "error_class", "message"),
    [
        ({"password": "wrong-key"}, {}, EachlabsAuthError, "Invalid or missing API key"),
        ({"payment_required": True}, {}, EachlabsPaymentRequiredError, "payment required: insufficient balance"),
        ({}, {"input": {**RUNWAY_INPUT, "ratio": "4:3"}}, EachlabsInvalidInputError, "Invalid input for model: ratio"),
        ({}, {"webhook_url": "ftp://hooks.test"}, EachlabsInvalidInputError, "webhook_url must be an http(s) URL"),
    ],
    ids=["401", "402", "400", "422"],
)
def test_permanent_create_errors_fail_at_once_with_the_apis_message(emu, connect, setup, kwargs, error_class, message):
    if "password" in setup:
        connect(password=setup["password"])
    elif setup:
        emu.configure(**setup)
    sleeps = Sleeps()
    with make_hook(sleeps) as hook, pytest.raises(error_class) as caught:
        hook.create_prediction(model="runway", version="0.0.1", **{"input": RUNWAY_INPUT, **kwargs})
    assert str(caught.value).startswith(message)
    assert KEY not in str(caught.value)
    stats = emu.stats()
    assert (stats["create_requests"], stats["creates"], stats["requests"]) == (1, 0, 1)
    assert sleeps == []


def test_unknown_prediction_is_not_found_after_one_request(emu, connect):
    with make_hook(Sleeps()) as hook, pytest.raises(EachlabsNotFoundError, match="Prediction not found"):
        hook.get_prediction_state("does-not-exist")
    assert emu.stats()["gets"] == 1


def test_refused_connection_is_retried_for_create_then_raised(connect):
    connect(host=f"http://127.0.0.1:{closed_port()}")
    sleeps = Sleeps()
    with make_hook(sleeps, max_attempts=3) as hook, pytest.raises(EachlabsConnectionError) as caught:
        create(hook)
    assert caught.value.request_sent is False
    assert len(sleeps) == 2  # three attempts


def test_test_connection(emu, connect):
    assert make_hook().test_connection() == (True, "Connection successfully tested")
    assert emu.stats()["gets"] == 1
    connect(password="wrong-key")
    assert make_hook().test_connection() == (False, "Invalid or missing API key")
    connect(host=f"http://127.0.0.1:{closed_port()}")
    ok, message = make_hook().test_connection()
    assert not ok and "could not connect" in message


def test_the_key_never_reaches_logs_or_errors(emu, connect, caplog, capfd):
    with make_hook(max_attempts=2) as hook:
        pid = create(hook)
        emu.inject(route="get", kind="http", status=503, times=5)
        with pytest.raises(EachlabsServerError) as server_error:
            hook.get_prediction(pid)
        emu.inject(route="create", kind="http", status=500)
        with pytest.raises(EachlabsServerError) as create_error:
            create(hook)
    connect(password="wrong-key")
    with make_hook() as hook, pytest.raises(EachlabsAuthError) as auth_error:
        hook.get_prediction(pid)
    out, err = capfd.readouterr()
    assert "retrying in" in caplog.text + out + err  # the retries were logged ...
    for text in (caplog.text, out, err, str(server_error.value), str(create_error.value), str(auth_error.value)):
        assert KEY not in text  # ... without the key


# ---- async ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key_header", ["x-api-key", "bearer"])
async def test_async_round_trip(emu, connect, key_header):
    connect(key_header=key_header)
    pid = create(make_hook())
    async with make_hook() as hook:
        assert (await hook.aget_prediction(pid))["id"] == pid
        assert (await hook.aget_prediction_state(pid)).status is PredictionStatus.PENDING
        assert (await hook.acancel_prediction(pid))["status"] == "cancelled"
        assert (await hook.aget_prediction_state(pid)).status is PredictionStatus.CANCELLED
    stats = emu.stats()
    assert (stats["gets"], stats["cancels"]) == (3, 1)


@pytest.mark.parametrize("fault", GET_FAULTS, ids=fault_id)
async def test_async_get_faults_are_retried(emu, connect, fault):
    pid = create(make_hook())
    sleeps = Sleeps()
    emu.inject(route="get", times=2, **fault)
    async with make_hook(sleeps, timeout=0.3 if fault["kind"] == "slow" else TIMEOUT) as hook:
        assert (await hook.aget_prediction_state(pid)).id == pid
    stats = emu.stats()
    assert stats["gets"] == 3
    assert stats["faults_applied"] == 2
    assert len(sleeps) == 2
    if "retry_after" in fault:
        assert all(wait >= fault["retry_after"] for wait in sleeps)


@pytest.mark.parametrize(
    ("fault", "error_class"),
    [
        ({"kind": "http", "status": 401}, EachlabsAuthError),
        ({"kind": "http", "status": 402}, EachlabsPaymentRequiredError),
        ({"kind": "http", "status": 400}, EachlabsInvalidInputError),
        ({"kind": "http", "status": 404}, EachlabsNotFoundError),
    ],
    ids=fault_id,
)
async def test_async_permanent_errors_fail_at_once(emu, connect, fault, error_class):
    pid = create(make_hook())
    emu.inject(route="cancel", **fault)
    sleeps = Sleeps()
    async with make_hook(sleeps) as hook:
        with pytest.raises(error_class):
            await hook.acancel_prediction(pid)
    assert emu.stats()["cancels"] == 1
    assert sleeps == []


async def test_async_refused_connection(connect):
    connect(host=f"http://127.0.0.1:{closed_port()}")
    sleeps = Sleeps()
    async with make_hook(sleeps, max_attempts=3) as hook:
        with pytest.raises(EachlabsConnectionError) as caught:
            await hook.aget_prediction("p")
    assert caught.value.request_sent is False
    assert len(sleeps) == 2


async def test_200_hooks_share_one_small_pool(emu, connect):
    pid = create(make_hook())
    before = emu.stats()["tcp_connections"]
    hooks = [make_hook() for _ in range(200)]
    try:
        states = await asyncio.gather(*(hook.aget_prediction_state(pid) for hook in hooks))
        assert {state.id for state in states} == {pid}
        assert SESSIONS.leases() == {(CONN_ID, emu.url): 200}
        shared = hooks[0]._lease
        assert shared is not None and all(hook._lease is shared for hook in hooks)
    finally:
        await asyncio.gather(*(hook.aclose() for hook in hooks))
    stats = emu.stats()
    assert stats["gets"] == 200
    opened = stats["tcp_connections"] - before
    assert 1 <= opened <= POOL_SIZE, f"200 hooks opened {opened} TCP connections"
    assert SESSIONS.leases() == {}
    assert shared.session.closed


async def test_the_rate_budget_is_shared_and_counts_retries(emu, connect):
    rate_per_minute = 600  # one request every 0.1 s
    connect(rate_limit_per_minute=rate_per_minute)
    pid = create(make_hook())
    emu.inject(route="get", kind="http", status=503, times=10)
    hooks = [make_hook(Sleeps()) for _ in range(30)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    calls = asyncio.gather(*(hook.aget_prediction_state(pid) for hook in hooks))
    try:
        await asyncio.sleep(1.0)
        # A blocking admin call on purpose: while it runs this loop sends nothing, so the count is a bound.
        gets = emu.stats()["gets"]
        elapsed = loop.time() - started
        # A single-request bucket: at most one request, then one per 0.1 s.
        assert 1 <= gets <= 1 + elapsed * rate_per_minute / 60 + 1, (gets, elapsed)
        await calls
    finally:
        await asyncio.gather(*(hook.aclose() for hook in hooks))
    assert emu.stats()["gets"] == 40  # 30 reads + 10 retried faults, all through the one budget


def test_sessions_never_cross_event_loops(emu, connect):
    pid = create(make_hook())
    hook = make_hook()
    first = asyncio.run(hook.aget_prediction_state(pid))  # the hook keeps its lease; that loop then closes
    lease_in_first_loop = hook._lease

    async def second() -> None:
        assert (await hook.aget_prediction_state(pid)).id == first.id
        assert hook._lease is not lease_in_first_loop
        await hook.aclose()

    asyncio.run(second())
    assert lease_in_first_loop is not None and lease_in_first_loop.refs == 0
    assert all(not key[0].is_closed() for key in SESSIONS._entries)
    assert emu.stats()["gets"] == 2


async def test_each_poll_reuses_the_pool(emu, connect):
    pid = create(make_hook())
    before = emu.stats()["tcp_connections"]
    async with make_hook() as hook:
        for _ in range(10):
            await hook.aget_prediction_state(pid)
    assert emu.stats()["tcp_connections"] - before == 1


def test_slow_waits_are_recorded_not_slept(emu, connect):
    # The Retry-After floor above the cap, on the create path, measured through the recorded sleeps.
    sleeps = Sleeps()
    with make_hook(sleeps) as hook:
        emu.inject(route="create", kind="http", status=503, retry_after=30, times=1)
        started = time.monotonic()
        create(hook)
    assert sleeps == [30.0]
    assert time.monotonic() - started < 30


async def test_the_most_urgent_poll_is_served_first_from_the_shared_budget(emu, connect):
    connect(rate_limit_per_minute=600)  # one request every 0.1 s
    pids = [create(make_hook()) for _ in range(4)]
    hooks = [make_hook() for _ in pids]
    order: list[str] = []

    async def poll(hook: EachlabsHook, pid: str, urgency: float) -> None:
        await hook.aget_prediction_state(pid, urgency=urgency)
        order.append(pid)

    try:
        for hook in hooks:
            await hook.aget_settings()  # the connection lookups done, each poll goes straight to the budget
        await hooks[0].aget_prediction_state(pids[0])  # takes the budget's slot: the polls below queue
        tasks = []
        for hook, pid, urgency in zip(hooks[1:], pids[1:], (0.0, 0.2, 0.9), strict=True):
            tasks.append(asyncio.create_task(poll(hook, pid, urgency)))
            await asyncio.sleep(0.01)  # queued in this order, least urgent first
        await asyncio.gather(*tasks)
    finally:
        await asyncio.gather(*(hook.aclose() for hook in hooks))
    assert order == [pids[3], pids[2], pids[1]]
