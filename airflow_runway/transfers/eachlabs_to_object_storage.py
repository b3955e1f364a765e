"""Stream a prediction's output video from its URL into object storage, atomically and idempotently.

The operator ties together modules with one job each, whose docstrings hold the details:

* :mod:`~airflow_runway.transfers._source`: the source (a generation result or a URL) and the URL policy
  (https, or plain http from a loopback host). Output URLs are often signed: their query string (and any
  ``user:password@``) is never logged, returned, stored in the sidecar or the rendered template fields, or put
  in an error message: it is registered with Airflow's secrets masker as soon as the fields are rendered.
* :mod:`~airflow_runway.transfers._network`: the addresses a download may connect to (public ones, unless
  ``allow_private_network``), checked after DNS resolution on the connection actually made.
* :mod:`~airflow_runway.transfers._destination`: the object to write, named after the prediction when the
  destination is a directory.
* :mod:`~airflow_runway.transfers._download`: the streamed download (memory bounded by the chunk size plus
  the backend's upload buffer), its checks and its retries.
* :mod:`~airflow_runway.transfers._atomic_write`: nothing ever appears under the final name until the whole
  body has arrived and passed every check (fsspec's transactional write on S3/GCS, else a temporary sibling
  renamed into place).
* :mod:`~airflow_runway.transfers._sidecar`: the ``<name>.sha256.json`` record of what was stored.
* :mod:`~airflow_runway.transfers._asset_events`: the stored object's details on the outlets' asset events.

Idempotency
    A re-run skips the download when the object and its sidecar exist, the sidecar names the same prediction
    (or, lacking a prediction id, the same source URL without its query) and the object's size matches. Else
    the body is downloaded while hashing; if the digest and size equal the sidecar's and the object is still
    there, the uncommitted write is discarded instead of committed (nothing is uploaded again). When new
    content is committed, the stale sidecar is deleted first and the new one written after the commit, so a
    crash in between leaves an object without sidecar (re-downloaded next time), never a sidecar that
    describes other content.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, ObjectStoragePath
from fsspec.implementations.local import LocalFileSystem

from airflow_runway.transfers._asset_events import emit_asset_events
from airflow_runway.transfers._atomic_write import TRANSACTIONAL_PROTOCOLS, AtomicWrite
from airflow_runway.transfers._destination import plain_uri, resolve_destination
from airflow_runway.transfers._download import SourceDownloader
from airflow_runway.transfers._errors import DownloadError, DownloadRejectedError
from airflow_runway.transfers._network import AddressPolicy
from airflow_runway.transfers._sidecar import (
    SIDECAR_SUFFIX,
    object_size,
    read_sidecar,
    same_source,
    sidecar_record,
    write_sidecar,
)
from airflow_runway.transfers._source import Source, UrlSecrets, redact_url, resolve_source, source_urls

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk import Context
    from fsspec import AbstractFileSystem

try:
    from airflow.sdk.configuration import conf
except ImportError:  # pragma: no cover - task SDKs without their own configuration module
    from airflow.configuration import conf

try:
    from airflow.sdk.log import mask_secret
except ImportError:  # pragma: no cover - task SDKs that predate airflow.sdk.log.mask_secret
    try:
        from airflow.sdk.execution_time.secrets_masker import mask_secret  # type: ignore[no-redef]
    except ImportError:

        def mask_secret(secret: Any, name: str | None = None) -> None:  # type: ignore[misc]
            """No secrets masker available: redaction in this module still applies."""


__all__ = [
    "DEFAULT_MAX_SIZE_BYTES",
    "SIDECAR_SUFFIX",
    "TRANSACTIONAL_PROTOCOLS",
    "DownloadError",
    "DownloadRejectedError",
    "EachlabsToObjectStorageOperator",
    "redact_url",
]

#: Default cap on the size of one download.
DEFAULT_MAX_SIZE_BYTES = 2 * 1024**3


class EachlabsToObjectStorageOperator(BaseOperator):
    """Stream an Eachlabs prediction's output video into object storage (S3, GCS, Azure, local files, ...).

    .. code-block:: python

        generate = RunwayGenerateVideoOperator(task_id="generate", prompt_text="A lighthouse in a storm")
        store = EachlabsToObjectStorageOperator(
            task_id="store",
            source=generate.output,
            destination="s3://media/runway/{{ ds }}/",
            dest_conn_id="aws_media",
            outlets=[Asset("s3://media/runway/")],
        )

    The body is streamed with bounded memory, checked (scheme, size, content type) and only appears under
    the destination name once complete; a re-run for the same prediction does not upload again. The module
    docstring lists where the atomic write per backend and the ``<name>.sha256.json`` sidecar are detailed.

    For every :class:`~airflow.sdk.Asset` in ``outlets`` the asset event gets the stored object's details as
    ``extra``; for every :class:`~airflow.sdk.AssetAlias`, an event for ``Asset(uri=<stored uri>)`` is added
    to the alias with the same ``extra``.

    :param source: the generation task's result, e.g. ``generate.output`` (a dict with ``video_url``,
        ``outputs`` and ``prediction_id``), or the output URL itself. (templated)
    :param destination: where to store the video: a URL such as ``s3://bucket/key.mp4`` or
        ``file:///data/videos/x.mp4``, or an :class:`~airflow.sdk.ObjectStoragePath`. A destination ending in
        ``/`` (or an existing directory) receives ``<prediction_id>.mp4``, or the URL's file name when there
        is no prediction id. (templated)
    :param dest_conn_id: the Airflow connection giving the destination's credentials and endpoint, used as
        ``ObjectStoragePath(destination, conn_id=dest_conn_id)``. (templated)
    :param allow_insecure_http: also accept plain ``http://`` source URLs from any host (and redirects to
        them). Off by default: production output URLs are ``https://``, and plain ``http://`` is then accepted
        only from a loopback host (``127.0.0.0/8``, ``::1``, ``localhost``: the bundled emulator), where no
        network carries the bytes, and which ``allow_private_network`` must allow too. Turn it on for a trusted
        network only.
    :param allow_private_network: allow connections to non-public addresses (private, loopback, link-local
        such as the cloud metadata service ``169.254.169.254``, unique-local IPv6), checked after DNS resolution
        for the source and every redirect. ``None`` (the default) takes ``[runway] allow_private_network`` from
        the worker's Airflow configuration (default ``False``); turn it on for the bundled emulator or an
        internal mirror you trust.
    :param max_size_bytes: the largest body accepted (default 2 GiB). A larger ``Content-Length``, or a body
        that grows past it while streaming, fails the task with nothing written.
    :param allowed_content_types: the ``Content-Type`` media types accepted, as ``fnmatch`` patterns
        (default ``("video/*",)``; add ``"application/octet-stream"`` for hosts that send no real type). An
        empty sequence accepts any type.
    :param max_redirects: the most redirects followed before the task fails.
    :param max_attempts: how many times the download is tried when it fails transiently (connection reset,
        timeout, 408/429/5xx, truncated body); each attempt restarts the download from scratch.
    :param retry_wait: the first backoff between attempts in seconds, doubling (with jitter) each time; a
        ``Retry-After`` header is honoured when longer.
    :param retry_max_wait: the longest backoff between attempts, in seconds.
    :param connect_timeout: seconds to wait for the source's connection.
    :param read_timeout: seconds the source may stay silent while the body is read.
    :param chunk_size: bytes read from the response per iteration.
    :param block_size: the writer's buffer / multipart part size in bytes; ``None`` uses the backend's
        default (S3: 8 MiB parts, 3 uploading at once on their own threads, so about 32 MiB of buffers).
    :return: ``{"uri", "sha256", "size", "content_type", "prediction_id", "source_url", "uploaded"}``, where
        ``source_url`` has no query string and ``uploaded`` is ``False`` when the object was already there.
    """

    template_fields: Sequence[str] = ("source", "destination", "dest_conn_id")
    template_fields_renderers = {"source": "json"}
    ui_color = "#c9e4f6"

    def __init__(
        self,
        *,
        source: str | Mapping[str, Any],
        destination: str | ObjectStoragePath,
        dest_conn_id: str | None = None,
        allow_insecure_http: bool = False,
        allow_private_network: bool | None = None,
        max_size_bytes: int = DEFAULT_MAX_SIZE_BYTES,
        allowed_content_types: Sequence[str] = ("video/*",),
        max_redirects: int = 5,
        max_attempts: int = 5,
        retry_wait: float = 1.0,
        retry_max_wait: float = 60.0,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        chunk_size: int = 1024 * 1024,
        block_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if max_size_bytes <= 0:
            raise ValueError(f"max_size_bytes must be positive, got {max_size_bytes!r}")
        if max_redirects < 0:
            raise ValueError(f"max_redirects must be >= 0, got {max_redirects!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts!r}")
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size!r}")
        if isinstance(allowed_content_types, str):
            allowed_content_types = (allowed_content_types,)
        self.source = source
        self.destination = destination
        self.dest_conn_id = dest_conn_id
        self.allow_insecure_http = allow_insecure_http
        self.allow_private_network = allow_private_network
        self.max_size_bytes = max_size_bytes
        self.allowed_content_types = tuple(allowed_content_types)
        self.max_redirects = max_redirects
        self.max_attempts = max_attempts
        self.retry_wait = retry_wait
        self.retry_max_wait = retry_max_wait
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.chunk_size = chunk_size
        self.block_size = block_size

    def _do_render_template_fields(
        self,
        parent: Any,
        template_fields: Iterable[str],
        context: Context,
        jinja_env: jinja2.Environment,
        seen_oids: set[int],
    ) -> None:
        """Render, then hand the source URLs' secrets to the secrets masker before Airflow stores the fields.

        The task runner redacts rendered fields with the masker when it serializes them (right after rendering),
        so a signed URL's query string is stored as ``***``. This method, unlike ``render_template_fields``, also
        runs for mapped tasks.
        """
        super()._do_render_template_fields(parent, template_fields, context, jinja_env, seen_oids)
        if parent is self:
            secrets = UrlSecrets(mask=mask_secret)
            for url in source_urls(self.source):
                secrets.register(url)

    def _address_policy(self) -> AddressPolicy:
        allow = self.allow_private_network
        if allow is None:
            allow = conf.getboolean("runway", "allow_private_network", fallback=False)
        return AddressPolicy.from_flag(bool(allow))

    def execute(self, context: Context) -> dict[str, Any]:
        # Per run: the secrets seen are run state, and the masker is the one in place when the task runs.
        secrets = UrlSecrets(mask=mask_secret)
        source = resolve_source(self.source, secrets=secrets, allow_insecure_http=self.allow_insecure_http)
        dest = resolve_destination(self.destination, self.dest_conn_id, source)
        fs = dest.fs
        transactional = dest.protocol in TRANSACTIONAL_PROTOCOLS
        path = dest.path
        sidecar = path + SIDECAR_SUFFIX
        uri = plain_uri(dest)
        with suppress(Exception):
            fs.invalidate_cache(path)

        previous = read_sidecar(fs, sidecar, self.log)
        if previous is not None and same_source(previous, source) and object_size(fs, path) == previous["size"]:
            self.log.info(
                "%s already holds %s (%d bytes, sha256 %s): not downloading again",
                uri,
                previous.get("prediction_id") or previous.get("source_url"),
                previous["size"],
                previous["sha256"],
            )
            result = self._result(uri, source, previous["sha256"], previous["size"], previous.get("content_type"))
            result["uploaded"] = False
        else:
            result = self._transfer(source, secrets, fs, path, sidecar, uri, previous, transactional)
        emit_asset_events(context, self.outlets, result, self.dest_conn_id)
        return result

    def _transfer(
        self,
        source: Source,
        secrets: UrlSecrets,
        fs: AbstractFileSystem,
        path: str,
        sidecar: str,
        uri: str,
        previous: dict[str, Any] | None,
        transactional: bool,
    ) -> dict[str, Any]:
        if isinstance(fs, LocalFileSystem):
            fs.makedirs(posixpath.dirname(path), exist_ok=True)
        self.log.info("Streaming %s to %s", source.safe_url, uri)
        writer, content = self._downloader(secrets).download(
            source, lambda: AtomicWrite(fs, path, transactional=transactional, block_size=self.block_size)
        )

        record = sidecar_record(source, content)
        try:
            unchanged = (
                previous is not None
                and previous["sha256"] == content.sha256
                and previous["size"] == content.size
                and object_size(fs, path) == content.size
            )
            if unchanged:
                writer.discard()
                self.log.info(
                    "%s already holds these %d bytes (sha256 %s): not replaced", uri, content.size, content.sha256
                )
                if previous is not None and any(previous.get(key) != value for key, value in record.items()):
                    write_sidecar(fs, sidecar, record, transactional=transactional)
            else:
                # A stale sidecar must never outlive the object it describes (see the module docstring).
                with suppress(FileNotFoundError):
                    fs.rm_file(sidecar)
                writer.commit()
                write_sidecar(fs, sidecar, record, transactional=transactional)
                self.log.info("Stored %s: %d bytes, sha256 %s", uri, content.size, content.sha256)
        finally:
            writer.discard()
        result = self._result(uri, source, content.sha256, content.size, content.content_type)
        result["uploaded"] = not unchanged
        return result

    def _downloader(self, secrets: UrlSecrets) -> SourceDownloader:
        return SourceDownloader(
            log=self.log,
            secrets=secrets,
            allow_insecure_http=self.allow_insecure_http,
            address_policy=self._address_policy(),
            max_size_bytes=self.max_size_bytes,
            allowed_content_types=self.allowed_content_types,
            max_redirects=self.max_redirects,
            max_attempts=self.max_attempts,
            retry_wait=self.retry_wait,
            retry_max_wait=self.retry_max_wait,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            chunk_size=self.chunk_size,
        )

    @staticmethod
    def _result(uri: str, source: Source, sha256: str, size: int, content_type: str | None) -> dict[str, Any]:
        return {
            "uri": uri,
            "sha256": sha256,
            "size": size,
            "content_type": content_type,
            "prediction_id": source.prediction_id,
            "source_url": source.safe_url,
        }
