"""The generation operators and the sensor in real DAG runs (``dag.test()``, PostgreSQL metadata DB, emulator)."""

from __future__ import annotations

import pytest
from airflow.utils.state import DagRunState, TaskInstanceState

from tests.fixtures.dags import run_generation_dag as run_dag
from tests.fixtures.runs import rendered_fields, task_instances, xcom

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("deferrable", [True, False])
def test_generate_returns_the_video_and_sets_link_and_xcoms(dag_from_source, emulator, eachlabs_connection, deferrable):
    run = run_dag(
        dag_from_source,
        f"""RunwayGenerateVideoOperator(task_id="generate", prompt_text="a lighthouse {{{{ ds }}}}",
    duration=5, deferrable={deferrable}, **FAST)""",
    )
    assert run.state == DagRunState.SUCCESS
    result = xcom(run, "generate")
    assert set(result) == {"prediction_id", "status", "video_url", "outputs", "metrics"}
    assert result["status"] == "succeeded"
    assert result["video_url"] == f"{emulator.url}/v1/outputs/{result['prediction_id']}.mp4"
    assert result["outputs"] == [result["video_url"]]
    assert result["metrics"]["predict_time"] == 10
    assert xcom(run, "generate", "prediction_id") == result["prediction_id"]
    assert xcom(run, "generate", "_link_RunwayVideoLink") == result["video_url"]  # the "Runway video" link
    assert task_instances(run, "generate")[0].try_number == 1
    stats = emulator.stats()
    assert stats["creates"] == 1
    sent = emulator.prediction(result["prediction_id"])
    assert sent["input"]["promptText"].startswith("a lighthouse 20")  # templated with ds
    assert sent["auth_scheme"] == "x-api-key"


def test_any_eachlabs_model_with_a_templated_input(dag_from_source, emulator, eachlabs_connection):
    run = run_dag(
        dag_from_source,
        """EachlabsPredictionOperator(task_id="ltx", model="ltx-video", version="0.0.1",
    input={"prompt": "waves, {{ ds }}", "num_frames": 97}, **FAST)""",
    )
    assert run.state == DagRunState.SUCCESS
    result = xcom(run, "ltx")
    assert emulator.prediction(result["prediction_id"])["input"]["prompt"].startswith("waves, 20")


def test_bad_input_fails_at_once_without_any_request(dag_from_source, emulator, eachlabs_connection):
    run = run_dag(
        dag_from_source,
        """RunwayGenerateVideoOperator(task_id="generate", prompt_text="x", ratio="4:3", **FAST)""",
    )
    assert run.state == DagRunState.FAILED
    ti = task_instances(run, "generate")[0]
    assert ti.state == TaskInstanceState.FAILED
    assert ti.try_number == 1  # AirflowFailException: the two retries were not spent
    assert emulator.stats()["requests"] == 0


@pytest.mark.parametrize(
    ("configure", "fault"),
    [
        ({"payment_required": True}, None),  # 402
        ({}, {"route": "create", "kind": "http", "status": 401}),
        ({}, {"route": "create", "kind": "fail_prediction", "error_code": "PROVIDER_REJECTED", "at_once": True}),
    ],
)
def test_permanent_errors_fail_without_retries(dag_from_source, emulator, eachlabs_connection, configure, fault):
    emulator.configure(**configure)
    if fault:
        emulator.inject(**fault)
    run = run_dag(dag_from_source, """RunwayGenerateVideoOperator(task_id="generate", prompt_text="x", **FAST)""")
    assert run.state == DagRunState.FAILED
    assert task_instances(run, "generate")[0].try_number == 1
    assert emulator.stats()["create_requests"] == 1


def test_timeout_cancels_the_prediction(dag_from_source, emulator, eachlabs_connection):
    emulator.configure(duration=3600, speed=1)
    run = run_dag(
        dag_from_source,
        """RunwayGenerateVideoOperator(task_id="generate", prompt_text="x", timeout=0.5, retries=0, **FAST)""",
    )
    assert run.state == DagRunState.FAILED
    (prediction,) = emulator.predictions()
    assert prediction["status"] == "cancelled"
    assert emulator.stats()["cancels"] == 1


def test_a_retry_resumes_the_running_prediction_instead_of_paying_again(dag_from_source, emulator, eachlabs_connection):
    # The first try is killed by its execution timeout while the (3 s) prediction runs, like a crashed worker;
    # the retry must find the prediction in task_state_store and wait for it, not create a second one.
    emulator.configure(duration=300, speed=100)
    run = run_dag(
        dag_from_source,
        """RunwayGenerateVideoOperator(task_id="generate", prompt_text="x", deferrable=False, cancel_on_kill=False,
    execution_timeout=timedelta(seconds=1), retries=3, **FAST)""",
    )
    ti = task_instances(run, "generate")[0]
    assert ti.try_number >= 2
    assert run.state == DagRunState.SUCCESS
    assert emulator.stats()["creates"] == 1
    assert xcom(run, "generate")["prediction_id"] == emulator.predictions()[0]["id"]


