"""The concurrent S3 multipart writer against the moto S3 server: atomic, bounded, and byte-exact."""

from __future__ import annotations

import hashlib
import os

import pytest
from fsspec.implementations.local import LocalFileSystem

from airflow_runway.transfers._atomic_write import AtomicWrite
from airflow_runway.transfers._s3_multipart import MIN_PART_SIZE, S3MultipartFile, is_s3fs

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
