"""An uncommitted S3 multipart upload whose parts go up concurrently, with a bounded number of part buffers.

s3fs's own writer uploads one part at a time while the caller waits, and grows its buffer to about twice the
block size; streaming a download into it runs at the speed of download + upload, one after the other.
:class:`S3MultipartFile` sends each full part to s3fs's event loop (its own IO thread) and returns at once, so
the download goes on while up to ``max_concurrency`` parts upload, as boto3's ``upload_fileobj`` does. When that
many are in flight the writer waits for the oldest: memory stays about ``(max_concurrency + 1) * part_size``.

It has the shape of the fsspec file :class:`~airflow_runway.transfers._atomic_write.AtomicWrite` drives with
``autocommit=False``: ``write``, ``close`` (sends the last part, waits for all), ``commit`` (completes the upload,
or a single ``PutObject`` for a body smaller than one part) and ``discard`` (aborts it). The object appears under
its name only on ``commit``; the calls go through s3fs's ``_call_s3`` (its credentials, endpoint, retries and
``s3_additional_kwargs``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import deque
from contextlib import suppress
from typing import Any

#: Part size unless the operator's ``block_size`` says otherwise (S3's minimum is 5 MiB); boto3's is 8 MiB.
DEFAULT_PART_SIZE = 5 * 1024**2
#: Parts uploading at once (boto3's transfer manager uses 10 threads; beyond 4 the loopback gains nothing).
DEFAULT_MAX_CONCURRENCY = 4
#: S3's minimum size of every part but the last.
MIN_PART_SIZE = 5 * 1024**2


def is_s3fs(fs: Any) -> bool:
    """Whether ``fs`` is an s3fs filesystem (without importing s3fs when it is not installed)."""
    return any(cls.__module__.startswith("s3fs.") and cls.__name__ == "S3FileSystem" for cls in type(fs).__mro__)


class S3MultipartFile:
    """A write-only S3 object whose parts upload concurrently; nothing is visible until :meth:`commit`.

    :param fs: the s3fs filesystem (from the ``ObjectStoragePath``).
    :param path: ``bucket/key``.
    :param part_size: bytes per part (at least 5 MiB).
    :param max_concurrency: parts uploading at once, so buffers held at once (plus the one being filled).
    """

    def __init__(
        self,
        fs: Any,
        path: str,
        *,
        part_size: int | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> None:
        self.part_size = max(part_size or DEFAULT_PART_SIZE, MIN_PART_SIZE)
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency!r}")
        self.fs = fs
        self.path = path
        self.bucket, self.key, _ = fs.split_path(path)
        self.max_concurrency = max_concurrency
        self.closed = False
        # The part being filled; once full it is handed to the upload as is (no copy) and a new one starts.
        self._part = bytearray()
        self._upload_id: str | None = None
        self._in_flight: deque[tuple[int, concurrent.futures.Future[dict[str, Any]]]] = deque()
        self._parts: list[dict[str, Any]] = []
        self._next_part = 1

    def write(self, data: bytes) -> int:
        """Buffer ``data``; each full part starts uploading (waiting first if ``max_concurrency`` are in flight)."""
        if self.closed:
            raise ValueError(f"write to closed S3 upload {self.path}")
        self._part += data
        if len(self._part) >= self.part_size:
            self._send(self._take())
        return len(data)

    def close(self) -> None:
        """Send the last part, if a multipart upload was started, and wait for every part (no commit)."""
        if self.closed:
            return
        if self._upload_id is not None and self._part:
            self._send(self._take())
        while self._in_flight:
            self._settle()
        self.closed = True

    def commit(self) -> None:
        """Make the object appear: complete the multipart upload, or put a body smaller than one part."""
        self.close()
        if self._upload_id is None:
            self._call("put_object", Bucket=self.bucket, Key=self.key, Body=self._take())
        else:
            self._call(
                "complete_multipart_upload",
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": sorted(self._parts, key=lambda part: part["PartNumber"])},
            )
            self._upload_id = None
        self.fs.invalidate_cache(self.path)

    def discard(self) -> None:
        """Throw the upload away: abort the multipart upload, and with it every part already sent.

        The parts in flight are waited for first: S3 may still store a part that was uploading during the abort,
        which would then linger, invisible but billed.
        """
        for _, future in self._in_flight:
            with suppress(BaseException):
                future.result()
        self._in_flight.clear()
        self._part = bytearray()
        self.closed = True
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is not None:
            with suppress(Exception):
                self._call("abort_multipart_upload", Bucket=self.bucket, Key=self.key, UploadId=upload_id)

    def _take(self) -> bytearray:
        body, self._part = self._part, bytearray()
        return body

    def _send(self, body: bytearray) -> None:
        if self._upload_id is None:
            self._upload_id = self._call("create_multipart_upload", Bucket=self.bucket, Key=self.key)["UploadId"]
        while len(self._in_flight) >= self.max_concurrency:
            self._settle()
        number, self._next_part = self._next_part, self._next_part + 1
        coroutine = self.fs._call_s3(
            "upload_part", Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, PartNumber=number, Body=body
        )
        self._in_flight.append((number, asyncio.run_coroutine_threadsafe(coroutine, self.fs.loop)))

    def _settle(self) -> None:
        """Wait for the oldest part in flight and record its ETag (its failure fails the write)."""
        number, future = self._in_flight.popleft()
        out = future.result()
        part = {"PartNumber": number, "ETag": out["ETag"]}
        if "ChecksumSHA256" in out:
            part["ChecksumSHA256"] = out["ChecksumSHA256"]
        self._parts.append(part)

    def _call(self, method: str, **kwargs: Any) -> Any:
        return self.fs.call_s3(method, **kwargs)
