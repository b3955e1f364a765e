"""The deferrable operator on a real Airflow 3.3 stack: api-server, scheduler (LocalExecutor), dag-processor and
triggerer as subprocesses (see :mod:`tests.fixtures.stack`), not ``dag.test()``.

The task really defers: its worker process exits, the triggerer polls the emulator, the scheduler resumes the
task in a new worker. A user marking the deferred task failed through the public REST API makes the triggerer
cancel the trigger with a "user action" message, which calls ``EachlabsPredictionTrigger.on_kill`` and cancels
the prediction.

Set ``AIRFLOW_RUNWAY_KEEP_STACK_LOGS=1`` to keep the stack's AIRFLOW_HOME (component, task and trigger logs).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.stack import AirflowStack, StackError, stack_db_name

pytestmark = pytest.mark.e2e

GENERATE_DAG = "real_stack_generate"
KILL_DAG = "real_stack_kill"
TRIGGER_CLASSPATH = "airflow_runway.triggers.prediction.EachlabsPredictionTrigger"

DAG_SOURCE = """
from airflow.sdk import DAG
from airflow_runway.operators.runway import RunwayGenerateVideoOperator

for dag_id in ({generate!r}, {kill!r}):
    with DAG(dag_id, schedule=None, default_args={{"retries": 0}}) as dag:
        RunwayGenerateVideoOperator(
            task_id="generate",
            prompt_text="a lighthouse in a storm, " + dag_id,
            poll_interval=0.5,
            max_poll_interval=1,
        )
    globals()[dag_id] = dag
