"""Stream a prediction's output video from its URL into object storage, atomically and idempotently.

How the object is written
    The body is streamed from the HTTP response (``requests`` with ``stream=True``) chunk by chunk into the
    storage writer, hashing as it goes: memory stays bounded by the chunk size plus the backend's upload buffer
    (s3fs: one multipart part, 50 MiB unless ``block_size`` says otherwise) whatever the size of the video.

    Nothing ever appears under the final name until the whole body has arrived and passed every check:

    * S3 (``s3://``, ``s3a://``) and GCS (``gs://``, ``gcs://``): fsspec's transactional write,
      ``fs.open(path, "wb", autocommit=False)``. The parts go to a multipart (S3) or resumable (GCS) upload
      that only ``commit()`` completes; ``discard()`` aborts it, so the parts already sent are dropped too.
    * Every other backend (local files, ``abfs://``, ...): the body goes to a hidden temporary sibling
      (``.<name>.<random>.partial``) that is renamed to the final name once complete and deleted on failure.
      On local files that rename is an atomic ``rename(2)`` in the same directory. fsspec's own transactional
      local write is not used because it stages the file in the system temp directory: the final move is then
      a non-atomic copy when that directory is on another filesystem, and on a ``tmpfs`` the whole video would
      sit in memory. adlfs commits its block list on close whatever ``autocommit`` says, so Azure takes the
      sibling route as well (its rename is a server-side copy: the final blob still only appears complete).

    A worker killed outright (``SIGKILL``) can leave an incomplete multipart upload (expire those with a bucket
    lifecycle rule) or a ``.partial`` sibling behind, never a partial object under the final name.

Idempotency: a JSON sidecar, not object metadata
    Next to the object the operator stores ``<name>.sha256.json`` =
    ``{"sha256", "size", "source_url", "prediction_id", "content_type"}``. A sidecar rather than object
    metadata because the digest is only known once the last byte has been streamed, after the upload has
    started: S3 metadata is fixed at upload start and changing it afterwards means a server-side copy of the
    whole (multi-GiB) object, an S3 ETag is not a sha256 for multipart uploads, and local files have no
    metadata at all. A sidecar works the same on every fsspec backend and is readable by people and tools.

    A re-run skips the download when the object and its sidecar exist, the sidecar names the same prediction
    (or, lacking a prediction id, the same source URL without its query) and the object's size matches. Else
    the body is downloaded while hashing; if the digest and size equal the sidecar's and the object is still
    there, the uncommitted write is discarded instead of committed (nothing is uploaded again). When new
    content is committed, the stale sidecar is deleted first and the new one written after the commit, so a
    crash in between leaves an object without sidecar (re-downloaded next time), never a sidecar that
    describes other content.

Secrets
    Output URLs are often signed: their query string (and any ``user:password@``) is never logged, returned,
    stored in the sidecar or put in an error message, and is registered with Airflow's secrets masker.
"""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import json
import posixpath
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import requests
from airflow.sdk import Asset, AssetAlias, BaseOperator, ObjectStoragePath
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from fsspec.implementations.local import LocalFileSystem
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

if TYPE_CHECKING:
    from airflow.sdk import Context
    from fsspec import AbstractFileSystem

try:
    from airflow.sdk.log import mask_secret
except ImportError:  # pragma: no cover - task SDKs that predate airflow.sdk.log.mask_secret
    try:
        from airflow.sdk.execution_time.secrets_masker import mask_secret  # type: ignore[no-redef]
    except ImportError:

        def mask_secret(secret: Any, name: str | None = None) -> None:  # type: ignore[misc]
            """No secrets masker available: redaction in this module still applies."""


#: Default cap on the size of one download.
DEFAULT_MAX_SIZE_BYTES = 2 * 1024**3
#: Suffix of the sidecar that records what was stored.
SIDECAR_SUFFIX = ".sha256.json"
#: Protocols whose fsspec file implements a real transactional write (commit / discard).
TRANSACTIONAL_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs"})

_SIDECAR_MAX_BYTES = 64 * 1024
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_PROGRESS_EVERY_BYTES = 256 * 1024**2


