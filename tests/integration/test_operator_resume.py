"""The create-or-resume rules (airflow_runway/ledger.py) through the real operator, hook and emulator.

The store and the task instance are minimal stand-ins for Airflow's ``TaskStateStoreAccessor`` and task instance
(the same methods), so that a test can put the record in any state a crash could leave it in, or make a write
fail. Every test counts the emulator's create requests. The same rules with Airflow's real store and real
retries are in tests/e2e/test_spend_safety.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_runway.exceptions import (
    EachlabsCreateUncertainError,
    EachlabsPredictionRejectedError,
    EachlabsPredictionTimeoutError,
)
from airflow_runway.ledger import PREDICTION_STATE_KEY
from airflow_runway.operators.runway import RunwayGenerateVideoOperator

pytestmark = pytest.mark.integration


class Store(dict):
    """The subset of ``TaskStateStoreAccessor`` the ledger uses; ``fail_on`` makes writes of that state raise."""

    def __init__(self, fail_on: str | None = None) -> None:
        super().__init__()
        self.fail_on = fail_on

    def set(self, key: str, value: Any) -> None:
        if self.fail_on is not None and value.get("state") == self.fail_on:
            raise RuntimeError("the API server is unreachable")
        self[key] = value

    def delete(self, key: str) -> None:
        self.pop(key, None)


class TaskInstance:
    """``max_tries`` as Airflow sets it: ``retries`` at first, raised by every clear, kept by every retry."""

    def __init__(self, max_tries: int = 2) -> None:
        self.max_tries = max_tries
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


def operator(**kwargs: Any) -> RunwayGenerateVideoOperator:
    kwargs.setdefault("prompt_text", "a lighthouse")
    return RunwayGenerateVideoOperator(task_id="generate", duration=5, poll_interval=0.05, **kwargs)


def first_try(store: Store, max_tries: int = 2) -> str:
    """Run a try up to its deferral, as a worker would, and return the prediction it created."""
    with pytest.raises(TaskDeferred):
        operator().execute({"ti": TaskInstance(max_tries), "task_state_store": store})
    assert store[PREDICTION_STATE_KEY]["state"] == "created"
    return store[PREDICTION_STATE_KEY]["prediction_id"]


def wait_for(emulator: Any, pid: str, status: str) -> None:
    deadline = time.monotonic() + 10
    while emulator.prediction(pid)["status"] != status:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_running_prediction_is_resumed(emulator, eachlabs_connection):
    emulator.configure(duration=600, speed=1)
    store = Store()
    pid = first_try(store)
    ti = TaskInstance()
    with pytest.raises(TaskDeferred) as deferred:
        operator().execute({"ti": ti, "task_state_store": store})
    assert deferred.value.trigger.prediction_id == pid
    assert ti.xcoms["prediction_id"] == pid
    assert emulator.stats()["creates"] == 1


def test_a_succeeded_prediction_is_returned_again_by_a_retry_and_replaced_after_a_clear(emulator, eachlabs_connection):
    """Point 7: a try that returned the video records it. A retry (the try was lost before reporting its success)
    returns the same video; a user's clear (max_tries raised) makes a new one."""
    store = Store()
    pid = first_try(store)
    wait_for(emulator, pid, "success")
    for _ in range(2):  # the try that finds it succeeded, then a retry of that try
        ti = TaskInstance(max_tries=2)
        result = operator().execute({"ti": ti, "task_state_store": store})  # no deferral: already done
        assert result["prediction_id"] == pid and result["status"] == "succeeded"
        assert ti.xcoms["video_url"] == result["video_url"]
        assert store[PREDICTION_STATE_KEY]["state"] == "returned"
    assert emulator.stats()["creates"] == 1
    assert first_try(store, max_tries=5) != pid  # the user's clear
    assert emulator.stats()["creates"] == 2


def test_the_deferred_path_records_the_returned_video_in_execute_complete(emulator, eachlabs_connection):
    store = Store()
    pid = first_try(store)
    wait_for(emulator, pid, "success")
    event = {"status": "success", "prediction_id": pid, "message": "done", "prediction": emulator_result(emulator, pid)}
    operator().execute_complete({"ti": TaskInstance(max_tries=2), "task_state_store": store}, event)
    assert store[PREDICTION_STATE_KEY]["state"] == "returned"
    assert operator().execute({"ti": TaskInstance(max_tries=2), "task_state_store": store})["prediction_id"] == pid
    assert first_try(store, max_tries=5) != pid  # the user's clear
    assert emulator.stats()["creates"] == 2


