"""The concurrent S3 multipart writer against the moto S3 server: atomic, bounded, and byte-exact."""

from __future__ import annotations

import hashlib
import json
import os
import threading

import pytest
from fsspec.implementations.local import LocalFileSystem

from airflow_runway.transfers._atomic_write import AtomicWrite
from airflow_runway.transfers._s3_client import can_mirror, sync_s3_client
from airflow_runway.transfers._s3_multipart import MIN_PART_SIZE, S3MultipartFile, is_s3fs
from tests.fixtures.s3 import create_bucket

pytestmark = pytest.mark.integration
MiB = 1024**2


def open_uploads(s3_bucket) -> list[str]:
    listing = s3_bucket.server.client().list_multipart_uploads(Bucket=s3_bucket.name)
    return [upload["Key"] for upload in listing.get("Uploads", [])]


def test_parts_upload_concurrently_with_bounded_buffers_and_appear_only_on_commit(s3_bucket):
    path = s3_bucket.path("big.mp4")
    body = os.urandom(23 * MiB + 17)
    upload = S3MultipartFile(path.fs, path.path, part_size=MIN_PART_SIZE, max_concurrency=2)
    most_in_flight = 0
    for start in range(0, len(body), MiB):
        upload.write(body[start : start + MiB])
        most_in_flight = max(most_in_flight, len(upload._in_flight))
        assert len(upload._part) < MIN_PART_SIZE  # a full part never waits in the buffer
    assert most_in_flight == 2  # two parts uploading while the writer went on, never more
    upload.close()
    assert s3_bucket.keys() == []  # every part sent, nothing visible yet
    assert open_uploads(s3_bucket) == ["big.mp4"]
    upload.commit()
    assert s3_bucket.keys() == ["big.mp4"]
    assert hashlib.sha256(s3_bucket.read("big.mp4")).digest() == hashlib.sha256(body).digest()
    assert open_uploads(s3_bucket) == []


def test_a_body_smaller_than_one_part_is_a_single_put(s3_bucket):
    path = s3_bucket.path("small.mp4")
    upload = S3MultipartFile(path.fs, path.path)
    upload.write(b"tiny video")
    upload.close()
    assert s3_bucket.keys() == [] and open_uploads(s3_bucket) == []
    upload.commit()
    assert s3_bucket.read("small.mp4") == b"tiny video"


def test_discard_aborts_the_upload_and_its_parts(s3_bucket):
    path = s3_bucket.path("gone.mp4")
    write = AtomicWrite(path.fs, path.path, transactional=True, block_size=MIN_PART_SIZE)
    for _ in range(12):
        write.write(os.urandom(MiB))
    assert open_uploads(s3_bucket) == ["gone.mp4"]
    write.discard()
    assert s3_bucket.keys() == [] and open_uploads(s3_bucket) == []
    with pytest.raises(RuntimeError, match="already finished"):
        write.commit()


def test_the_fast_path_is_taken_for_s3_only(s3_bucket, tmp_path):
    assert is_s3fs(s3_bucket.path("x").fs)
    assert not is_s3fs(LocalFileSystem())
    local = AtomicWrite(LocalFileSystem(), str(tmp_path / "v.mp4"), transactional=False, block_size=None)
    assert not isinstance(local._file, S3MultipartFile)
    local.write(b"video")
    local.commit()
    assert (tmp_path / "v.mp4").read_bytes() == b"video"


