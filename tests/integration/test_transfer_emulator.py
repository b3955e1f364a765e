"""EachlabsToObjectStorageOperator against the project emulator (source) and moto S3 / local files (destination).

Each operator is built inside a DAG, its template fields rendered, then executed with a context holding real
outlet event accessors: what a worker does, without a metadata DB (the DAG-level runs are in
``test_transfer_dag.py``). A separate moto server with IAM authentication on shows that the destination's
credentials come from the Airflow connection named by ``dest_conn_id``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import boto3
import pytest
import requests
from airflow.sdk import DAG, Asset, AssetAlias
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_runway.transfers import DownloadError, DownloadRejectedError, EachlabsToObjectStorageOperator
from airflow_runway.transfers.eachlabs_to_object_storage import SIDECAR_SUFFIX
from tests.fixtures.emulator import succeeded_prediction

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def expected_sha256(url: str) -> tuple[str, int]:
    """The digest and size of what the emulator serves at ``url``, computed independently (streamed)."""
    digest = hashlib.sha256()
    size = 0
    with requests.get(url, stream=True, timeout=30) as response:
        response.raise_for_status()
        for chunk in response.iter_content(MiB):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def execute(op: EachlabsToObjectStorageOperator, **context: Any) -> dict[str, Any]:
    """Render the templates and run ``execute`` with a minimal real context, as the task runner does."""
    full = {
        "ds": "2026-11-24",
        "ds_nodash": "20261124",
        "outlet_events": OutletEventAccessors(),
        "params": {},
        **context,
    }
    op.render_template_fields(cast(Any, full))
    return op.execute(cast(Any, full))


def store_task(source: Any, destination: Any, **kwargs: Any) -> EachlabsToObjectStorageOperator:
    kwargs.setdefault("allow_insecure_http", True)  # the emulator serves http://127.0.0.1
    kwargs.setdefault("retry_wait", 0.01)
    kwargs.setdefault("retry_max_wait", 0.05)
    with DAG(dag_id=f"transfer_{uuid.uuid4().hex[:8]}", schedule=None):
        return EachlabsToObjectStorageOperator(task_id="store", source=source, destination=destination, **kwargs)


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


class S3Requests(logging.Handler):
    """The requests moto's server logs (werkzeug's access log), as ``(method, path-with-query)``."""

    _LINE = re.compile(r'"(?:\x1b\[[\d;]*m)*([A-Z]+) (\S+) HTTP/')

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = self._LINE.search(record.getMessage())
        if match:
            self.seen.append((match.group(1), match.group(2)))

    def writes(self, key_part: str) -> list[tuple[str, str]]:
        return [(m, p) for m, p in self.seen if m in ("PUT", "POST", "DELETE") and key_part in p]


@pytest.fixture
def s3_requests() -> Iterator[S3Requests]:
    handler = S3Requests()
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.INFO)
    werkzeug.addHandler(handler)
    yield handler
    werkzeug.removeHandler(handler)
    werkzeug.setLevel(level)


def open_uploads(bucket: Any) -> list[str]:
    listing = bucket.server.client().list_multipart_uploads(Bucket=bucket.name)
    return [u["Key"] for u in listing.get("Uploads", [])]


# ---------------------------------------------------------------------------------------------- happy paths


def test_local_directory_destination(emulator: Any, tmp_path: Path):
    prediction = succeeded_prediction(emulator)
    pid = prediction["prediction_id"]
    op = store_task(prediction, f"file://{tmp_path}/videos/{{{{ ds }}}}/")
    result = execute(op)

    stored = tmp_path / "videos" / "2026-11-24" / f"{pid}.mp4"
    sha, size = expected_sha256(prediction["video_url"])
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == sha == result["sha256"]
    assert result["size"] == size
    assert result["uri"] == f"file://{stored}"
    assert result["uploaded"] is True
    assert result["content_type"] == "video/mp4"
    assert files(tmp_path / "videos") == [f"{pid}.mp4", f"{pid}.mp4{SIDECAR_SUFFIX}"]


def test_s3_large_output_is_streamed_as_a_multipart_upload(emulator: Any, s3_bucket: Any, s3_requests: S3Requests):
    emulator.configure(output_size=12 * MiB + 17)
    prediction = succeeded_prediction(emulator)
    pid = prediction["prediction_id"]
    op = store_task(
        prediction,
        s3_bucket.url("runway/{{ ds }}/"),
        dest_conn_id=s3_bucket.conn_id,
        block_size=5 * MiB,
        outlets=[Asset("runway-videos", uri=s3_bucket.url("runway/")), AssetAlias("runway-video-objects")],
    )
    events = OutletEventAccessors()
    result = execute(op, outlet_events=events)

    key = f"runway/2026-11-24/{pid}.mp4"
    assert s3_bucket.keys() == [key, key + SIDECAR_SUFFIX]
    stored = s3_bucket.read(key)
    assert len(stored) == 12 * MiB + 17 == result["size"]
    assert hashlib.sha256(stored).hexdigest() == expected_sha256(prediction["video_url"])[0] == result["sha256"]
    parts = [p for m, p in s3_requests.writes(f"/{key}?") if m == "PUT" and "partNumber=" in p]
    assert len(parts) == 3
    assert open_uploads(s3_bucket) == []
    sidecar = json.loads(s3_bucket.read(key + SIDECAR_SUFFIX))
    assert sidecar == {
        "sha256": result["sha256"],
        "size": result["size"],
        "source_url": prediction["video_url"],
        "prediction_id": pid,
        "content_type": "video/mp4",
    }
    extra = {k: result[k] for k in ("uri", "sha256", "size", "content_type", "prediction_id", "source_url")}
    extra["dest_conn_id"] = s3_bucket.conn_id  # a consumer reads the object back with the same connection
    assert events[Asset("runway-videos", uri=s3_bucket.url("runway/"))].extra == extra
    (alias_event,) = events[AssetAlias("runway-video-objects")].asset_alias_events
    assert alias_event.dest_asset_key.uri == f"s3://{s3_bucket.name}/{key}"


def test_transient_503_then_success(emulator: Any, tmp_path: Path):
    prediction = succeeded_prediction(emulator)
    emulator.inject(route="output", kind="http", status=503, times=1)
    result = execute(store_task(prediction, f"{tmp_path}/"))
    assert result["uploaded"] is True
    assert emulator.stats()["output_requests"] == 2


def test_a_truncated_attempt_is_restarted(emulator: Any, tmp_path: Path):
    emulator.configure(output_size=2 * MiB)
    prediction = succeeded_prediction(emulator)
    emulator.inject(route="output", kind="truncate", after_bytes=MiB, times=1)
    result = execute(store_task(prediction, f"{tmp_path}/"))
    assert result["size"] == 2 * MiB
    assert result["sha256"] == expected_sha256(prediction["video_url"])[0]
    assert files(tmp_path) == [
        f"{prediction['prediction_id']}.mp4",
        f"{prediction['prediction_id']}.mp4{SIDECAR_SUFFIX}",
    ]


# ---------------------------------------------------------------------------------------------- failures


def test_source_dying_mid_stream_leaves_nothing_on_s3(emulator: Any, s3_bucket: Any, s3_requests: S3Requests):
    emulator.configure(output_size=12 * MiB)
    prediction = succeeded_prediction(emulator)
    emulator.inject(route="output", kind="truncate", after_bytes=7 * MiB, times=2)
    op = store_task(
        prediction, s3_bucket.url("dies/"), dest_conn_id=s3_bucket.conn_id, block_size=5 * MiB, max_attempts=2
    )
    with pytest.raises(DownloadError) as excinfo:
        execute(op)
    assert not isinstance(excinfo.value, AirflowFailException)
    assert emulator.stats()["output_requests"] == 2
    key = f"dies/{prediction['prediction_id']}.mp4"
    assert any(m == "PUT" and "partNumber=1" in p for m, p in s3_requests.writes(key))  # a part had been sent
    assert any(m == "DELETE" and "uploadId=" in p for m, p in s3_requests.writes(key))  # and was aborted
    assert s3_bucket.keys() == []
    assert open_uploads(s3_bucket) == []


def test_source_dying_mid_stream_leaves_nothing_locally(emulator: Any, tmp_path: Path):
    emulator.configure(output_size=3 * MiB)
    prediction = succeeded_prediction(emulator)
    emulator.inject(route="output", kind="truncate", after_bytes=1000, times=3)
    with pytest.raises(DownloadError):
        execute(store_task(prediction, f"{tmp_path}/out/", max_attempts=3))
    assert files(tmp_path) == []


@pytest.mark.parametrize("where", ["local", "s3"])
def test_content_length_over_the_limit_writes_nothing(emulator: Any, s3_bucket: Any, tmp_path: Path, where: str):
    emulator.configure(output_size=3 * MiB)
    prediction = succeeded_prediction(emulator)
    if where == "local":
        op = store_task(prediction, f"{tmp_path}/", max_size_bytes=MiB)
    else:
        op = store_task(prediction, s3_bucket.url("big/"), dest_conn_id=s3_bucket.conn_id, max_size_bytes=MiB)
    with pytest.raises(DownloadRejectedError, match="over max_size_bytes"):
        execute(op)
    assert emulator.stats()["output_requests"] == 1
    assert files(tmp_path) == []
    assert s3_bucket.keys() == []


def test_wrong_content_type_fails_at_once(emulator: Any, s3_bucket: Any):
    prediction = succeeded_prediction(emulator)
    emulator.inject(route="output", kind="content_type", value="text/html", times=5)
    op = store_task(prediction, s3_bucket.url("t/"), dest_conn_id=s3_bucket.conn_id)
    with pytest.raises(DownloadRejectedError, match="text/html"):
        execute(op)
    assert emulator.stats()["output_requests"] == 1  # permanent: not retried
    assert s3_bucket.keys() == []


def test_the_emulator_is_accepted_by_the_default_http_policy(emulator: Any, tmp_path: Path):
    prediction = succeeded_prediction(emulator)
    with DAG(dag_id=f"transfer_{uuid.uuid4().hex[:8]}", schedule=None):
        op = EachlabsToObjectStorageOperator(task_id="store", source=prediction, destination=f"{tmp_path}/")
    assert op.allow_insecure_http is False  # plain http is accepted only because the emulator is on loopback
    assert execute(op)["uploaded"] is True
    assert emulator.stats()["output_requests"] == 1


def test_unknown_output_is_permanent(emulator: Any, tmp_path: Path):
    url = f"{emulator.url}/v1/outputs/does-not-exist.mp4"
    with pytest.raises(DownloadRejectedError, match="HTTP 404"):
        execute(store_task(url, f"{tmp_path}/"))
    assert files(tmp_path) == []


# ---------------------------------------------------------------------------------------------- idempotency


def test_rerun_does_not_download_or_upload_again(emulator: Any, s3_bucket: Any, s3_requests: S3Requests):
    prediction = succeeded_prediction(emulator)
    destination = s3_bucket.url("runway/{{ ds }}/final.mp4")
    first = execute(store_task(prediction, destination, dest_conn_id=s3_bucket.conn_id))
    client = s3_bucket.server.client()
    head = client.head_object(Bucket=s3_bucket.name, Key="runway/2026-11-24/final.mp4")
    s3_requests.seen.clear()

    second = execute(store_task(prediction, destination, dest_conn_id=s3_bucket.conn_id))
    assert second == {**first, "uploaded": False}
    assert emulator.stats()["output_requests"] == 1  # the re-run did not even download
    assert s3_requests.writes("/runway/") == []  # nor write anything to the bucket
    head_after = client.head_object(Bucket=s3_bucket.name, Key="runway/2026-11-24/final.mp4")
    assert (head_after["ETag"], head_after["LastModified"]) == (head["ETag"], head["LastModified"])


def test_same_bytes_from_a_new_prediction_are_not_uploaded_again(
    emulator: Any, s3_bucket: Any, s3_requests: S3Requests
):
    emulator.configure(output_size=6 * MiB)  # over one 5 MiB part: the discarded write had started an upload
    first_prediction = succeeded_prediction(emulator)
    destination = s3_bucket.url("latest.mp4")
    kwargs = {"dest_conn_id": s3_bucket.conn_id, "block_size": 5 * MiB}
    execute(store_task(first_prediction, destination, **kwargs))
    s3_requests.seen.clear()

    second_prediction = succeeded_prediction(emulator)  # the emulator renders the same video for every prediction
    result = execute(store_task(second_prediction, destination, **kwargs))
    assert result["uploaded"] is False
    assert emulator.stats()["output_requests"] == 2
    video_writes = [(m, p) for m, p in s3_requests.writes("/latest.mp4") if SIDECAR_SUFFIX not in p]
    assert not any(m == "POST" and "uploadId=" in p for m, p in video_writes)  # never completed
    assert any(m == "DELETE" and "uploadId=" in p for m, p in video_writes)  # aborted instead
    assert open_uploads(s3_bucket) == []
    sidecar = json.loads(s3_bucket.read("latest.mp4" + SIDECAR_SUFFIX))
    assert sidecar["prediction_id"] == second_prediction["prediction_id"]


# ---------------------------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class AuthS3:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def auth_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthS3]:
    """A moto server in its own process that checks every request's signature against its IAM users.

    Its own process, because moto's authentication switch is process-global state that would also turn on
    for the session's shared (in-process) moto server.
    """
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}  # create_user, put_user_policy, create_access_key
    log = (tmp_path_factory.mktemp("moto-auth") / "moto.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{endpoint}/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        iam = boto3.client(
            "iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        iam.create_user(UserName="media-writer")
        iam.put_user_policy(
            UserName="media-writer",
            PolicyName="s3",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
            ),
        )
        key = iam.create_access_key(UserName="media-writer")["AccessKey"]
        bucket = "secured-media"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
        ).create_bucket(Bucket=bucket)
        yield AuthS3(endpoint, key["AccessKeyId"], key["SecretAccessKey"], bucket)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def _aws_connection(monkeypatch: pytest.MonkeyPatch, auth_s3: AuthS3, secret: str) -> str:
    conn_id = f"secured_{uuid.uuid4().hex[:8]}"  # Airflow caches one filesystem per connection id
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps(
            {
                "conn_type": "aws",
                "login": auth_s3.access_key,
                "password": secret,
                "extra": {"endpoint_url": auth_s3.endpoint, "region_name": "us-east-1"},
            }
        ),
    )
    return conn_id


def test_destination_credentials_come_from_dest_conn_id(
    emulator: Any, auth_s3: AuthS3, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    prediction = succeeded_prediction(emulator)
    conn_id = _aws_connection(monkeypatch, auth_s3, auth_s3.secret_key)
    caplog.set_level(logging.INFO)
    result = execute(store_task(prediction, f"s3://{auth_s3.bucket}/runway/", dest_conn_id=conn_id))

    client = boto3.client(
        "s3",
        endpoint_url=auth_s3.endpoint,
        region_name="us-east-1",
        aws_access_key_id=auth_s3.access_key,
        aws_secret_access_key=auth_s3.secret_key,
    )
    key = f"runway/{prediction['prediction_id']}.mp4"
    stored = client.get_object(Bucket=auth_s3.bucket, Key=key)["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == result["sha256"]
    assert auth_s3.secret_key not in caplog.text
    assert auth_s3.secret_key not in json.dumps(result)


def test_wrong_credentials_in_the_connection_are_refused(
    emulator: Any, auth_s3: AuthS3, monkeypatch: pytest.MonkeyPatch
):
    prediction = succeeded_prediction(emulator)
    conn_id = _aws_connection(monkeypatch, auth_s3, "not-the-secret")
    with pytest.raises(PermissionError) as excinfo:
        execute(store_task(prediction, f"s3://{auth_s3.bucket}/denied/", dest_conn_id=conn_id))
    assert "not-the-secret" not in str(excinfo.value)
    assert emulator.stats()["output_requests"] == 0  # failed on the first storage call, before downloading
