"""The example DAGs users copy: they import cleanly and run end to end against the emulator (``dag.test()``)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pendulum
import pytest
from airflow.utils.state import DagRunState

from tests.fixtures.runs import task_states, xcom

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
    run = project_dag("runway_image_to_video").test()
    assert run.state == DagRunState.SUCCESS, task_states(run)
    generated = xcom(run, "generate")
    sent = emulator.prediction(generated["prediction_id"])["input"]["promptImage"]
    assert sent.startswith("data:image/png;base64,")
    stored = xcom(run, "store")
    assert Path(stored["uri"].removeprefix("file://")).stat().st_size == stored["size"]


def test_batch_videos_maps_over_prompts_within_the_concurrency_cap(project_dag, emulator, example_env):
    prompts = [f"prompt number {i}" for i in range(4)]
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
    assert sent == prompts