class DownloadError(AirflowException):
    """The download failed in a way that may clear by itself (network fault, 429, 5xx, truncated body).

    The operator retries it with backoff, restarting the download; when the attempts are used up, Airflow's
    own task retries apply.
    """

    #: Whether starting the download again can succeed.
    transient: bool = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DownloadRejectedError(DownloadError, AirflowFailException):
    """The download cannot succeed as asked (403/404/410, wrong content type, too big, disallowed URL).

    The task fails at once, without retries.
    """

    transient = False


def redact_url(url: str) -> str:
    """``url`` without its query string, fragment and user info: the form that may be logged and stored."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _url_secrets(url: str) -> list[str]:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    return [secret for secret in (parts.query, parts.fragment, userinfo) if secret]


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _plain_uri(path: ObjectStoragePath) -> str:
    """The path's URI without the ``conn_id@`` that ``str(ObjectStoragePath)`` carries."""
    parts = urlsplit(str(path))
    if not parts.scheme:
        return f"file://{path.path}"
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


@dataclass(frozen=True)
class _Source:
    url: str
    prediction_id: str | None

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)


@dataclass(frozen=True)
class _Stored:
    """What a download produced, before it is committed."""

    sha256: str
    size: int
    content_type: str


class _AtomicWrite:
    """A file being written that only appears under its final name when :meth:`commit` is called.

    See the module docstring for the mechanism used per backend.
    """

    def __init__(self, fs: AbstractFileSystem, path: str, *, transactional: bool, block_size: int | None) -> None:
        self.fs = fs
        self.path = path
        kwargs: dict[str, Any] = {"block_size": block_size} if block_size else {}
        self._temp: str | None
        if transactional:
            self._temp = None
            self._file = fs.open(path, "wb", autocommit=False, **kwargs)
        else:
            parent, name = posixpath.split(path)
            self._temp = posixpath.join(parent, f".{name}.{uuid.uuid4().hex[:16]}.partial")
            self._file = fs.open(self._temp, "wb", **kwargs)
        self._finished = False

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def commit(self) -> None:
        """Make the object appear under its final name (on failure, the write is discarded)."""
        if self._finished:
            raise RuntimeError(f"write to {self.path} already finished")
        try:
            self._file.close()
            if self._temp is None:
                self._file.commit()
            else:
                self.fs.mv(self._temp, self.path)
        except BaseException:
            self.discard()
            raise
        self._finished = True
        self._forget()

    def discard(self) -> None:
        """Throw the write away, leaving nothing behind; a no-op once committed or discarded."""
        if self._finished:
            return
        self._finished = True
        try:
            if self._temp is None:
                self._file.discard()
                # Closing would first flush the buffered tail to the backend (for s3fs, into a brand-new
                # multipart upload when none was started yet) only for it to be thrown away.
                self._file.closed = True
            else:
                with suppress(Exception):
                    self._file.close()
                with suppress(FileNotFoundError):
                    self.fs.rm_file(self._temp)
        finally:
            self._forget()

    def _forget(self) -> None:
        # fsspec registers every autocommit=False file with the filesystem's (cached, shared) transaction;
        # ours is finished, so a later transaction on the same filesystem must not see it.
        if self._temp is None:
            with suppress(ValueError, AttributeError):
                self.fs.transaction.files.remove(self._file)


