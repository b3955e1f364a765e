"""The example DAGs users copy: they import cleanly and run end to end against the emulator (``dag.test()``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import airflow
import av
import jsonschema
import pendulum
import pytest
from airflow.utils.state import DagRunState

from tests.fixtures.runs import task_instances, task_states, xcom

pytestmark = pytest.mark.e2e

REPO_DAGS = Path(__file__).resolve().parents[2] / "dags"
EXAMPLE_DAG_IDS = {
    "runway_daily_video",
    "runway_image_to_video",
    "runway_batch_videos",
    "runway_on_new_video",
    "runway_review_and_publish",  # run on the real stack by tests/ui/test_review_and_publish.py
}


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.fixture
def example_env(monkeypatch, tmp_path, eachlabs_connection) -> Path:
    """Fast polling and a temp video root, set before the DAG files are parsed (they read them at parse time)."""
    monkeypatch.setenv("RUNWAY_POLL_INTERVAL", "0.1")
    monkeypatch.setenv("RUNWAY_VIDEO_ROOT", f"file://{tmp_path}/videos/")
    return tmp_path / "videos"


def test_every_example_dag_imports_cleanly(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_DAGS))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == EXAMPLE_DAG_IDS
    for dag_id in EXAMPLE_DAG_IDS:
        dag = bag.get_dag(dag_id)
        assert dag.doc_md, f"{dag_id} has no documentation"
        assert "example" in dag.tags


def ui_requires(schema: dict[str, Any]) -> bool:
    """Airflow 3.3's trigger form rule (``ui/src/components/FlexibleForm/isParamRequired.tsx``): a param is required
    when its schema has a ``type`` that is not a list including ``"null"``; a required param whose value is ``None``
    or ``""`` keeps the Trigger button disabled."""
    kind = schema.get("type")
    return bool(kind) and not (isinstance(kind, list) and "null" in kind)


def test_the_required_rule_is_the_installed_uis():
    """The rule above, as compiled into the UI bundle the installed api-server serves (fails if Airflow changes it)."""
    bundle = "\n".join(p.read_text(errors="replace") for p in (Path(airflow.__file__).parent / "ui/dist").rglob("*.js"))
    rule = r"!!(\w+)\.schema\.type&&\(!Array\.isArray\(\1\.schema\.type\)\|\|!\1\.schema\.type\.includes\(`null`\)\)"
    assert re.search(rule, bundle)


@pytest.mark.parametrize("dag_id", sorted(EXAMPLE_DAG_IDS))
def test_every_example_dag_triggers_from_the_ui_with_its_defaults(airflow_db, dag_id):
    """Each param as the trigger form gets it (the serialized DAG's params, as the API's DAG details serve them):
    its default valid against its own schema, no required field left empty; and the DAG's own validation passes."""
    from airflow.api_fastapi.core_api.datamodels.dags import DAGDetailsResponse
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    dag = DagBag(dag_folder=str(REPO_DAGS / f"{dag_id}.py")).get_dag(dag_id)
    dag.params.validate()
    serialized = DagSerialization.from_dict(json.loads(json.dumps(DagSerialization.to_dict(dag))))
    form = DAGDetailsResponse.get_params(serialized.params) or {}
    assert set(form) == set(dag.params)
    for name, spec in form.items():
        jsonschema.validate(spec["value"], spec["schema"])
        assert not (ui_requires(spec["schema"]) and spec["value"] in (None, "")), f"{dag_id}: {name} shows as empty"


