"""Spend safety in real DAG runs: Airflow's own retries (``retries=2``), its real ``task_state_store``, the emulator.

Each test counts the create requests the emulator received for one task: the number a user would be billed for.
The rules themselves are airflow_runway/ledger.py's and airflow_runway/events.py's; the record in every state a
crash could leave it is exercised in tests/integration/test_operator_resume.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.utils.state import DagRunState, TaskInstanceState

from tests.fixtures.dags import generation_dag, run_generation_dag
from tests.fixtures.runs import clear_and_rerun, task_instances, xcom

pytestmark = pytest.mark.e2e

GENERATE = 'RunwayGenerateVideoOperator(task_id="generate", prompt_text="x", {args}**FAST)'


def run(dag_from_source: Any, args: str = "") -> tuple[Any, Any]:
    dag_run = run_generation_dag(dag_from_source, GENERATE.format(args=args))
    return dag_run, task_instances(dag_run, "generate")[0]


def use_connection(monkeypatch: pytest.MonkeyPatch, emulator: Any, **extra: Any) -> None:
    conn = {"conn_type": "eachlabs", "host": emulator.url, "password": emulator.api_key, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_DEFAULT", json.dumps(conn))


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "slow_after_create", "delay": 3},  # created, then answered after the client's 1 s read timeout
        {"kind": "reset_after_create"},
        {"kind": "http", "status": 502},
    ],
    ids=["read-timeout", "reset", "502"],
)
def test_point1_an_uncertain_create_is_paid_once_despite_retries(dag_from_source, emulator, monkeypatch, fault):
    use_connection(monkeypatch, emulator, timeout=1)
    emulator.inject(route="create", **fault)
    dag_run, ti = run(dag_from_source)
    assert dag_run.state == DagRunState.FAILED
    assert ti.try_number == 1  # AirflowFailException: the two retries were not spent
    assert emulator.stats()["create_requests"] == 1


def test_point2_a_try_killed_inside_the_create_request_is_not_followed_by_a_blind_create(
    dag_from_source, emulator, eachlabs_connection
):
    """The first try is killed (execution_timeout) while its create is in flight; the server created it.

    The retry finds the "creating" record without an id and refuses, without retries and without a request.
    """
    emulator.configure(duration=600, speed=1)
    emulator.inject(route="create", kind="slow_after_create", delay=4)
    dag_run, ti = run(dag_from_source, "execution_timeout=timedelta(seconds=1), ")
    assert dag_run.state == DagRunState.FAILED
    assert ti.try_number == 2  # the timed-out try, then the refusing one; the third was not spent
    assert emulator.stats()["create_requests"] == 1


def test_point5_a_timeout_cancels_and_fails_without_retries(dag_from_source, emulator, eachlabs_connection):
    emulator.configure(duration=3600, speed=1)
    dag_run, ti = run(dag_from_source, "timeout=0.5, ")
    assert dag_run.state == DagRunState.FAILED
    assert ti.try_number == 1
    stats = emulator.stats()
    assert (stats["create_requests"], stats["cancels"]) == (1, 1)
    assert emulator.predictions()[0]["status"] == "cancelled"


@pytest.mark.parametrize(
    ("code", "creates", "state"),
    [
        ("WORKER_LOST", 2, DagRunState.SUCCESS),  # infrastructure: the retry creates a new prediction
        ("EXECUTION_TIMEOUT", 2, DagRunState.SUCCESS),
        ("PROVIDER_RATE_LIMIT", 2, DagRunState.SUCCESS),
        ("SAFETY.INPUT.TEXT", 1, DagRunState.FAILED),  # content: no retries
        ("INPUT_VALIDATION_ERROR", 1, DagRunState.FAILED),
        ("SOMETHING_NEW", 1, DagRunState.FAILED),  # unknown: spend-safe default
    ],
)
def test_point6_failure_codes_decide_whether_a_retry_pays_again(
    dag_from_source, emulator, eachlabs_connection, code, creates, state
):
    emulator.inject(route="create", kind="fail_prediction", error_code=code, error_message="it failed", at_once=True)
    dag_run, ti = run(dag_from_source)
    assert dag_run.state == state
    assert ti.try_number == creates
    assert emulator.stats()["create_requests"] == creates


LOSES_ITS_FIRST_RESUME = """
class LosesItsFirstResume(RunwayGenerateVideoOperator):
    def execute_complete(self, context, event):
        if context["ti"].try_number == 1:
            raise RuntimeError("the worker was lost while resuming")  # a plain error: Airflow retries
        return super().execute_complete(context, event)
