"""A new try resumes the prediction an earlier try created, through ``task_state_store`` (Airflow >= 3.3).

The store and the task instance here are minimal stand-ins for Airflow's (same methods); the operator, hook and
emulator are real. The DAG-level retry (a real store, a real second try) is in tests/e2e/test_generation_dags.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_runway.operators.prediction import PREDICTION_STATE_KEY
from airflow_runway.operators.runway import RunwayGenerateVideoOperator

pytestmark = pytest.mark.integration


class Store(dict):
    """The subset of ``TaskStateStoreAccessor`` the operator uses."""

    def set(self, key: str, value: Any) -> None:
        self[key] = value


class TaskInstance:
    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


def operator(**kwargs: Any) -> RunwayGenerateVideoOperator:
    return RunwayGenerateVideoOperator(
        task_id="generate", prompt_text="a lighthouse", duration=5, poll_interval=0.05, **kwargs
    )


def first_try(store: Store) -> str:
    """Run a try up to its deferral, as a worker would, and return the prediction it created."""
    with pytest.raises(TaskDeferred):
        operator().execute({"ti": TaskInstance(), "task_state_store": store})
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


def test_a_succeeded_prediction_is_returned_without_waiting(emulator, eachlabs_connection):
    store = Store()
    pid = first_try(store)
    wait_for(emulator, pid, "success")
    ti = TaskInstance()
    result = operator().execute({"ti": ti, "task_state_store": store})  # no deferral: already done
    assert result["prediction_id"] == pid and result["status"] == "succeeded"
    assert ti.xcoms["video_url"] == result["video_url"]
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


def test_changed_input_is_a_new_prediction(emulator, eachlabs_connection):
    emulator.configure(duration=600, speed=1)
    store = Store()
    first_try(store)
    changed = RunwayGenerateVideoOperator(task_id="generate", prompt_text="another prompt", duration=5)
    with pytest.raises(TaskDeferred):
        changed.execute({"ti": TaskInstance(), "task_state_store": store})
    assert emulator.stats()["creates"] == 2


def test_without_task_state_store_each_try_creates(emulator, eachlabs_connection):
    """Airflow 3.1/3.2: no store in the context, so the documented limit applies."""
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
