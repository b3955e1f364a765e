"""EachlabsToObjectStorageOperator in real DAG runs (``dag.test()`` on the session's PostgreSQL metadata DB).

generate (the emulator, deferred) -> store (moto S3): XCom return values, asset and asset-alias events as the
scheduler records them, and a re-run that uploads nothing.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import pendulum
import pytest
import requests

from airflow_runway.transfers.eachlabs_to_object_storage import SIDECAR_SUFFIX
from tests.fixtures.emulator import succeeded_prediction
from tests.fixtures.runs import rendered_fields, xcoms

pytestmark = pytest.mark.integration

LOGICAL_DATE = pendulum.datetime(2026, 11, 24, tz="UTC")


def asset_events(uri: str, run_id: str) -> list[dict[str, Any]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.uri == uri, AssetEvent.source_run_id == run_id)
            .order_by(AssetEvent.source_map_index)
        ).all()
        return [{"map_index": row.source_map_index, "extra": dict(row.extra)} for row in rows]


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_generate_then_store_mapped(dag_from_source, emulator, eachlabs_connection, s3_bucket):
    from airflow.utils.state import DagRunState

    dag_id = f"transfer_pipeline_{uuid.uuid4().hex[:8]}"
    dag = dag_from_source(
        dag_id,
        f"""
        from airflow.sdk import DAG, Asset, AssetAlias

        from airflow_runway.operators.runway import RunwayGenerateVideoOperator
        from airflow_runway.transfers.eachlabs_to_object_storage import EachlabsToObjectStorageOperator

        with DAG("{dag_id}", schedule=None) as dag:
            generate = RunwayGenerateVideoOperator.partial(
                task_id="generate", duration=5, poll_interval=0.1, max_poll_interval=0.2
            ).expand(prompt_text=["a lighthouse", "a storm"])
            EachlabsToObjectStorageOperator.partial(
                task_id="store",
                destination="s3://{s3_bucket.name}/runway/{{{{ ds }}}}/{{{{ ti.map_index }}}}.mp4",
                dest_conn_id="{s3_bucket.conn_id}",
                allow_insecure_http=True,
                outlets=[Asset("runway-videos", uri="s3://{s3_bucket.name}/runway/"), AssetAlias("runway-objects")],
            ).expand(source=generate.output)
        """,
    )
    dag_run = dag.test(logical_date=LOGICAL_DATE)
    assert dag_run.state == DagRunState.SUCCESS

    keys = [f"runway/2026-11-24/{i}.mp4" for i in (0, 1)]
    assert s3_bucket.keys() == sorted([*keys, *(k + SIDECAR_SUFFIX for k in keys)])
    generated = xcoms(dag_run, "generate")
    stored = xcoms(dag_run, "store")
    assert sorted(stored) == [0, 1]
    for index, key in enumerate(keys):
        body = s3_bucket.read(key)
        served = requests.get(generated[index]["video_url"], timeout=30).content
        assert sha256_of(body) == sha256_of(served) == stored[index]["sha256"]
        assert stored[index]["uri"] == f"s3://{s3_bucket.name}/{key}"
        assert stored[index]["prediction_id"] == generated[index]["prediction_id"]
        assert stored[index]["uploaded"] is True

    # The Asset outlet: one event per mapped task, carrying what was stored.
    events = asset_events(f"s3://{s3_bucket.name}/runway", dag_run.run_id)  # Airflow drops the trailing "/"
    assert [e["map_index"] for e in events] == [0, 1]
    for event in events:
        assert event["extra"]["uri"] == stored[event["map_index"]]["uri"]
        assert event["extra"]["sha256"] == stored[event["map_index"]]["sha256"]
    # The AssetAlias outlet: each stored object became an asset of its own, with an event.
    for index, key in enumerate(keys):
        (event,) = asset_events(f"s3://{s3_bucket.name}/{key}", dag_run.run_id)
        assert event["extra"]["sha256"] == stored[index]["sha256"]


def test_rerun_of_the_dag_does_not_upload_again(dag_from_source, emulator, s3_bucket):
    from airflow.utils.state import DagRunState

    prediction = succeeded_prediction(emulator)
    dag_id = f"transfer_rerun_{uuid.uuid4().hex[:8]}"
    dag = dag_from_source(
        dag_id,
        f"""
        from airflow.sdk import DAG

        from airflow_runway.transfers.eachlabs_to_object_storage import EachlabsToObjectStorageOperator

        with DAG("{dag_id}", schedule=None) as dag:
            EachlabsToObjectStorageOperator(
                task_id="store",
                source={prediction!r},
                destination="s3://{s3_bucket.name}/daily/",
                dest_conn_id="{s3_bucket.conn_id}",
                allow_insecure_http=True,
            )
        """,
    )
    first = dag.test(logical_date=LOGICAL_DATE)
    assert first.state == DagRunState.SUCCESS
    key = f"daily/{prediction['prediction_id']}.mp4"
    client = s3_bucket.server.client()
    head = client.head_object(Bucket=s3_bucket.name, Key=key)

    second = dag.test(logical_date=LOGICAL_DATE.add(days=1))
    assert second.state == DagRunState.SUCCESS
    (result,) = xcoms(second, "store").values()
    assert result["uploaded"] is False
    assert emulator.stats()["output_requests"] == 1
    head_after = client.head_object(Bucket=s3_bucket.name, Key=key)
    assert (head_after["ETag"], head_after["LastModified"]) == (head["ETag"], head["LastModified"])


def test_failed_download_fails_the_task_and_leaves_nothing(dag_from_source, emulator, s3_bucket):
    from airflow.utils.state import DagRunState

    prediction = succeeded_prediction(emulator)
    emulator.inject(route="output", kind="truncate", after_bytes=1000, times=10)
    dag_id = f"transfer_fail_{uuid.uuid4().hex[:8]}"
    dag = dag_from_source(
        dag_id,
        f"""
        from airflow.sdk import DAG

        from airflow_runway.transfers.eachlabs_to_object_storage import EachlabsToObjectStorageOperator

        with DAG("{dag_id}", schedule=None) as dag:
            EachlabsToObjectStorageOperator(
                task_id="store",
                source={prediction!r},
                destination="s3://{s3_bucket.name}/fail/",
                dest_conn_id="{s3_bucket.conn_id}",
                allow_insecure_http=True,
                max_attempts=2,
                retry_wait=0.01,
            )
        """,
    )
    dag_run = dag.test(logical_date=LOGICAL_DATE)
    assert dag_run.state == DagRunState.FAILED
    assert emulator.stats()["output_requests"] == 2
    assert s3_bucket.keys() == []
    uploads = s3_bucket.server.client().list_multipart_uploads(Bucket=s3_bucket.name).get("Uploads", [])
    assert uploads == []


def test_a_signed_urls_query_string_is_not_in_the_rendered_fields(dag_from_source, emulator, tmp_path):
    """The transfer's RTIF row (plain and mapped) shows the URL without its signature; the generation task's
    return value, which the transfer reads, is the one place the signed URL lives."""
    from airflow.utils.state import DagRunState

    prediction = succeeded_prediction(emulator)
    signature = "X-Amz-Expires=86400&X-Amz-Signature=" + uuid.uuid4().hex * 2
    signed = {**prediction, "video_url": f"{prediction['video_url']}?{signature}", "outputs": []}
    dag_id = f"transfer_rtif_{uuid.uuid4().hex[:8]}"
    dag = dag_from_source(
        dag_id,
        f"""
        from airflow.sdk import DAG, task

        from airflow_runway.transfers.eachlabs_to_object_storage import EachlabsToObjectStorageOperator

        with DAG("{dag_id}", schedule=None) as dag:

            @task
            def generate():
                return {signed!r}

            @task
            def generate_many():
                return [{signed!r}]

            EachlabsToObjectStorageOperator(
                task_id="store", source=generate(), destination="file://{tmp_path}/one/"
            )
            EachlabsToObjectStorageOperator.partial(
                task_id="store_mapped", destination="file://{tmp_path}/many/"
            ).expand(source=generate_many())
        """,
    )
    dag_run = dag.test(logical_date=LOGICAL_DATE)
    assert dag_run.state == DagRunState.SUCCESS
    for task_id, map_index in (("store", -1), ("store_mapped", 0)):
        fields = rendered_fields(dag_run, task_id)[map_index]
        assert signature not in json.dumps(fields)
        assert fields["source"]["video_url"] == f"{prediction['video_url']}?***"
        assert xcoms(dag_run, task_id)[map_index]["source_url"] == prediction["video_url"]
    assert xcoms(dag_run, "generate")[-1]["video_url"] == signed["video_url"]  # where the signed URL does live