def test_daily_video_to_local_files_then_manifest(project_dag, emulator, example_env):
    daily = project_dag("runway_daily_video")
    run = daily.test(logical_date=pendulum.datetime(2026, 11, 24, tz="UTC"))
    assert run.state == DagRunState.SUCCESS, task_states(run)

    generated = xcom(run, "generate")
    stored = xcom(run, "store")
    assert generated["status"] == "succeeded"
    video = Path(stored["uri"].removeprefix("file://"))
    assert video == example_env / "daily" / "2026-11-24" / f"{generated['prediction_id']}.mp4"
    assert video.stat().st_size == stored["size"] > 1000
    assert decoded_frames(video) > 10
    record = emulator.prediction(generated["prediction_id"])
    assert record["input"]["promptText"] == "A lighthouse in a storm at dusk, cinematic, 2026-11-24"
    assert record["input"]["duration"] == "10"  # the templated param, sent as the API's string form

    # The consumer DAG, run by hand, takes the asset's latest event and writes the manifest beside the video.
    manifest_run = project_dag("runway_on_new_video").test()
    assert manifest_run.state == DagRunState.SUCCESS, task_states(manifest_run)
    manifest = json.loads(video.with_name(video.name + ".manifest.json").read_text())
    assert manifest["sha256"] == stored["sha256"]
    assert manifest["size"] == stored["size"]
    assert manifest["prediction_id"] == generated["prediction_id"]
    assert manifest["prompt"] == record["input"]["promptText"]


def test_daily_video_to_s3(project_dag, emulator, example_env, s3_bucket):
    daily = project_dag("runway_daily_video")
    conf = {"destination": f"s3://{s3_bucket.name}/daily/", "dest_conn_id": s3_bucket.conn_id, "duration": 5}
    run = daily.test(logical_date=pendulum.datetime(2026, 11, 25, tz="UTC"), run_conf=conf)
    assert run.state == DagRunState.SUCCESS, task_states(run)
    stored = xcom(run, "store")
    key = stored["uri"].removeprefix(f"s3://{s3_bucket.name}/")
    assert key.startswith("daily/2026-11-25/") and key.endswith(".mp4")
    assert len(s3_bucket.read(key)) == stored["size"]
    assert emulator.prediction(stored["prediction_id"])["input"]["duration"] == "5"


def test_image_to_video_sends_the_first_frame_as_a_data_uri(project_dag, emulator, example_env):
    # No logical date, as `airflow dags trigger` and the REST API create a run by default: no `ds` in the context.
    run = project_dag("runway_image_to_video").test(logical_date=None)
    assert run.state == DagRunState.SUCCESS, task_states(run)
    assert run.logical_date is None
    generated = xcom(run, "generate")
    sent = emulator.prediction(generated["prediction_id"])["input"]["promptImage"]
    assert sent.startswith("data:image/png;base64,")
    stored = xcom(run, "store")
    video = Path(stored["uri"].removeprefix("file://"))
    assert video.stat().st_size == stored["size"]
    assert video.parent == example_env / "image-to-video" / run.run_after.strftime("%Y-%m-%d")


def test_batch_videos_maps_over_prompts_within_the_concurrency_cap(project_dag, emulator, example_env):
    long_prompt = "A very long prompt about a lighthouse keeper who paints the sea at dawn, every single day"
    prompts = [f"prompt number {i}" for i in range(3)] + [long_prompt]
    run = project_dag("runway_batch_videos").test(run_conf={"prompts": prompts})
    assert run.state == DagRunState.SUCCESS, task_states(run)
    summary = xcom(run, "summary")
    assert summary["videos"] == 4
    assert len(set(summary["uris"])) == 4
    stats = emulator.stats()
    assert stats["creates"] == 4
    assert stats["status_429"] == 0
    assert stats["peak_in_flight"] <= 10
    sent = sorted(p["input"]["promptText"] for p in emulator.predictions())
    assert sent == sorted(prompts)
    # Each mapped generation task is labelled with its prompt (shortened), not an anonymous index.
    labels = {ti.map_index: ti.rendered_map_index for ti in task_instances(run, "generate")}
    assert labels == {
        0: "prompt number 0",
        1: "prompt number 1",
        2: "prompt number 2",
        3: "A very long prompt about a lighthouse keeper who paints...",  # Jinja truncate(60)
    }
