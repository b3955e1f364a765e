"""
### Runway image to video

Read a first frame from object storage, animate it with Runway (image-to-video), store the video.

```
generate (prompt_image read from object storage, sent as a data URI) -> store
```

The first frame may be any `ObjectStoragePath` URI (`s3://bucket/frames/first.png` with `image_conn_id`)
or a local file; the default is the PNG shipped next to this file. JPEG, PNG and WebP up to 5 MB encoded.
Set up the `eachlabs` pool and connection as described in `runway_daily_video`.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param

from airflow_runway.operators.runway import RunwayGenerateVideoOperator
from airflow_runway.transfers.eachlabs_to_object_storage import EachlabsToObjectStorageOperator

FIRST_FRAME = (Path(__file__).parent / "assets" / "first_frame.png").resolve().as_uri()
VIDEO_ROOT = os.environ.get("RUNWAY_VIDEO_ROOT", "file:///tmp/airflow-runway/videos/")
POLL_INTERVAL = float(os.environ.get("RUNWAY_POLL_INTERVAL", "10"))

with DAG(
    dag_id="runway_image_to_video",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2), "retry_exponential_backoff": True},
    params={
        "first_frame": Param(FIRST_FRAME, type="string", description="URI of the first frame"),
        "image_conn_id": Param("", type="string", description="connection to read the first frame"),
        "prompt": Param("The lighthouse beam sweeps across the waves", type="string", maxLength=900),
        "ratio": Param("16:9", enum=["16:9", "9:16"]),
        "destination": Param(f"{VIDEO_ROOT.rstrip('/')}/image-to-video/", type="string"),
        "dest_conn_id": Param("", type="string"),
    },
    tags=["runway", "example"],
    doc_md=__doc__,
) as dag:
    generate = RunwayGenerateVideoOperator(
        task_id="generate",
        prompt_image="{{ params.first_frame }}",
        image_conn_id="{{ params.image_conn_id }}",
        prompt_text="{{ params.prompt }}",
        ratio="{{ params.ratio }}",
        duration=5,
        pool="eachlabs",
        poll_interval=POLL_INTERVAL,
        timeout=timedelta(minutes=45),
    )

    EachlabsToObjectStorageOperator(
        task_id="store",
        source=generate.output,
        # run_after, not ds: a run triggered through the REST API has no logical date by default (Airflow 3).
        destination="{{ params.destination }}{{ dag_run.run_after | ds }}/",
        dest_conn_id="{{ params.dest_conn_id }}",
    )