def test_a_clear_before_any_try_returned_the_video_returns_it(emulator, eachlabs_connection):
    """A paid video is never dropped: the try that should have returned it crashed, then the user cleared."""
    store = Store()
    pid = first_try(store)
    wait_for(emulator, pid, "success")
    result = operator().execute({"ti": TaskInstance(max_tries=5), "task_state_store": store})
    assert result["prediction_id"] == pid
    assert emulator.stats()["creates"] == 1


def test_a_clear_while_the_prediction_runs_resumes_it_and_follows_the_clear(emulator, eachlabs_connection):
    """The resuming try records its own max_tries: a retry of it (not of the try that created) is told as one."""
    emulator.inject(route="create", kind="fail_prediction", error_code="PROVIDER_REJECTED", error_message="no")
    store = Store()
    pid = first_try(store)
    with pytest.raises(TaskDeferred) as deferred:  # cleared while running: max_tries 2 -> 5, resumes
        operator().execute({"ti": TaskInstance(max_tries=5), "task_state_store": store})
    assert deferred.value.trigger.prediction_id == pid
    assert store[PREDICTION_STATE_KEY]["max_tries"] == 5
    wait_for(emulator, pid, "failed")
    with pytest.raises(EachlabsPredictionRejectedError):  # a retry of the resuming try
        operator().execute({"ti": TaskInstance(max_tries=5), "task_state_store": store})
    assert emulator.stats()["creates"] == 1


def emulator_result(emulator: Any, pid: str) -> dict[str, Any]:
    url = f"{emulator.url}/v1/outputs/{pid}.mp4"
    return {"prediction_id": pid, "status": "succeeded", "video_url": url, "outputs": [url], "metrics": {}}


def test_a_crash_during_the_resume_still_resumes(emulator, eachlabs_connection):
    """Point 7's other half: the record stays until a try succeeds, so a try killed while resuming resumes again."""
    emulator.configure(duration=600, speed=1)
    store = Store()
    pid = first_try(store)
    for _ in range(2):  # two tries that resume and are then killed in the triggerer (never reach _finish)
        with pytest.raises(TaskDeferred) as deferred:
            operator().execute({"ti": TaskInstance(), "task_state_store": store})
        assert deferred.value.trigger.prediction_id == pid
    assert emulator.stats()["creates"] == 1


def test_a_failed_or_cancelled_prediction_is_replaced(emulator, eachlabs_connection, hook_factory):
    emulator.configure(duration=600, speed=1)
    store = Store()
    pid = first_try(store)
    hook_factory().cancel_prediction(pid)
    with pytest.raises(TaskDeferred) as deferred:
        operator().execute({"ti": TaskInstance(), "task_state_store": store})
    assert deferred.value.trigger.prediction_id != pid
    assert emulator.stats()["creates"] == 2


def failed_first_try(emulator: Any, store: Store, code: str) -> str:
    """A first try whose prediction then fails with ``code`` (the try that met it is lost before reporting it)."""
    emulator.inject(route="create", kind="fail_prediction", error_code=code, error_message="it failed", at_once=True)
    pid = first_try(store)
    wait_for(emulator, pid, "failed")
    return pid


def test_a_retry_after_a_final_failure_fails_again_without_creating_until_a_clear(emulator, eachlabs_connection):
    """Rule 5: a failure of the input or content allows no retries. If Airflow retries anyway (the try that met it
    was lost), the retry fails with the API's message and pays for nothing; a user's clear (max_tries raised)
    creates a new prediction."""
    store = Store()
    pid = failed_first_try(emulator, store, "PROVIDER_REJECTED")
    for _ in range(2):  # every automatic retry: max_tries unchanged
        with pytest.raises(EachlabsPredictionRejectedError, match=r"PROVIDER_REJECTED\): it failed.*clear the task"):
            operator().execute({"ti": TaskInstance(max_tries=2), "task_state_store": store})
    assert emulator.stats()["creates"] == 1
    assert store[PREDICTION_STATE_KEY]["prediction_id"] == pid
    with pytest.raises(TaskDeferred) as deferred:  # the clear: Airflow sets max_tries = try_number + retries
        operator().execute({"ti": TaskInstance(max_tries=3 + 2), "task_state_store": store})
    assert deferred.value.trigger.prediction_id != pid
    assert emulator.stats()["creates"] == 2