LosesItsFirstResume(task_id="generate", prompt_text="x", {args}**FAST)
"""


@pytest.mark.parametrize(
    ("ending", "args"),
    [("PROVIDER_REJECTED", ""), ("timeout", "timeout=1, ")],
    ids=["failed-for-its-content", "timed-out-and-cancelled"],
)
def test_point5_a_retry_after_an_ending_without_retries_pays_nothing_until_a_clear(
    dag_from_source, emulator, eachlabs_connection, ending, args
):
    """The prediction ends in a way that allows no retries, but the try that met the ending is lost before it can
    report it, so Airflow retries: the retry fails the same way without creating. A user's clear of the same run
    (Airflow raises ``max_tries``) then pays for a new prediction."""
    if ending == "timeout":
        emulator.configure(duration=3600, speed=1)
    else:
        emulator.inject(route="create", kind="fail_prediction", error_code=ending, error_message="no", at_once=True)
    dag = generation_dag(dag_from_source, LOSES_ITS_FIRST_RESUME.format(args=args))
    dag_run = dag.test()
    ti = task_instances(dag_run, "generate")[0]
    assert dag_run.state == DagRunState.FAILED
    assert ti.try_number == 2  # the lost try, then the retry that failed again; the third was not spent
    assert emulator.stats()["create_requests"] == 1

    if ending == "timeout":
        assert emulator.stats()["cancels"] == 1
        emulator.configure(duration=0.2, speed=1)  # the cleared try's prediction finishes within its timeout
    cleared = clear_and_rerun(dag, dag_run, "generate")
    ti = task_instances(cleared, "generate")[0]
    assert (cleared.state, ti.try_number) == (DagRunState.SUCCESS, 3)
    assert stored_state(cleared) == "returned"
    assert emulator.stats()["create_requests"] == 2


LOSES_ITS_SUCCESS_REPORT = """
class LosesItsSuccessReport(RunwayGenerateVideoOperator):
    def execute_complete(self, context, event):
        result = super().execute_complete(context, event)
        if context["ti"].try_number == 1:
            raise RuntimeError("the worker was lost before it reported the success")  # Airflow retries
        return result
LosesItsSuccessReport(task_id="generate", prompt_text="x", **FAST)
"""


def test_point7_a_returned_video_is_returned_again_by_a_retry_and_replaced_after_a_clear(
    dag_from_source, emulator, eachlabs_connection
):
    """The try that returned the video is lost before Airflow hears of its success: the retry returns the same
    video without creating. A user's clear of the succeeded task then makes a new video."""
    dag = generation_dag(dag_from_source, LOSES_ITS_SUCCESS_REPORT)
    dag_run = dag.test()
    ti = task_instances(dag_run, "generate")[0]
    assert (dag_run.state, ti.try_number) == (DagRunState.SUCCESS, 2)
    assert emulator.stats()["create_requests"] == 1
    assert stored_state(dag_run) == "returned"
    first = xcom(dag_run, "generate")["prediction_id"]

    cleared = clear_and_rerun(dag, dag_run, "generate")
    assert cleared.state == DagRunState.SUCCESS
    assert emulator.stats()["create_requests"] == 2
    assert xcom(cleared, "generate")["prediction_id"] != first


def test_point7_a_timed_out_task_keeps_its_record(dag_from_source, emulator, eachlabs_connection):
    """A task that did not return a video keeps the record of the one it paid for, as ``created``."""
    emulator.configure(duration=3600, speed=1)
    dag_run, _ = run(dag_from_source, "timeout=0.5, ")
    assert dag_run.state == DagRunState.FAILED
    assert stored_state(dag_run) == "created"


def stored_state(dag_run: Any) -> str | None:
    """The state of the record the run's ``generate`` task holds in Airflow's task state store, if any."""
    from airflow.models.task_state_store import TaskStateStoreModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(TaskStateStoreModel.value).where(
            TaskStateStoreModel.dag_id == dag_run.dag_id,
            TaskStateStoreModel.run_id == dag_run.run_id,
            TaskStateStoreModel.task_id == "generate",
            TaskStateStoreModel.key == "eachlabs_prediction",
        )
        value = session.scalar(query)
    return None if value is None else json.loads(value)["state"]


def test_point15_a_success_without_a_video_url_fails_clearly(dag_from_source, emulator, eachlabs_connection):
    emulator.configure(output_shape="none")
    dag_run, ti = run(dag_from_source)
    assert dag_run.state == DagRunState.FAILED
    assert ti.state == TaskInstanceState.FAILED
    assert ti.try_number == 1
    assert emulator.stats()["create_requests"] == 1
    assert xcom(dag_run, "generate") is None


def test_point8_the_worker_wait_returns_a_video_that_finished_in_the_last_poll_gap(
    dag_from_source, emulator, eachlabs_connection
):
    """``deferrable=False``: the last poll saw it running, the deadline came before the next; read once more."""
    # The first poll comes right after the create (well inside the 3 s render), the next would be 5 s later:
    # the deadline (4 s) falls in that gap, after the finish.
    emulator.configure(duration=3, speed=1)
    body = 'RunwayGenerateVideoOperator(task_id="generate", prompt_text="x", deferrable=False, timeout=4.0, retries=0, '
    dag_run = run_generation_dag(dag_from_source, body + "poll_interval=5)")
    assert dag_run.state == DagRunState.SUCCESS
    assert xcom(dag_run, "generate")["status"] == "succeeded"
    stats = emulator.stats()
    assert (stats["create_requests"], stats["gets"], stats["cancels"]) == (1, 2, 0)
