"""The ``<name>.sha256.json`` sidecar that records what a transfer stored, so a re-run need not store it again.

Next to the object the operator stores ``<name>.sha256.json`` =
``{"sha256", "size", "source_url", "prediction_id", "content_type"}``. A sidecar rather than object metadata
because the digest is only known once the last byte has been streamed, after the upload has started: S3
metadata is fixed at upload start and changing it afterwards means a server-side copy of the whole (multi-GiB)
object, an S3 ETag is not a sha256 for multipart uploads, and local files have no metadata at all. A sidecar
works the same on every fsspec backend and is readable by people and tools.

The sidecar is written with :class:`~airflow_runway.transfers._atomic_write.AtomicWrite` too, so it is never
seen half written; one that cannot be read or lacks a valid ``sha256``/``size`` is ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from logging import Logger
from typing import TYPE_CHECKING, Any

from airflow_runway.transfers._atomic_write import AtomicWrite
from airflow_runway.transfers._download import DownloadedContent
from airflow_runway.transfers._source import Source

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

#: Suffix of the sidecar that records what was stored.
SIDECAR_SUFFIX = ".sha256.json"

_SIDECAR_MAX_BYTES = 64 * 1024
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def read_sidecar(fs: AbstractFileSystem, sidecar: str, log: Logger | Any) -> dict[str, Any] | None:
    """The sidecar's record; ``None`` when it is missing or unreadable (the latter logged as a warning)."""
    try:
        raw = fs.cat_file(sidecar)
    except FileNotFoundError:
        return None
    try:
        record = json.loads(raw[:_SIDECAR_MAX_BYTES])
    except ValueError:
        record = None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("sha256"), str)
        or not _SHA256_RE.match(record["sha256"])
        or not isinstance(record.get("size"), int)
        or isinstance(record.get("size"), bool)
    ):
        log.warning("Ignoring unreadable sidecar %s", sidecar)
        return None
    return record


def same_source(record: Mapping[str, Any], source: Source) -> bool:
    """Whether the record names ``source``: the same prediction or, lacking a prediction id, the same URL."""
    if source.prediction_id and record.get("prediction_id"):
        return bool(record["prediction_id"] == source.prediction_id)
    return bool(record.get("source_url") == source.safe_url)


def sidecar_record(source: Source, content: DownloadedContent) -> dict[str, Any]:
    """The record describing ``content`` downloaded from ``source`` (its URL without secrets)."""
    return {
        "sha256": content.sha256,
        "size": content.size,
        "source_url": source.safe_url,
        "prediction_id": source.prediction_id,
        "content_type": content.content_type,
    }


def write_sidecar(fs: AbstractFileSystem, sidecar: str, record: Mapping[str, Any], *, transactional: bool) -> None:
    """Store ``record`` as the sidecar, atomically."""
    writer = AtomicWrite(fs, sidecar, transactional=transactional, block_size=None)
    try:
        writer.write(json.dumps(record, indent=2, sort_keys=True).encode() + b"\n")
    except BaseException:
        writer.discard()
        raise
    writer.commit()


def object_size(fs: AbstractFileSystem, path: str) -> int | None:
    """The stored object's size, or ``None`` when there is none."""
    try:
        size = fs.size(path)
    except FileNotFoundError:
        return None
    return int(size) if size is not None else None