def test_a_retry_after_a_retryable_failure_creates_a_new_prediction(emulator, eachlabs_connection):
    store = Store()
    pid = failed_first_try(emulator, store, "WORKER_LOST")
    with pytest.raises(TaskDeferred) as deferred:
        operator().execute({"ti": TaskInstance(max_tries=2), "task_state_store": store})
    assert deferred.value.trigger.prediction_id != pid
    assert emulator.stats()["creates"] == 2


def test_a_retry_after_the_timeouts_cancel_fails_again_without_creating_until_a_clear(
    emulator, eachlabs_connection, hook_factory
):
    """Rule 5: cancelled once ``timeout`` had passed is the timeout's ending (no retries). Cancelled before it
    (test_a_failed_or_cancelled_prediction_is_replaced), the retry creates."""
    emulator.configure(duration=600, speed=1)
    store = Store()
    with pytest.raises(TaskDeferred):
        operator(timeout=0.3).execute({"ti": TaskInstance(max_tries=2), "task_state_store": store})
    pid = store[PREDICTION_STATE_KEY]["prediction_id"]
    time.sleep(0.3)
    hook_factory().cancel_prediction(pid)  # as the trigger does when the timeout passes
    with pytest.raises(EachlabsPredictionTimeoutError, match=r"cancelled when the task's timeout.*clear the task"):
        operator(timeout=0.3).execute({"ti": TaskInstance(max_tries=2), "task_state_store": store})
    assert emulator.stats()["creates"] == 1
    with pytest.raises(TaskDeferred):  # the clear
        operator(timeout=0.3).execute({"ti": TaskInstance(max_tries=5), "task_state_store": store})
    assert emulator.stats()["creates"] == 2


def test_a_record_without_max_tries_creates_after_a_final_failure(emulator, eachlabs_connection):
    """A record written before max_tries was kept cannot tell a clear from a retry: it creates, as it did."""
    store = Store()
    failed_first_try(emulator, store, "PROVIDER_REJECTED")
    del store[PREDICTION_STATE_KEY]["max_tries"]
    with pytest.raises(TaskDeferred):
        operator().execute({"ti": TaskInstance(max_tries=2), "task_state_store": store})
    assert emulator.stats()["creates"] == 2


def test_changed_input_cancels_the_running_prediction_before_creating(emulator, eachlabs_connection):
    """Point 4: the earlier try's prediction is not left running (and billed) when the input changed."""
    emulator.configure(duration=600, speed=1)
    store = Store()
    pid = first_try(store)
    with pytest.raises(TaskDeferred) as deferred:
        operator(prompt_text="another prompt").execute({"ti": TaskInstance(), "task_state_store": store})
    assert deferred.value.trigger.prediction_id != pid
    assert emulator.prediction(pid)["status"] == "cancelled"
    stats = emulator.stats()
    assert (stats["creates"], stats["cancels"]) == (2, 1)


def test_a_creating_record_without_an_id_refuses_without_any_request_then_a_clear_creates(
    emulator, eachlabs_connection
):
    """Point 2: the worker died between the POST and recording the id: no blind POST, no retries."""
    store = Store()
    store.set(PREDICTION_STATE_KEY, {"state": "creating", "fingerprint": "whatever"})
    with pytest.raises(EachlabsCreateUncertainError, match=r"may exist.*Eachlabs console.*Clear the task"):
        operator().execute({"ti": TaskInstance(), "task_state_store": store})
    assert emulator.stats()["requests"] == 0
    assert PREDICTION_STATE_KEY not in store  # so the user's clear creates anew
    first_try(store)
    assert emulator.stats()["creates"] == 1


def test_the_intent_is_recorded_before_the_request(emulator, eachlabs_connection):
    """Point 2: while the create is in flight the record says "creating" (seen by the server-side slow fault)."""
    emulator.configure(duration=600, speed=1)
    seen: list[Any] = []

    class Watching(Store):
        def set(self, key: str, value: Any) -> None:
            seen.append((dict(value), emulator.stats()["create_requests"]))
            super().set(key, value)

    first_try(Watching())
    assert [(record["state"], creates) for record, creates in seen] == [("creating", 0), ("created", 1)]


def test_a_failed_intent_write_sends_nothing(emulator, eachlabs_connection):
    with pytest.raises(RuntimeError, match="unreachable"):
        operator().execute({"ti": TaskInstance(), "task_state_store": Store(fail_on="creating")})
    assert emulator.stats()["requests"] == 0