"""

# Bounds for the waits below (the stack itself runs with fast loops; these only catch a stuck stack).
RUN_TIMEOUT = 45.0
DEFER_TIMEOUT = 30.0
CANCEL_TIMEOUT = 20.0
LOG_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def stack(
    airflow_db: str, emulator_server: Any, emulator_config: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AirflowStack]:
    """The stack, shared by this module's tests, on its own database on the session database's server.

    The connection takes the emulator's *initial* key (``emulator_config``), which the ``emulator`` fixture puts
    back before each test: the server's current key may still be one an earlier module's test configured.
    """
    dags_folder: Path = tmp_path_factory.mktemp("real_stack_dags")
    (dags_folder / "real_stack_dags.py").write_text(
        textwrap.dedent(DAG_SOURCE.format(generate=GENERATE_DAG, kill=KILL_DAG))
    )
    connection = {
        "conn_type": "eachlabs",
        "host": emulator_server.url,
        "password": emulator_config.api_key,
        "extra": {"rate_limit_per_minute": 6000},
    }
    with AirflowStack(
        dags_folder=dags_folder,
        pg_server_url=airflow_db.rsplit("/", 1)[0],
        db_name=stack_db_name(),
        extra_env={"AIRFLOW_CONN_EACHLABS_DEFAULT": json.dumps(connection)},
    ) as running:
        yield running


def trigger_run(stack: AirflowStack, dag_id: str) -> str:
    """Trigger a manual run once the dag-processor has serialized the DAG; return its run id."""
    stack.wait_for(lambda: stack.try_request("GET", f"/api/v2/dags/{dag_id}"), f"DAG {dag_id} parsed", 30)
    run = stack.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None})
    return str(run["dag_run_id"])


def test_generate_defers_to_the_triggerer_and_resumes(stack: AirflowStack, emulator: Any) -> None:
    emulator.configure(duration=5, speed=1)
    run_id = trigger_run(stack, GENERATE_DAG)
    ti_path = stack.ti_path(GENERATE_DAG, run_id, "generate")
    run_path = f"/api/v2/dags/{GENERATE_DAG}/dagRuns/{run_id}"

    # (state, next_method, trigger classpath) of the task instance as the DB records them while the run goes on.
    seen: list[tuple[Any, ...]] = []

    def finished() -> str | None:
        for row in stack.sql(
            "SELECT ti.state, ti.next_method, t.classpath FROM task_instance ti"
            " LEFT JOIN trigger t ON t.id = ti.trigger_id"
            " WHERE ti.dag_id = %s AND ti.run_id = %s AND ti.task_id = 'generate'",
            GENERATE_DAG,
            run_id,
        ):
            if not seen or seen[-1] != row:
                seen.append(row)
        run = stack.request("GET", run_path)
        return run["state"] if run["state"] in ("success", "failed") else None

    state = stack.wait_for(finished, f"run {run_id} to finish", RUN_TIMEOUT)
    if state != "success":
        raise StackError(f"run {run_id} ended {state}; task instance rows seen {seen}\n{stack.log_tails()}")

    # The task went through DEFERRED, waiting on this provider's trigger (seen in the metadata DB while the 5 s
    # prediction ran; the trigger row is deleted once the task resumes), and the triggerer ran that trigger.
    assert ("deferred", "execute_complete", TRIGGER_CLASSPATH) in seen, f"task instance rows seen: {seen}"
    stack.wait_for(
        lambda: "Trigger fired event" in stack.trigger_logs(GENERATE_DAG),
        "the triggerer's 'Trigger fired event' in the trigger log",
        LOG_TIMEOUT,
    )

    ti = stack.request("GET", ti_path)
    assert ti["state"] == "success"
    assert ti["try_number"] == 1  # resuming after deferral is the same try

    xcom = stack.request("GET", f"{ti_path}/xcomEntries/return_value?deserialize=true")
    value = xcom["value"]
    if isinstance(value, str):
        value = json.loads(value)
    assert value["status"] == "succeeded"
    assert value["video_url"] == f"{emulator.url}/v1/outputs/{value['prediction_id']}.mp4"
    stats = emulator.stats()
    assert stats["creates"] == 1
    assert stats["gets"] >= 1  # polled by the trigger: the operator itself never reads before deferring
    assert emulator.prediction(value["prediction_id"])["phase"] == "success"


def test_marking_the_deferred_task_failed_cancels_the_prediction(stack: AirflowStack, emulator: Any) -> None:
    emulator.configure(duration=600, speed=1)
    run_id = trigger_run(stack, KILL_DAG)
    ti_path = stack.ti_path(KILL_DAG, run_id, "generate")

    def deferred() -> bool:
        ti = stack.try_request("GET", ti_path)
        if ti and ti["state"] in ("failed", "success", "upstream_failed"):
            raise StackError(f"task ended {ti['state']} before deferring\n{stack.log_tails()}")
        return bool(ti and ti["state"] == "deferred")

    stack.wait_for(deferred, "the task to be DEFERRED", DEFER_TIMEOUT)
    predictions = emulator.predictions()
    assert len(predictions) == 1, predictions
    prediction_id = predictions[0]["id"]
    # The trigger must be running in the triggerer (it has polled) for a user action to reach its on_kill.
    stack.wait_for(lambda: emulator.prediction(prediction_id)["polls"] >= 1, "the trigger to poll", DEFER_TIMEOUT)

    patched = stack.request("PATCH", ti_path, {"new_state": "failed"})
    assert [ti["state"] for ti in patched["task_instances"]] == ["failed"], patched

    stack.wait_for(
        lambda: emulator.prediction(prediction_id)["status"] == "cancelled",
        f"prediction {prediction_id} to be cancelled by the trigger's on_kill",
        CANCEL_TIMEOUT,
    )
    assert emulator.stats()["cancels"] == 1
    assert emulator.stats()["creates"] == 1
    assert stack.request("GET", ti_path)["state"] == "failed"
    assert stack.request("GET", f"/api/v2/dags/{KILL_DAG}/dagRuns/{run_id}")["state"] == "failed"
    # The triggerer forwards the trigger's log lines asynchronously: give the file a moment.
    stack.wait_for(
        lambda: (
            "Trigger cancelled by user action" in stack.trigger_logs(KILL_DAG)
            and f"Cancelled prediction {prediction_id}" in stack.trigger_logs(KILL_DAG)
        ),
        "on_kill's log lines in the trigger log",
        LOG_TIMEOUT,
    )
