"""Serving a video's bytes to the browser with HTTP range requests (RFC 9110), so a <video> can seek.

Two sources, both behind the api-server so that no credential and no signed URL reaches the page:

* the stored copy, read from object storage with the destination's Airflow connection through
  :class:`~airflow.sdk.ObjectStoragePath` (any fsspec backend: S3, GCS, Azure, local files);
* the provider's output URL (until a copy exists), fetched by the api-server with the browser's ``Range``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException
from fastapi.responses import StreamingResponse

#: Bytes read from storage per chunk of the response.
CHUNK_SIZE = 256 * 1024
#: Hosts from which a plain-http output URL is fetched (the local emulator); anything else must be https.
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class ByteRange:
    """An inclusive byte range ``start``..``end`` of a body of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single range a ``Range`` header asks for; ``None`` for the whole body.

    A header that is not a single ``bytes=`` range is ignored (the whole body is a valid answer to it); a
    range that starts past the end raises 416.
    """
    match = _RANGE_RE.match((header or "").strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # a suffix: the last N bytes
        length = int(last)
        if length == 0:
            raise _unsatisfiable(size)
        return ByteRange(max(size - length, 0), size - 1, size)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise _unsatisfiable(size)
    return ByteRange(start, end, size)


def _unsatisfiable(size: int) -> HTTPException:
    return HTTPException(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"})


def _read(path: Any, start: int, length: int) -> Iterator[bytes]:
    with path.open("rb") as handle:
        handle.seek(start)
        left = length
        while left > 0:
            chunk = handle.read(min(CHUNK_SIZE, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


def stream_stored_copy(uri: str, conn_id: str | None, range_header: str | None) -> StreamingResponse:
    """The stored object (or the asked range of it); 404 if it is gone."""
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(uri, conn_id=conn_id) if conn_id else ObjectStoragePath(uri)
    try:
        size = int(path.stat()["size"])
    except FileNotFoundError as error:
        raise HTTPException(404, "The stored copy no longer exists") from error
    byte_range = parse_range(range_header, size)
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=300"}
    if byte_range is None:
        headers["Content-Length"] = str(size)
        return StreamingResponse(_read(path, 0, size), media_type="video/mp4", headers=headers)
    headers.update({"Content-Length": str(byte_range.length), "Content-Range": byte_range.content_range})
    # A sync iterator: Starlette runs each read in its thread pool, so a slow backend never blocks the loop.
    body = _read(path, byte_range.start, byte_range.length)
    return StreamingResponse(body, status_code=206, media_type="video/mp4", headers=headers)


def check_output_url(url: str) -> None:
    """Only https URLs (plain http from loopback: the local emulator) are fetched for the browser."""
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK):
        return
    raise HTTPException(404, "The output URL cannot be played through Airflow")


def stream_output_url(url: str, range_header: str | None) -> StreamingResponse:
    """The provider's output (or the asked range of it), fetched by the api-server; 404 once it has expired."""
    import httpx

    check_output_url(url)
    client = httpx.Client(timeout=httpx.Timeout(30.0), follow_redirects=True, max_redirects=5)
    headers = {"Range": range_header} if range_header else {}
    try:
        upstream = client.send(client.build_request("GET", url, headers=headers), stream=True)
    except httpx.HTTPError as error:
        client.close()
        raise HTTPException(502, "The provider's output could not be fetched") from error
    if upstream.status_code not in (200, 206):
        upstream.close()
        client.close()
        raise HTTPException(404, "The provider's output URL has expired and no stored copy exists")

    def body() -> Iterator[bytes]:
        try:
            yield from upstream.iter_raw(CHUNK_SIZE)
        finally:
            upstream.close()
            client.close()

    passed = ("Content-Length", "Content-Range", "Accept-Ranges")
    out_headers = {name: upstream.headers[name] for name in passed if name in upstream.headers}
    out_headers["Cache-Control"] = "private, max-age=300"
    media_type = upstream.headers.get("Content-Type", "video/mp4").split(";", 1)[0]
    return StreamingResponse(body(), status_code=upstream.status_code, media_type=media_type, headers=out_headers)
