"""
### Runway batch videos

Generate one video per prompt with dynamic task mapping, store each, and summarise the batch.

```
prompts -> generate[xN] (deferrable, pool "eachlabs") -> store[xN] -> summary
```

The Eachlabs API runs at most 10 predictions at once per account and answers 429 beyond that. The
`eachlabs` pool (10 slots, `--include-deferred`) makes Airflow hold the 11th task until one finishes, so
the 429 never fires, however long the prompt list:

```bash
airflow pools set eachlabs 10 "Eachlabs in-flight predictions" --include-deferred
```
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_runway.operators.runway import RunwayGenerateVideoOperator
from airflow_runway.transfers.eachlabs_to_object_storage import EachlabsToObjectStorageOperator

VIDEO_ROOT = os.environ.get("RUNWAY_VIDEO_ROOT", "file:///tmp/airflow-runway/videos/")
POLL_INTERVAL = float(os.environ.get("RUNWAY_POLL_INTERVAL", "10"))

with DAG(
    dag_id="runway_batch_videos",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2), "retry_exponential_backoff": True},
    params={
        "prompts": Param(
            [
                "A paper boat drifting down a rainy street, macro lens",
                "Northern lights over a frozen lake, timelapse",
                "A hummingbird hovering at a red flower, slow motion",
            ],
            type="array",
            items={"type": "string", "maxLength": 1000},
            minItems=1,
        ),
        "ratio": Param("16:9", enum=["16:9", "9:16"]),
        "duration": Param(5, enum=[5, 10]),
        "destination": Param(f"{VIDEO_ROOT.rstrip('/')}/batch/", type="string"),
        "dest_conn_id": Param("", type="string"),
    },
    tags=["runway", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def prompts(params: dict[str, Any]) -> list[str]:
        return list(params["prompts"])

    generate = RunwayGenerateVideoOperator.partial(
        task_id="generate",
        ratio="{{ params.ratio }}",
        duration="{{ params.duration }}",
        pool="eachlabs",
        poll_interval=POLL_INTERVAL,
        timeout=timedelta(hours=2),  # a long batch queues in the pool: leave room for the wait
    ).expand(prompt_text=prompts())

    store = EachlabsToObjectStorageOperator.partial(
        task_id="store",
        # run_after, not ds: a run triggered through the REST API has no logical date by default (Airflow 3).
        destination="{{ params.destination }}{{ dag_run.run_after | ds }}/",
        dest_conn_id="{{ params.dest_conn_id }}",
    ).expand(source=generate.output)

    @task
    def summary(stored: list[dict[str, Any]]) -> dict[str, Any]:
        """Log and return what the batch produced."""
        stored = list(stored)
        total = sum(item["size"] for item in stored)
        for item in stored:
            print(f"{item['uri']}  {item['size']:,} bytes  sha256={item['sha256']}")
        return {"videos": len(stored), "bytes": total, "uris": [item["uri"] for item in stored]}

    summary(store.output)
