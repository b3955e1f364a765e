"""Where a transfer writes to: the destination path, with a file name derived from the source when needed."""

from __future__ import annotations

import posixpath
from urllib.parse import unquote, urlsplit, urlunsplit

from airflow.sdk import ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException

from airflow_runway.transfers._source import Source


def plain_uri(path: ObjectStoragePath) -> str:
    """The path's URI without the ``conn_id@`` that ``str(ObjectStoragePath)`` carries."""
    parts = urlsplit(str(path))
    if not parts.scheme:
        return f"file://{path.path}"
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def resolve_destination(destination: object, dest_conn_id: object, source: Source) -> ObjectStoragePath:
    """The object to write: ``destination`` itself, or ``<destination>/<file name>`` for a directory.

    A destination ending in ``/`` (or an existing directory) receives ``<prediction_id>.mp4``, or the source
    URL's file name when there is no prediction id.

    :raises AirflowFailException: when the destination is not a URL or path, names a bucket, or no file name
        can be derived.
    """
    # A templated "{{ params.dest_conn_id }}" renders "" when no connection is wanted (local files).
    conn_id = dest_conn_id.strip() if isinstance(dest_conn_id, str) else None
    conn_id = conn_id or None
    if isinstance(destination, ObjectStoragePath):
        dest = destination
        if conn_id and not dest.conn_id:
            dest = ObjectStoragePath(str(dest), conn_id=conn_id)
        is_dir = False
    elif isinstance(destination, str) and destination.strip():
        text = destination.strip()
        dest = ObjectStoragePath(text, conn_id=conn_id)
        is_dir = text.endswith("/")
    else:
        raise AirflowFailException(f"destination must be a URL or an ObjectStoragePath, got {destination!r}")
    if is_dir or dest.is_dir():
        dest = dest / _file_name(source)
    if not dest.key and dest.protocol not in ("", "file", "local"):
        raise AirflowFailException(f"destination {plain_uri(dest)} names a bucket, not an object")
    return dest


def _file_name(source: Source) -> str:
    if source.prediction_id:
        name = f"{source.prediction_id}.mp4"
    else:
        name = posixpath.basename(unquote(urlsplit(source.url).path))
    if not name or name in (".", "..") or "/" in name or "\\" in name or not name.isprintable():
        raise AirflowFailException(
            f"Cannot derive a file name from {source.safe_url}: give the destination a file name"
        )
    return name
