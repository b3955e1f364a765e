"""
### Runway review and publish

Generate a video, store it under a **staging** prefix, ask a person to approve it, then **publish** it (a copy
under the published prefix and an event on the `runway_published_video` asset, which downstream DAGs can be
scheduled on). A reviewer who rejects it may give a **revised prompt**: a new video is generated from it and
reviewed again, at most `max_regenerations` times per run.

```
generate_1 -> stage_1 -> review_1 -+-> publish_1
                                   +-> generate_2 -> stage_2 -> review_2 -+-> publish_2
                                                                          +-> generate_3 -> ... -> publish_3
```

**How "regenerate at most N times" works.** A DAG has no loops, so the rounds are unrolled: the file builds
`MAX_ROUNDS` (3) rounds of *generate -> stage -> review*, each review branching to its round's publish task
(Approve) or to the next round (Reject with a revised prompt). The `max_regenerations` param (0 to
`MAX_ROUNDS - 1`) limits a run further: once it is reached, Reject ends the run. A Reject with an empty
revised prompt ends it at once. Rounds that do not happen show as *skipped* in the grid; each paid video is
one round's `generate_<n>` task, so the grid shows exactly what was spent.

**Reviewing.** The review task waits (no worker slot, no triggerer) in Airflow's *Required actions* page
(Browse -> Required actions, or the task's page). Its text shows the prompt, the cost and the render time, and
links to the video: the task's **Runway video** tab plays the staged copy inside Airflow. Respond there, or
through the REST API:

```bash
curl -X PATCH "$AIRFLOW/api/v2/dags/runway_review_and_publish/dagRuns/$RUN_ID/taskInstances/review_1/-1/hitlDetails" \\
  -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
  -d '{"chosen_options": ["Reject"], "params_input": {"revised_prompt": "the same lighthouse, at dawn"}}'
```

**Params:** `prompt`, `ratio`, `duration`, `max_regenerations`, `staging` and `published` (folder URIs ending
in `/`: `file://`, `s3://`, `gs://`, `abfs://`), `dest_conn_id` (their Airflow connection; empty for local
files). The defaults run against the bundled emulator and local storage.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, Param, task

from airflow_runway.operators.runway import RunwayGenerateVideoOperator
from airflow_runway.review import REVIEW_XCOM_KEY, VideoReviewOperator, publish_video
from airflow_runway.transfers.eachlabs_to_object_storage import EachlabsToObjectStorageOperator

#: Review rounds built into the DAG: the first video plus at most MAX_ROUNDS - 1 regenerations.
MAX_ROUNDS = 3
#: Downstream DAGs are scheduled on this asset; each event's extra names the published video.
PUBLISHED_VIDEO = Asset("runway_published_video")
VIDEO_ROOT = os.environ.get("RUNWAY_VIDEO_ROOT", "file:///tmp/airflow-runway/videos/").rstrip("/")
POLL_INTERVAL = float(os.environ.get("RUNWAY_POLL_INTERVAL", "10"))


@task(outlets=[PUBLISHED_VIDEO])
def publish(staged: dict[str, Any], *, published: str, dest_conn_id: str | None, outlet_events: Any = None) -> dict:
    """Copy the approved video from staging to the published folder; the asset event names it."""
    result = publish_video(staged, published, dest_conn_id or None)
    outlet_events[PUBLISHED_VIDEO].extra.update(result)
    return result


with DAG(
    dag_id="runway_review_and_publish",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    params={
        "prompt": Param("A lighthouse in a storm at dusk, cinematic", type="string", minLength=1, maxLength=1000),
        "ratio": Param("16:9", enum=["16:9", "9:16"]),
        "duration": Param(10, enum=[5, 10]),
        "max_regenerations": Param(
            MAX_ROUNDS - 1,
            type="integer",
            minimum=0,
            maximum=MAX_ROUNDS - 1,
            description="How many times a reviewer may reject a video and have a new one generated.",
        ),
        "staging": Param(f"{VIDEO_ROOT}/staging/", type="string"),
        "published": Param(f"{VIDEO_ROOT}/published/", type="string"),
        "dest_conn_id": Param(None, type=["null", "string"]),
    },
    tags=["runway", "example", "human-in-the-loop"],
    doc_md=__doc__,
) as dag:
    previous_review: VideoReviewOperator | None = None
    for number in range(1, MAX_ROUNDS + 1):
        prompt = (
            "{{ params.prompt }}"
            if previous_review is None
            else f"{{{{ ti.xcom_pull(task_ids='{previous_review.task_id}', key='{REVIEW_XCOM_KEY}')"
            "['revised_prompt'] }}"
        )
        generate = RunwayGenerateVideoOperator(
            task_id=f"generate_{number}",
            prompt_text=prompt,
            ratio="{{ params.ratio }}",
            duration="{{ params.duration }}",
            pool="eachlabs",
            poll_interval=POLL_INTERVAL,
            timeout=timedelta(minutes=45),
        )
        stage = EachlabsToObjectStorageOperator(
            task_id=f"stage_{number}",
            source=generate.output,
            destination="{{ params.staging }}",  # a folder: the file is <prediction id>.mp4
            dest_conn_id="{{ params.dest_conn_id or '' }}",
        )
        last = number == MAX_ROUNDS
        review = VideoReviewOperator(
            task_id=f"review_{number}",
            prompt=prompt,
            generation_task_id=generate.task_id,
            stored_task_id=stage.task_id,
            approve_task_id=f"publish_{number}",
            regenerate_task_id=None if last else f"generate_{number + 1}",
            round_index=number - 1,
            max_regenerations="{{ params.max_regenerations }}",
            response_timeout=timedelta(days=7),
        )
        published = publish.override(task_id=f"publish_{number}")(
            stage.output, published="{{ params.published }}", dest_conn_id="{{ params.dest_conn_id or '' }}"
        )
        if previous_review is not None:
            previous_review >> generate
        stage >> review >> published
        previous_review = review
