"""The trigger against the emulator over loopback: each terminal event, faults, deadline and kill."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from airflow_runway.triggers.prediction import EachlabsPredictionTrigger
from tests.fixtures.emulator import RUNWAY_INPUT

pytestmark = pytest.mark.integration


@pytest.fixture
def eachlabs_connection(emulator, monkeypatch) -> str:
    """The emulator as ``eachlabs_default``, with one attempt per request and a generous budget.

    One attempt: these tests are about the trigger's own handling of faults the hook gave up on.
    """
    conn = {
        "conn_type": "eachlabs",
        "host": emulator.url,
        "password": emulator.api_key,
        "extra": {"max_attempts": 1, "rate_limit_per_minute": 60_000},
    }
    monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_DEFAULT", json.dumps(conn))
    return "eachlabs_default"


def create(emulator, hook_factory, **fault) -> str:
    if fault:
        emulator.inject(route="create", **fault)
    return hook_factory().create_prediction(model="runway", version="0.0.1", input=RUNWAY_INPUT)


async def collect(trigger: EachlabsPredictionTrigger) -> list[dict]:
    return [event.payload async for event in trigger.run()]


def trigger_for(prediction_id: str, **kwargs) -> EachlabsPredictionTrigger:
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("max_poll_interval", 0.2)
    kwargs.setdefault("deadline", time.time() + 30)
    return EachlabsPredictionTrigger(prediction_id=prediction_id, **kwargs)


async def test_success_yields_exactly_one_event(emulator, eachlabs_connection, hook_factory):
    emulator.configure(duration=1.0, speed=1.0, output_shape="list")
    pid = create(emulator, hook_factory)
    events = await collect(trigger_for(pid))
    assert len(events) == 1
    event = events[0]
    assert event["status"] == "success"
    assert event["prediction"]["video_url"].startswith(emulator.url)
    assert event["prediction"]["metrics"]["predict_time"] > 0
    assert emulator.stats()["creates"] == 1  # the trigger never creates


async def test_failed_prediction_event_carries_the_api_message(emulator, eachlabs_connection, hook_factory):
    emulator.configure(duration=0.5, speed=1.0)
    pid = create(emulator, hook_factory, kind="fail_prediction", error_code="PROVIDER_REJECTED", error_message="nope")
    (event,) = await collect(trigger_for(pid))
    assert event["status"] == "failed"
    assert event["prediction"]["error_code"] == "PROVIDER_REJECTED"
    assert "nope" in event["message"]


async def test_cancelled_elsewhere(emulator, eachlabs_connection, hook_factory):
    emulator.configure(duration=60, speed=1.0, cancel_status="canceled")
    pid = create(emulator, hook_factory)
    hook_factory().cancel_prediction(pid)
    (event,) = await collect(trigger_for(pid))
    assert event["status"] == "cancelled"


async def test_deadline_cancels_the_prediction(emulator, eachlabs_connection, hook_factory):
    emulator.configure(duration=600, speed=1.0)
    pid = create(emulator, hook_factory)
    (event,) = await collect(trigger_for(pid, deadline=time.time() + 0.5))
    assert event["status"] == "timeout"
    assert pid in event["message"] and "cancelled it" in event["message"]
    assert emulator.stats()["cancels"] == 1
    assert emulator.prediction(pid)["status"] in ("cancelled", "canceled")


async def test_deadline_without_cancel_leaves_it_running(emulator, eachlabs_connection, hook_factory):
    emulator.configure(duration=600, speed=1.0)
    pid = create(emulator, hook_factory)
    (event,) = await collect(trigger_for(pid, deadline=time.time() + 0.3, cancel_on_timeout=False))
    assert event["status"] == "timeout"
    assert emulator.stats()["cancels"] == 0


async def test_unknown_prediction_is_an_error_event(emulator, eachlabs_connection):
    (event,) = await collect(trigger_for("does-not-exist"))
    assert event["status"] == "error"
    assert "Prediction not found" in event["message"]


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "http", "status": 500},
        {"kind": "http", "status": 502},
        {"kind": "http", "status": 503},
        {"kind": "http", "status": 429, "retry_after": 0.2},
        {"kind": "reset"},
        {"kind": "malformed"},
        {"kind": "malformed_json_object"},
    ],
)
async def test_transient_faults_never_escape_run(emulator, eachlabs_connection, hook_factory, fault):
    emulator.configure(duration=0.5, speed=1.0)
    pid = create(emulator, hook_factory)
    # The hook gives up after one attempt here: the trigger itself must keep polling through all four.
    emulator.inject(route="get", times=4, **fault)
    (event,) = await collect(trigger_for(pid))
    assert event["status"] == "success"
    assert emulator.stats()["faults_applied"] == 4


async def test_on_kill_cancels_and_respects_the_flag(emulator, eachlabs_connection, hook_factory):
    emulator.configure(duration=600, speed=1.0)
    pid = create(emulator, hook_factory)
    await trigger_for(pid, cancel_on_kill=False).on_kill()
    assert emulator.stats()["cancels"] == 0
    await trigger_for(pid).on_kill()
    assert emulator.stats()["cancels"] == 1
    assert emulator.prediction(pid)["status"] in ("cancelled", "canceled")


async def test_many_triggers_share_one_pool(emulator, eachlabs_connection, hook_factory):
    emulator.configure(duration=1.0, speed=1.0, max_in_flight=100)
    ids = [create(emulator, hook_factory) for _ in range(50)]
    before = emulator.stats()["tcp_connections"]
    results = await asyncio.gather(*(collect(trigger_for(pid)) for pid in ids))
    assert all(events[0]["status"] == "success" for events in results)
    opened = emulator.stats()["tcp_connections"] - before
    assert opened <= 10, f"50 triggers opened {opened} TCP connections; they should share one pool"


async def test_two_triggerers_on_one_prediction_both_finish_and_create_nothing(
    emulator, eachlabs_connection, hook_factory
):
    """HA triggerers may briefly run the same trigger twice: both must end the same way, with no side effects."""
    emulator.configure(duration=0.5, speed=1.0)
    pid = create(emulator, hook_factory)
    first, second = await asyncio.gather(collect(trigger_for(pid)), collect(trigger_for(pid)))
    assert first[0]["status"] == second[0]["status"] == "success"
    assert first[0]["prediction"] == second[0]["prediction"]
    stats = emulator.stats()
    assert stats["creates"] == 1
    assert stats["cancels"] == 0


# ---- the deadline never discards a finished video; every request is bounded by it (issue 7, point 8) ----------


async def test_a_video_that_finished_before_a_late_start_is_returned_not_cancelled(
    emulator, eachlabs_connection, hook_factory
):
    """The triggerer was down past the deadline; meanwhile the prediction succeeded: return it, cancel nothing."""
    emulator.configure(duration=0.2, speed=1.0)
    pid = create(emulator, hook_factory)
    await asyncio.sleep(0.5)
    (event,) = await collect(trigger_for(pid, deadline=time.time() - 60))
    assert event["status"] == "success"
    assert event["prediction"]["video_url"]
    assert emulator.stats()["cancels"] == 0


async def test_a_video_that_finished_in_the_last_poll_gap_is_returned(emulator, eachlabs_connection, hook_factory):
    """The last poll saw it running; it finished before the deadline's cancel: the final read finds it."""
    emulator.configure(duration=2.0, speed=1.0)
    pid = create(emulator, hook_factory)
    trigger = trigger_for(pid, poll_interval=5, max_poll_interval=5, deadline=time.time() + 3.0)
    (event,) = await collect(trigger)
    assert event["status"] == "success"
    stats = emulator.stats()
    assert (stats["gets"], stats["cancels"]) == (2, 0)  # the poll that saw it running, then the final read