@pytest.mark.parametrize("deferrable", [True, False])
def test_submit_then_sensor(dag_from_source, emulator, eachlabs_connection, deferrable):
    run = run_dag(
        dag_from_source,
        f"""submit = RunwayGenerateVideoOperator(task_id="submit", prompt_text="x", wait_for_completion=False)
wait = EachlabsPredictionSensor(task_id="wait", deferrable={deferrable}, poke_interval=0.1,
    prediction_id="{{{{ ti.xcom_pull(task_ids='submit', key='prediction_id') }}}}")
submit >> wait""",
    )
    assert run.state == DagRunState.SUCCESS
    submitted = xcom(run, "submit")
    assert submitted["status"] == "pending"
    waited = xcom(run, "wait")
    assert waited["prediction_id"] == submitted["prediction_id"]
    assert waited["status"] == "succeeded"
    assert waited["video_url"]
    assert emulator.stats()["creates"] == 1


def test_the_api_key_appears_nowhere(dag_from_source, emulator, monkeypatch, capfd):
    """Not in output or task logs, XComs, rendered template fields, or trigger rows in the metadata DB."""
    import json
    import os
    from pathlib import Path

    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.trigger import Trigger
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    secret = "sk-live-UNIQUE-7f3a9c2e51d84b06"
    emulator.configure(api_key=secret)
    conn = {"conn_type": "eachlabs", "host": emulator.url, "password": secret}
    monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_DEFAULT", json.dumps(conn))
    emulator.inject(route="get", kind="http", status=503, times=1)  # a retry logs its reason: still no key
    run = run_dag(dag_from_source, """RunwayGenerateVideoOperator(task_id="generate", prompt_text="x", **FAST)""")
    assert run.state == DagRunState.SUCCESS

    captured = capfd.readouterr()
    assert "Prediction" in captured.out + captured.err  # the run did log
    assert secret not in captured.out + captured.err
    logs = Path(os.environ["AIRFLOW_HOME"]) / "logs"
    for log_file in logs.rglob("*") if logs.exists() else []:
        if log_file.is_file():
            assert secret not in log_file.read_text(errors="replace"), log_file
    with create_session() as session:
        stored = [str(XComModel.deserialize_value(x)) for x in session.scalars(select(XComModel)).all()]
        stored += [json.dumps(r.rendered_fields) for r in session.scalars(select(RenderedTaskInstanceFields)).all()]
        stored += [json.dumps(t.kwargs, default=str) for t in session.scalars(select(Trigger)).all()]
    assert stored, "nothing was read back from the metadata DB"
    assert not [s for s in stored if secret in s]


def test_rendered_fields_are_named_after_the_arguments_and_show_what_is_sent(
    dag_from_source, emulator, eachlabs_connection
):
    """Issue 9, point 4: ``model`` is Runway's model (no ``runway_model``, no empty ``input``), as sent."""
    run = run_dag(
        dag_from_source,
        """RunwayGenerateVideoOperator(task_id="generate", prompt_text="a lighthouse {{ ds }}", model="gen4_turbo",
    ratio="9:16", duration=5, seed=7, **FAST)""",
    )
    assert run.state == DagRunState.SUCCESS
    fields = rendered_fields(run, "generate")[-1]
    assert "runway_model" not in fields and "input" not in fields
    sent = emulator.prediction(xcom(run, "generate")["prediction_id"])["input"]
    assert fields["prompt_text"] == sent["promptText"] and fields["prompt_text"].startswith("a lighthouse 20")
    assert (fields["model"], fields["ratio"], str(fields["duration"]), str(fields["seed"])) == (
        sent["model"],
        sent["ratio"],
        sent["duration"],
        str(sent["seed"]),
    )


def test_a_deferral_logs_no_xcom_error_for_the_link(dag_from_source, emulator, eachlabs_connection, capfd, caplog):
    """The task runner resolves the "Runway video" link at the end of every try, a deferral included: the link
    must not look up an XCom that cannot exist yet (the execution API client logs a miss as an error)."""
    emulator.configure(duration=60, speed=100)  # 0.6 s: several polls while deferred
    run = run_dag(
        dag_from_source, """RunwayGenerateVideoOperator(task_id="generate", prompt_text="x", deferrable=True, **FAST)"""
    )
    assert run.state == DagRunState.SUCCESS
    logged = caplog.text + "".join(capfd.readouterr())
    assert "running trigger in line" in logged  # it did defer
    assert "XCom not found" not in logged
    assert xcom(run, "generate", "_link_RunwayVideoLink") == xcom(run, "generate")["video_url"]