class PartRequests:
    """Every ``UploadPart`` request the threaded clients send, seen through botocore's events (for new sessions)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, fail_part: int | None = None) -> None:
        import botocore.handlers

        self.fail_part = fail_part
        self.params: list[dict] = []
        self.threads: set[str] = set()
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()
        monkeypatch.setattr(
            botocore.handlers,
            "BUILTIN_HANDLERS",
            [
                *botocore.handlers.BUILTIN_HANDLERS,
                ("before-parameter-build.s3.UploadPart", self._params),
                ("before-send.s3.UploadPart", self._sending),
                ("needs-retry.s3.UploadPart", self._answered),
            ],
        )

    def _params(self, params: dict, **_: object) -> None:
        with self._lock:
            self.params.append({k: v for k, v in params.items() if k != "Body"})
        if params["PartNumber"] == self.fail_part:
            raise RuntimeError(f"part {self.fail_part} failed")

    def _sending(self, **_: object) -> None:
        with self._lock:
            self.threads.add(threading.current_thread().name)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)

    def _answered(self, **_: object) -> None:
        with self._lock:
            self.in_flight -= 1


def test_parts_go_up_on_a_bounded_pool_of_threads_stopped_on_close(s3_bucket, monkeypatch):
    requests = PartRequests(monkeypatch)
    path = s3_bucket.path("pooled.mp4")
    body = os.urandom(6 * MIN_PART_SIZE + 3)
    upload = S3MultipartFile(path.fs, path.path, part_size=MIN_PART_SIZE, max_concurrency=3)
    for start in range(0, len(body), MiB):
        upload.write(body[start : start + MiB])
    upload.close()
    assert upload._pool is None and upload._client is None
    assert not [t for t in threading.enumerate() if t.name.startswith("s3-part")]
    assert len(requests.params) == 7 and requests.in_flight == 0
    assert 1 < requests.most_in_flight <= 3
    assert requests.threads and all(name.startswith("s3-part") for name in requests.threads)
    assert s3_bucket.keys() == []
    upload.commit()
    assert s3_bucket.read("pooled.mp4") == body


def test_a_failed_part_fails_the_write_and_the_upload_is_aborted(s3_bucket, monkeypatch):
    PartRequests(monkeypatch, fail_part=2)
    path = s3_bucket.path("failed.mp4")
    write = AtomicWrite(path.fs, path.path, transactional=True, block_size=MIN_PART_SIZE)
    with pytest.raises(RuntimeError, match="part 2 failed"):
        for _ in range(4 * MIN_PART_SIZE // MiB):
            write.write(os.urandom(MiB))
        write.commit()
    write.discard()
    assert s3_bucket.keys() == [] and open_uploads(s3_bucket) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("s3-part")]


def test_discard_waits_for_the_parts_in_flight_then_aborts(s3_bucket, monkeypatch):
    requests = PartRequests(monkeypatch)
    path = s3_bucket.path("dropped.mp4")
    upload = S3MultipartFile(path.fs, path.path, part_size=MIN_PART_SIZE, max_concurrency=4)
    for _ in range(4 * MIN_PART_SIZE // MiB):
        upload.write(os.urandom(MiB))  # four parts in flight at once, none waited for
    upload.discard()
    assert requests.in_flight == 0 and len(requests.params) == 4
    assert upload._pool is None
    assert s3_bucket.keys() == [] and open_uploads(s3_bucket) == []


def test_parts_carry_the_filesystems_s3_additional_kwargs(s3_bucket, monkeypatch):
    requests = PartRequests(monkeypatch)
    path = s3_bucket.path("sse-c.mp4")
    key = os.urandom(32)
    sse_c = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
    monkeypatch.setattr(path.fs, "s3_additional_kwargs", {**sse_c, "ACL": "private"})  # ACL: not for parts
    upload = S3MultipartFile(path.fs, path.path, part_size=MIN_PART_SIZE)
    for _ in range(2 * MIN_PART_SIZE // MiB):
        upload.write(os.urandom(MiB))
    upload.commit()
    assert len(requests.params) == 2
    for params in requests.params:
        assert params["SSECustomerAlgorithm"] == "AES256" and params["SSECustomerKey"]
        assert "ACL" not in params  # not an UploadPart parameter: filtered out as s3fs does


def test_the_part_client_has_the_connections_credentials_endpoint_region_and_config(moto_s3, monkeypatch):
    from botocore import UNSIGNED
    from botocore.config import Config

    conn = {
        "conn_type": "aws",
        "login": "conn-key-id",
        "password": "conn-secret",
        "extra": {
            "endpoint_url": moto_s3.endpoint_url,
            "region_name": "eu-west-3",
            "config_kwargs": {"connect_timeout": 7, "s3": {"addressing_style": "path"}, "retries": {"max_attempts": 2}},
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_PART_CLIENT", json.dumps(conn))
    bucket = create_bucket(moto_s3, "aws_part_client")
    fs = bucket.path("x.mp4").fs
    client = sync_s3_client(fs, bucket.name, max_pool_connections=12)
    try:
        frozen = client._get_credentials().get_frozen_credentials()
        assert (frozen.access_key, frozen.secret_key) == ("conn-key-id", "conn-secret")
        assert client.meta.endpoint_url == moto_s3.endpoint_url
        assert client.meta.region_name == "eu-west-3"
        config, fs_config = client.meta.config, fs.s3.meta.config
        assert (config.connect_timeout, config.s3) == (7, {"addressing_style": "path"})
        assert config.retries == fs_config.retries == {"mode": "legacy", "total_max_attempts": 3}
        for name in set(Config.OPTION_DEFAULTS) - {"user_agent", "max_pool_connections"}:
            assert getattr(config, name) == getattr(fs_config, name), name
        assert config.max_pool_connections == 12
        assert config.signature_version is not UNSIGNED and can_mirror(fs)
    finally:
        client.close()


def test_a_filesystem_with_a_custom_signer_keeps_its_parts_on_s3fs(s3_bucket, monkeypatch):
    from botocore import UNSIGNED

    path = s3_bucket.path("signed-elsewhere.mp4")
    monkeypatch.setattr(path.fs.s3.meta.config, "signature_version", UNSIGNED)
    assert not can_mirror(path.fs)
    upload = S3MultipartFile(path.fs, path.path, part_size=MIN_PART_SIZE)
    upload.write(os.urandom(MIN_PART_SIZE + 1))
    assert upload._pool is None  # the part went to s3fs's event loop
    upload.commit()
    assert s3_bucket.keys() == ["signed-elsewhere.mp4"]


def test_the_upload_declares_crc32_and_s3_keeps_the_whole_objects_checksum(s3_bucket):
    path = s3_bucket.path("checked.mp4")
    body = os.urandom(2 * MIN_PART_SIZE + 5)
    upload = S3MultipartFile(path.fs, path.path, part_size=MIN_PART_SIZE)
    for start in range(0, len(body), MiB):
        upload.write(body[start : start + MiB])
    upload.close()
    assert [sorted(part) for part in upload._parts] == [["ChecksumCRC32", "ETag", "PartNumber"]] * 3
    upload.commit()
    head = s3_bucket.server.client().head_object(Bucket=s3_bucket.name, Key="checked.mp4", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] and head["ContentLength"] == len(body)
    assert s3_bucket.read("checked.mp4") == body
