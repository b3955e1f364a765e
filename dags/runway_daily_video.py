"""
### Runway daily video

Every day, generate one Runway video from a prompt templated with the logical date, store it in object
storage, and announce it as the `runway_daily_video` asset (which `runway_on_new_video` is scheduled on).

```
generate (deferrable, pool "eachlabs") -> store (streamed to object storage, asset event)
```

**Set-up, once per deployment** (the pool caps in-flight predictions at the API's 10, deferred ones included):

```bash
airflow pools set eachlabs 10 "Eachlabs in-flight predictions" --include-deferred
airflow connections add eachlabs_default --conn-type eachlabs --conn-host https://api.eachlabs.ai \
    --conn-password "$EACHLABS_API_KEY"
```

**Params** (override per run with `airflow dags trigger -c '{...}'` or the trigger form):
`prompt`, `ratio`, `duration`, `destination` (a folder URI ending in `/`: `file://`, `s3://`, `gs://`,
`abfs://`), `dest_conn_id` (the destination's Airflow connection, empty for local files).
The defaults run against the bundled emulator (`python -m airflow_runway.emulator`) and local storage.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Asset, Param

from airflow_runway.operators.runway import RunwayGenerateVideoOperator
from airflow_runway.transfers.eachlabs_to_object_storage import EachlabsToObjectStorageOperator

#: Downstream DAGs are scheduled on this asset; each event carries the stored video's URI and checksum.
DAILY_VIDEO = Asset("runway_daily_video")
VIDEO_ROOT = os.environ.get("RUNWAY_VIDEO_ROOT", "file:///tmp/airflow-runway/videos/")
POLL_INTERVAL = float(os.environ.get("RUNWAY_POLL_INTERVAL", "10"))
#: The run's date: its logical date, or (a run triggered without one, e.g. through the REST API) when it ran.
#: Airflow 3 leaves ``ds`` undefined in a run without a logical date.
RUN_DATE = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"

with DAG(
    dag_id="runway_daily_video",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
    },
    params={
        "prompt": Param("A lighthouse in a storm at dusk, cinematic", type="string", maxLength=900),
        "ratio": Param("16:9", enum=["16:9", "9:16"]),
        "duration": Param(10, enum=[5, 10]),
        "destination": Param(f"{VIDEO_ROOT.rstrip('/')}/daily/", type="string"),
        "dest_conn_id": Param(
            None, type=["null", "string"], description="connection of the destination (none for local files)"
        ),
    },
    tags=["runway", "example"],
    doc_md=__doc__,
) as dag:
    generate = RunwayGenerateVideoOperator(
        task_id="generate",
        prompt_text="{{ params.prompt }}, " + RUN_DATE,
        ratio="{{ params.ratio }}",
        duration="{{ params.duration }}",
        pool="eachlabs",
        poll_interval=POLL_INTERVAL,
        timeout=timedelta(minutes=45),
    )

    store = EachlabsToObjectStorageOperator(
        task_id="store",
        source=generate.output,
        # A folder: the file is named after the prediction id, so a re-run never overwrites another video.
        destination="{{ params.destination }}" + RUN_DATE + "/",
        dest_conn_id="{{ params.dest_conn_id or '' }}",
        outlets=[DAILY_VIDEO],
    )
