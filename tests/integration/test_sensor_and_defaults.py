"""The sensor checks before it defers; ``deferrable`` follows a deployment's ``[operators] default_deferrable``."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_runway.sensors.prediction import EachlabsPredictionSensor
from tests.fixtures.emulator import succeeded_prediction

pytestmark = pytest.mark.integration


class TaskInstance:
    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


def test_a_finished_prediction_costs_no_deferral(emulator, eachlabs_connection):
    """Issue 7, point 16: Airflow's convention for deferrable sensors: check once, defer only if not done."""
    done = succeeded_prediction(emulator)
    ti = TaskInstance()
    result = EachlabsPredictionSensor(task_id="wait", prediction_id=done["prediction_id"]).execute({"ti": ti})
    assert result["status"] == "succeeded"
    assert result["video_url"] == ti.xcoms["video_url"]
    assert emulator.stats()["gets"] >= 1


def test_a_running_prediction_is_waited_for_in_the_triggerer(emulator, eachlabs_connection, hook_factory):
    emulator.configure(duration=600, speed=1)
    pid = hook_factory().create_prediction(model="runway", version="0.0.1", input={"promptText": "x"})
    with pytest.raises(TaskDeferred) as deferred:
        EachlabsPredictionSensor(task_id="wait", prediction_id=pid).execute({"ti": TaskInstance()})
    assert deferred.value.trigger.prediction_id == pid
    assert deferred.value.trigger.cancel_on_kill is False  # the sensor does not own the prediction


PROBE = """
from airflow_runway.operators.prediction import EachlabsPredictionOperator
from airflow_runway.operators.runway import RunwayGenerateVideoOperator
from airflow_runway.sensors.prediction import EachlabsPredictionSensor
print(
    EachlabsPredictionOperator(task_id="a", model="m", version="1").deferrable,
    RunwayGenerateVideoOperator(task_id="b", prompt_text="x").deferrable,
    EachlabsPredictionSensor(task_id="c", prediction_id="p").deferrable,
)
"""


@pytest.mark.parametrize(("setting", "expected"), [(None, "True"), ("False", "False"), ("True", "True")])
def test_deferrable_follows_the_deployments_default_deferrable(setting, expected, tmp_path):
    """Issue 7, point 14: a deployment without a triggerer switches the default off with Airflow's own option.

    The Airflow home here has the airflow.cfg Airflow generates, which holds ``default_deferrable = false`` (the
    option's default): that alone must not switch these operators to waiting in the worker.
    """
    env = {key: value for key, value in os.environ.items() if key != "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"}
    env["AIRFLOW_HOME"] = str(tmp_path)
    env.pop("AIRFLOW_CONFIG", None)
    if setting is not None:
        env["AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"] = setting
    subprocess.run([sys.executable, "-m", "airflow", "config", "list"], env=env, capture_output=True, check=True)
    assert "default_deferrable = false" in (tmp_path / "airflow.cfg").read_text()
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1].split() == [expected] * 3