@pytest.fixture
def patient_connection(emulator, monkeypatch) -> str:
    """``eachlabs_default`` with the hook's default retries and timeout (30 s)."""
    conn = {"conn_type": "eachlabs", "host": emulator.url, "password": emulator.api_key}
    monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_DEFAULT", json.dumps(conn))
    return "eachlabs_default"


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "http", "status": 429, "retry_after": 200, "times": 3},  # under the 300 s Retry-After ceiling
        {"kind": "slow", "delay": 25, "times": 1},  # under the 30 s read timeout
    ],
)
async def test_no_request_outlives_the_deadline(emulator, patient_connection, hook_factory, fault):
    """A long Retry-After or a stalled read ends at the deadline; then one short read and one short cancel."""
    emulator.configure(duration=3600, speed=1.0)
    pid = create(emulator, hook_factory)
    emulator.inject(route="get", **fault)
    started = time.monotonic()
    (event,) = await collect(trigger_for(pid, deadline=time.time() + 2))
    elapsed = time.monotonic() - started
    assert event["status"] == "timeout"
    assert elapsed < 8, elapsed
    assert emulator.stats()["cancels"] == 1
    assert emulator.prediction(pid)["status"] == "cancelled"


async def test_the_cancel_at_the_deadline_is_one_short_attempt(emulator, patient_connection, hook_factory):
    emulator.configure(duration=3600, speed=1.0)
    pid = create(emulator, hook_factory)
    emulator.inject(route="cancel", kind="http", status=503, times=5)
    (event,) = await collect(trigger_for(pid, deadline=time.time() + 0.5))
    assert event["status"] == "timeout"
    assert "left it running" in event["message"]
    assert emulator.stats()["cancels"] == 1  # requests to the cancel route, the failed one included


# ---- nothing escapes the trigger (point 9) ----------------------------------------------------------------------


async def test_a_missing_connection_is_an_error_event(emulator):
    (event,) = await collect(trigger_for("p1", eachlabs_conn_id="no_such_connection"))
    assert event["status"] == "error"
    assert "no_such_connection" in event["message"]


async def test_a_bad_connection_extra_is_an_error_event(emulator, monkeypatch):
    conn = {"conn_type": "eachlabs", "host": emulator.url, "password": "k", "extra": {"rate_limit_per_minute": "x"}}
    monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_DEFAULT", json.dumps(conn))
    (event,) = await collect(trigger_for("p1"))
    assert event["status"] == "error"
    assert "rate_limit_per_minute" in event["message"]
    assert emulator.stats()["requests"] == 0
