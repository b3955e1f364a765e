"""An uncommitted S3 multipart upload whose parts go up concurrently, with a bounded number of part buffers.

s3fs's own writer uploads one part at a time while the caller waits, and grows its buffer to about twice the
block size; streaming a download into it runs at the speed of download + upload, one after the other.
:class:`S3MultipartFile` hands each full part to a pool of ``max_concurrency`` threads and returns at once, so
the download goes on while up to ``max_concurrency`` parts upload, as boto3's ``upload_fileobj`` does. When that
many are in flight the writer waits for the oldest: memory stays about ``(max_concurrency + 1) * part_size``.

The parts go up on a synchronous botocore client set up as s3fs's own
(:mod:`~airflow_runway.transfers._s3_client`), one request per thread: botocore's per-request hashing (the SigV4
payload SHA-256 over plain http, the CRC32 checksum) then runs in parallel, where on s3fs's single event-loop
thread it ran one part after another. A filesystem with a custom signer keeps every part on s3fs's event loop.

It has the shape of the fsspec file :class:`~airflow_runway.transfers._atomic_write.AtomicWrite` drives with
``autocommit=False``: ``write``, ``close`` (sends the last part, waits for all), ``commit`` (completes the upload,
or a single ``PutObject`` for a body smaller than one part) and ``discard`` (aborts it). The object appears under
its name only on ``commit``. Every call but ``UploadPart`` goes through s3fs (its retries); every call, parts
included, gets the filesystem's ``s3_additional_kwargs`` (e.g. SSE-C keys) as s3fs would add them. Unless
the client config turns request checksums off (``when_required``), the upload declares CRC32 and its completion
lists every part's, as boto3's transfer manager does: S3 then checks and keeps a checksum of the whole object.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import deque
from contextlib import suppress
from typing import Any

from airflow_runway.transfers._s3_client import can_mirror, sync_s3_client

#: Part size unless the operator's ``block_size`` says otherwise (S3's minimum is 5 MiB); boto3's is 8 MiB.
#: Fewer, larger parts cost the server less per byte: 8 MiB went up faster than 5 MiB against moto.
DEFAULT_PART_SIZE = 8 * 1024**2
#: Parts uploading at once, so threads (boto3's transfer manager uses 10). Three keep the upload busy on the
#: loopback benchmark and hold the peak RSS growth near 50 MiB with 8 MiB parts (four: near 60 MiB).
DEFAULT_MAX_CONCURRENCY = 3
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
        # Made with the multipart upload (a body smaller than one part needs neither), stopped by close/discard.
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._client: Any = None
        self._checksum: str | None = None

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
        self._stop_pool()
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
        self._stop_pool()
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
            self._checksum = _part_checksum(self.fs)
            declared = {"ChecksumAlgorithm": self._checksum} if self._checksum else {}
            self._upload_id = self._call("create_multipart_upload", Bucket=self.bucket, Key=self.key, **declared)[
                "UploadId"
            ]
            self._start_pool()
        while len(self._in_flight) >= self.max_concurrency:
            self._settle()
        number, self._next_part = self._next_part, self._next_part + 1
        kwargs = {"Bucket": self.bucket, "Key": self.key, "UploadId": self._upload_id, "PartNumber": number}
        if self._checksum:
            kwargs["ChecksumAlgorithm"] = self._checksum
        future: concurrent.futures.Future[dict[str, Any]]
        if self._pool is None:
            coroutine = self.fs._call_s3("upload_part", Body=body, **kwargs)
            future = asyncio.run_coroutine_threadsafe(coroutine, self.fs.loop)
        else:
            upload_part = self._client.upload_part
            future = self._pool.submit(upload_part, **self.fs._get_s3_method_kwargs(upload_part, Body=body, **kwargs))
        self._in_flight.append((number, future))

    def _start_pool(self) -> None:
        if not can_mirror(self.fs):
            return
        self._client = sync_s3_client(self.fs, self.bucket, max_pool_connections=self.max_concurrency)
        self._pool = concurrent.futures.ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="s3-part")

    def _stop_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
            self._client.close()
            self._client = None

    def _settle(self) -> None:
        """Wait for the oldest part in flight and record its ETag (its failure fails the write)."""
        number, future = self._in_flight.popleft()
        out = future.result()
        part = {"PartNumber": number, "ETag": out["ETag"]}
        for algorithm in {"SHA256", self._checksum} - {None}:
            if f"Checksum{algorithm}" in out:
                part[f"Checksum{algorithm}"] = out[f"Checksum{algorithm}"]
        self._parts.append(part)

    def _call(self, method: str, **kwargs: Any) -> Any:
        return self.fs.call_s3(method, **kwargs)


def _part_checksum(fs: Any) -> str | None:
    """The checksum botocore adds to every part (CRC32 unless the client config says ``when_required``).

    As boto3's transfer manager does, the multipart upload declares it and its completion lists each part's, so
    S3 checks and stores a checksum of the whole object; undeclared, moto's server also spends about half as
    much again per byte on the upload.
    """
    return "CRC32" if fs.s3.meta.config.request_checksum_calculation == "when_supported" else None