def _is_loopback(host: str | None) -> bool:
    """Whether ``host`` names this machine, so plain http never crosses a network."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    docstring details the atomic write per backend and the ``<name>.sha256.json`` sidecar.

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
        network carries the bytes. Turn it on for a trusted network only.
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
        default (s3fs: 50 MiB). Peak memory is about this plus ``chunk_size``.
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
        self._secrets: set[str] = set()

    # ------------------------------------------------------------------ execute

    def execute(self, context: Context) -> dict[str, Any]:
        source = self._resolve_source()
        dest = self._resolve_destination(source)
        fs = dest.fs
        transactional = dest.protocol in TRANSACTIONAL_PROTOCOLS
        path = dest.path
        sidecar = path + SIDECAR_SUFFIX
        uri = _plain_uri(dest)
        with suppress(Exception):
            fs.invalidate_cache(path)

        previous = self._read_sidecar(fs, sidecar)
        if previous is not None and self._same_source(previous, source) and _size(fs, path) == previous["size"]:
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
            result = self._transfer(source, fs, path, sidecar, uri, previous, transactional)
        self._emit_asset_events(context, result)
        return result

    # ------------------------------------------------------------------ resolution

    def _resolve_source(self) -> _Source:
        source = self.source
        prediction_id: str | None = None
        if isinstance(source, str):
            url = source.strip()
        elif isinstance(source, Mapping):
            raw_id = source.get("prediction_id")
            prediction_id = str(raw_id) if raw_id not in (None, "") else None
            candidates: list[Any] = [source.get("video_url")]
            outputs = source.get("outputs")
            if isinstance(outputs, str):
                candidates.append(outputs)
            elif isinstance(outputs, Iterable):
                candidates.extend(outputs)
            url = next((c.strip() for c in candidates if isinstance(c, str) and c.strip()), "")
            if not url:
                raise DownloadRejectedError(
                    f"The source (prediction {prediction_id}, status {source.get('status')!r}) has no output URL "
                    "in 'video_url' or 'outputs'"
                )
        else:
            raise DownloadRejectedError(
                f"source must be a generation result (a dict with 'video_url'/'outputs') or a URL string, "
                f"got {type(source).__name__}"
            )
        self._register_secrets(url)
        self._check_scheme(url)
        return _Source(url=url, prediction_id=prediction_id)

    def _resolve_destination(self, source: _Source) -> ObjectStoragePath:
        destination = self.destination
        # A templated "{{ params.dest_conn_id }}" renders "" when no connection is wanted (local files).
        conn_id = self.dest_conn_id.strip() if isinstance(self.dest_conn_id, str) else None
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
            dest = dest / self._file_name(source)
        if not dest.key and dest.protocol not in ("", "file", "local"):
            raise AirflowFailException(f"destination {_plain_uri(dest)} names a bucket, not an object")
        return dest

    @staticmethod
    def _file_name(source: _Source) -> str:
        if source.prediction_id:
            name = f"{source.prediction_id}.mp4"
        else:
            name = posixpath.basename(unquote(urlsplit(source.url).path))
        if not name or name in (".", "..") or "/" in name or "\\" in name or not name.isprintable():
            raise AirflowFailException(
                f"Cannot derive a file name from {source.safe_url}: give the destination a file name"
            )
        return name

    def _check_scheme(self, url: str) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "https" or (scheme == "http" and (self.allow_insecure_http or _is_loopback(parts.hostname))):
            return
        hint = " (set allow_insecure_http=True to allow plain http from other hosts)" if scheme == "http" else ""
        raise DownloadRejectedError(
            f"Refusing to download {redact_url(url)}: only https, or http from a loopback host{hint}"
        )

    def _register_secrets(self, url: str) -> None:
        for secret in _url_secrets(url):
            if secret not in self._secrets:
                self._secrets.add(secret)
                mask_secret(secret)

    def _scrub(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    # ------------------------------------------------------------------ idempotency

    def _read_sidecar(self, fs: AbstractFileSystem, sidecar: str) -> dict[str, Any] | None:
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
            self.log.warning("Ignoring unreadable sidecar %s", sidecar)
            return None
        return record

    @staticmethod
    def _same_source(record: Mapping[str, Any], source: _Source) -> bool:
        if source.prediction_id and record.get("prediction_id"):
            return bool(record["prediction_id"] == source.prediction_id)
        return bool(record.get("source_url") == source.safe_url)

    def _sidecar_record(self, source: _Source, stored: _Stored) -> dict[str, Any]:
        return {
            "sha256": stored.sha256,
            "size": stored.size,
            "source_url": source.safe_url,
            "prediction_id": source.prediction_id,
            "content_type": stored.content_type,
        }

    def _write_sidecar(self, fs: AbstractFileSystem, sidecar: str, record: Mapping[str, Any], tx: bool) -> None:
        writer = _AtomicWrite(fs, sidecar, transactional=tx, block_size=None)
        try:
            writer.write(json.dumps(record, indent=2, sort_keys=True).encode() + b"\n")
        except BaseException:
            writer.discard()
            raise
        writer.commit()

    # ------------------------------------------------------------------ transfer

    def _transfer(
        self,
        source: _Source,
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
        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception(lambda exc: isinstance(exc, DownloadError) and exc.transient),
            before_sleep=self._log_retry,
            reraise=True,
        )
        with requests.Session() as session:
            writer, stored = retrying(self._download_once, session, source, fs, path, transactional)

        record = self._sidecar_record(source, stored)
        try:
            unchanged = (
                previous is not None
                and previous["sha256"] == stored.sha256
                and previous["size"] == stored.size
                and _size(fs, path) == stored.size
            )
            if unchanged:
                writer.discard()
                self.log.info(
                    "%s already holds these %d bytes (sha256 %s): not replaced", uri, stored.size, stored.sha256
                )
                if previous is not None and any(previous.get(key) != value for key, value in record.items()):
                    self._write_sidecar(fs, sidecar, record, transactional)
            else:
                # A stale sidecar must never outlive the object it describes (see the module docstring).
                with suppress(FileNotFoundError):
                    fs.rm_file(sidecar)
                writer.commit()
                self._write_sidecar(fs, sidecar, record, transactional)
                self.log.info("Stored %s: %d bytes, sha256 %s", uri, stored.size, stored.sha256)
        finally:
            writer.discard()
        result = self._result(uri, source, stored.sha256, stored.size, stored.content_type)
        result["uploaded"] = not unchanged
        return result

    def _download_once(
        self,
        session: requests.Session,
        source: _Source,
        fs: AbstractFileSystem,
        path: str,
        transactional: bool,
    ) -> tuple[_AtomicWrite, _Stored]:
        """One attempt: open the response, check it, stream it into an uncommitted write."""
        response = self._open_response(session, source)
        with response:
            expected = self._check_response(response)
            content_type = _media_type(response.headers.get("Content-Type"))
            writer = _AtomicWrite(fs, path, transactional=transactional, block_size=self.block_size)
            try:
                digest = hashlib.sha256()
                size = 0
                next_progress = _PROGRESS_EVERY_BYTES
                for chunk in response.iter_content(chunk_size=self.chunk_size):
                    size += len(chunk)
                    if size > self.max_size_bytes:
                        raise DownloadRejectedError(
                            f"{source.safe_url} is larger than max_size_bytes={self.max_size_bytes}: stopped after "
                            f"{size} bytes, nothing stored"
                        )
                    digest.update(chunk)
                    writer.write(chunk)
                    if size >= next_progress:
                        total = f" of {expected}" if expected is not None else ""
                        self.log.info("Streamed %d%s bytes", size, total)
                        next_progress += _PROGRESS_EVERY_BYTES
                if expected is not None and size != expected:
                    raise DownloadError(f"{source.safe_url} ended after {size} of {expected} bytes")
                if size == 0:
                    raise DownloadError(f"{source.safe_url} sent an empty body")
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                writer.discard()
                raise DownloadError(
                    f"Download of {source.safe_url} broke off: {type(exc).__name__}: {self._scrub(str(exc))}"
                ) from None
            except requests.RequestException as exc:
                writer.discard()
                raise DownloadRejectedError(
                    f"Download of {source.safe_url} failed: {type(exc).__name__}: {self._scrub(str(exc))}"
                ) from None
            except BaseException:
                writer.discard()
                raise
        return writer, _Stored(sha256=digest.hexdigest(), size=size, content_type=content_type)

    def _open_response(self, session: requests.Session, source: _Source) -> requests.Response:
        """GET the source, following at most ``max_redirects`` redirects, each checked against the policy."""
        url = source.url
        for _ in range(self.max_redirects + 1):
            self._register_secrets(url)
            self._check_scheme(url)
            try:
                response = session.get(
                    url,
                    stream=True,
                    allow_redirects=False,
                    timeout=(self.connect_timeout, self.read_timeout),
                    # The exact bytes are stored, and a compressed body would evade the size checks.
                    headers={"Accept-Encoding": "identity"},
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise DownloadError(
                    f"Cannot reach {redact_url(url)}: {type(exc).__name__}: {self._scrub(str(exc))}"
                ) from None
            except requests.RequestException as exc:
                raise DownloadRejectedError(
                    f"Cannot request {redact_url(url)}: {type(exc).__name__}: {self._scrub(str(exc))}"
                ) from None
            if not response.is_redirect:
                return response
            target = urljoin(url, response.headers["Location"])
            response.close()
            self._register_secrets(target)
            self.log.info("%s redirects to %s", redact_url(url), redact_url(target))
            url = target
        raise DownloadRejectedError(f"{source.safe_url} redirected more than max_redirects={self.max_redirects} times")

    def _check_response(self, response: requests.Response) -> int | None:
        """Fail on a bad status, type or size; return the announced ``Content-Length``, if any."""
        url = redact_url(response.url)
        status = response.status_code
        try:
            if status in (408, 429) or status >= 500:
                raise DownloadError(
                    f"{url} answered HTTP {status} {response.reason}", retry_after=_retry_after(response)
                )
            if status != 200:
                raise DownloadRejectedError(f"{url} answered HTTP {status} {response.reason}")
            content_type = _media_type(response.headers.get("Content-Type"))
            if self.allowed_content_types and not any(
                fnmatch.fnmatchcase(content_type, pattern.lower()) for pattern in self.allowed_content_types
            ):
                allowed = list(self.allowed_content_types)
                raise DownloadRejectedError(
                    f"{url} has Content-Type {content_type or '(none)'!r}, not one of {allowed}"
                )
            length = response.headers.get("Content-Length")
            expected = int(length) if length is not None and length.strip().isdigit() else None
            if expected is not None and expected > self.max_size_bytes:
                raise DownloadRejectedError(
                    f"{url} is {expected} bytes (Content-Length), over max_size_bytes={self.max_size_bytes}"
                )
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise DownloadRejectedError(f"{url} sent a {encoding!r}-encoded body; only identity is stored")
        except BaseException:
            response.close()
            raise
        return expected

    def _wait(self, retry_state: RetryCallState) -> float:
        backoff = wait_exponential_jitter(initial=self.retry_wait, max=self.retry_max_wait, jitter=self.retry_wait)(
            retry_state
        )
        error = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(error, "retry_after", None) or 0.0
        return float(min(max(backoff, retry_after), self.retry_max_wait))

    def _log_retry(self, retry_state: RetryCallState) -> None:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        sleep = retry_state.next_action.sleep if retry_state.next_action else 0.0
        self.log.warning(
            "Attempt %d/%d failed: %s; restarting the download in %.1fs",
            retry_state.attempt_number,
            self.max_attempts,
            error,
            sleep,
        )

    # ------------------------------------------------------------------ results

    @staticmethod
    def _result(uri: str, source: _Source, sha256: str, size: int, content_type: str | None) -> dict[str, Any]:
        return {
            "uri": uri,
            "sha256": sha256,
            "size": size,
            "content_type": content_type,
            "prediction_id": source.prediction_id,
            "source_url": source.safe_url,
        }

    def _emit_asset_events(self, context: Context, result: Mapping[str, Any]) -> None:
        outlet_events = context.get("outlet_events")
        if outlet_events is None:
            return
        extra = {key: result[key] for key in ("uri", "sha256", "size", "content_type", "prediction_id", "source_url")}
        # The connection id (never its secrets) lets a consumer read the object back with the same credentials.
        extra["dest_conn_id"] = (self.dest_conn_id or "").strip() or None
        for outlet in self.outlets:
            if isinstance(outlet, AssetAlias):
                outlet_events[outlet].add(Asset(uri=result["uri"]), extra=dict(extra))
            elif isinstance(outlet, Asset):
                outlet_events[outlet].extra.update(extra)


def _size(fs: AbstractFileSystem, path: str) -> int | None:
    try:
        size = fs.size(path)
    except FileNotFoundError:
        return None
    return int(size) if size is not None else None


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None