def test_a_failed_bookkeeping_write_after_the_create_still_waits_for_it(emulator, eachlabs_connection):
    """Point 3: recording the id fails: log it, push the id, defer on that prediction; never pay again."""
    emulator.configure(duration=600, speed=1)
    store = Store(fail_on="created")
    ti = TaskInstance()
    with pytest.raises(TaskDeferred) as deferred:
        operator().execute({"ti": ti, "task_state_store": store})
    (prediction,) = emulator.predictions()
    assert deferred.value.trigger.prediction_id == prediction["id"] == ti.xcoms["prediction_id"]
    assert emulator.stats()["creates"] == 1
    # The record still says "creating": a later try refuses rather than paying for a second video.
    with pytest.raises(EachlabsCreateUncertainError):
        operator().execute({"ti": TaskInstance(), "task_state_store": store})
    assert emulator.stats()["creates"] == 1


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "slow_after_create", "delay": 3},  # read timeout after the server created it
        {"kind": "reset_after_create"},
        {"kind": "http", "status": 500},
        {"kind": "http", "status": 502},
        {"kind": "http", "status": 504},
        {"kind": "malformed_json_object", "body": {"status": "success"}},
    ],
)
def test_an_uncertain_create_fails_without_retries_and_is_never_resent(emulator, monkeypatch, fault):
    """Point 1: the outcome is unknown: AirflowFailException (no Airflow retries), record removed, 1 request."""
    import json

    conn = {"conn_type": "eachlabs", "host": emulator.url, "password": emulator.api_key, "extra": {"timeout": 1}}
    monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_DEFAULT", json.dumps(conn))
    emulator.inject(route="create", **fault)
    store = Store()
    with pytest.raises(EachlabsCreateUncertainError, match=r"outcome is unknown.*may exist"):
        operator().execute({"ti": TaskInstance(), "task_state_store": store})
    assert emulator.stats()["create_requests"] == 1
    assert PREDICTION_STATE_KEY not in store


def test_a_create_that_provably_created_nothing_keeps_airflow_retries(emulator, monkeypatch):
    """A 429 left after the hook's attempts: nothing was created, so the error stays retryable, record removed."""
    import json

    from airflow.sdk.exceptions import AirflowFailException

    from airflow_runway.exceptions import EachlabsRateLimitError

    conn = {"conn_type": "eachlabs", "host": emulator.url, "password": emulator.api_key, "extra": {"max_attempts": 1}}
    monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_DEFAULT", json.dumps(conn))
    emulator.inject(route="create", kind="http", status=429)
    store = Store()
    with pytest.raises(EachlabsRateLimitError) as raised:
        operator().execute({"ti": TaskInstance(), "task_state_store": store})
    assert not isinstance(raised.value, AirflowFailException)
    assert emulator.stats()["creates"] == 0
    assert PREDICTION_STATE_KEY not in store


def test_without_task_state_store_each_try_creates(emulator, eachlabs_connection):
    """Airflow 3.2: no store in the context, so the documented limit applies."""
    for _ in range(2):
        with pytest.raises(TaskDeferred):
            operator().execute({"ti": TaskInstance()})
    assert emulator.stats()["creates"] == 2


def test_on_kill_cancels_the_prediction_being_waited_for(emulator, eachlabs_connection):
    emulator.configure(duration=600, speed=1)
    op = operator(deferrable=False, wait_for_completion=False)
    pid = op.execute({"ti": TaskInstance()})["prediction_id"]
    op.on_kill()
    assert emulator.prediction(pid)["status"] == "cancelled"
    keep = operator(deferrable=False, wait_for_completion=False, cancel_on_kill=False)
    other = keep.execute({"ti": TaskInstance()})["prediction_id"]
    keep.on_kill()
    assert emulator.prediction(other)["status"] != "cancelled"
    assert emulator.stats()["cancels"] == 1


def test_on_kill_after_the_deferral_leaves_the_prediction_to_the_trigger(emulator, eachlabs_connection):
    """A SIGTERM the worker gets right after deferring (on_kill) must not cancel what the trigger now waits for."""
    emulator.configure(duration=600, speed=1)
    op = operator()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"ti": TaskInstance(), "task_state_store": Store()})
    op.on_kill()
    assert emulator.prediction(deferred.value.trigger.prediction_id)["status"] != "cancelled"
    assert emulator.stats()["cancels"] == 0
