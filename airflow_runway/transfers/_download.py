"""The streamed HTTP download of a source into an uncommitted write: checked, hashed and retried.

The body is streamed from the HTTP response (``requests`` with ``stream=True``) chunk by chunk into the
storage writer, hashing as it goes (on a thread of its own, alongside the write): memory stays bounded by two
chunks plus the backend's upload buffer (S3: a few multipart parts in flight) whatever the size of the video.

Checks
    Redirects are followed one by one (at most ``max_redirects``), each target checked against the URL policy
    of :mod:`~airflow_runway.transfers._source` and connected to only at an address the
    :mod:`~airflow_runway.transfers._network` policy allows (refused: not retried). The session honours proxy
    variables and never reads ``~/.netrc`` (:mod:`airflow_runway.hooks.transport`). The answer must be HTTP 200
    with an allowed ``Content-Type``, an identity ``Content-Encoding`` (a compressed body would evade the size
    checks, and the exact bytes are stored) and no ``Content-Length`` over ``max_size_bytes``; the body is cut
    off as soon as it grows past that bound. A body shorter than its ``Content-Length``, or empty, is a failure.

Retries
    Network faults, 408/429/5xx and truncated or empty bodies raise :class:`DownloadError` and are retried
    (``max_attempts``) with capped exponential backoff plus jitter, never sooner than a ``Retry-After`` the
    server sent, in seconds or as an HTTP date (up to the cap); each attempt restarts the download into a
    fresh write. Everything else raises :class:`DownloadRejectedError`, which is not retried.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from logging import Logger
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from airflow_runway.hooks.errors import parse_retry_after
from airflow_runway.hooks.retry import wait_retry_after
from airflow_runway.hooks.transport import environment_proxy, requests_session
from airflow_runway.transfers._atomic_write import AtomicWrite
from airflow_runway.transfers._errors import DownloadError, DownloadRejectedError
from airflow_runway.transfers._network import AddressCheckingAdapter, AddressPolicy
from airflow_runway.transfers._source import Source, UrlSecrets, check_scheme, redact_url

_PROGRESS_EVERY_BYTES = 256 * 1024**2


@dataclass(frozen=True)
class DownloadedContent:
    """What a download produced, before it is committed."""

    sha256: str
    size: int
    content_type: str


@dataclass(frozen=True)
class SourceDownloader:
    """Downloads a source into an uncommitted :class:`AtomicWrite`, retrying transient failures.

    The parameters are the operator's of the same names; ``log`` is where progress and retries are logged, and
    ``secrets`` registers each redirect target's secrets and scrubs them from network errors; ``address_policy``
    says which addresses may be connected to.
    """

    log: Logger | Any
    secrets: UrlSecrets
    allow_insecure_http: bool
    address_policy: AddressPolicy
    max_size_bytes: int
    allowed_content_types: tuple[str, ...]
    max_redirects: int
    max_attempts: int
    retry_wait: float
    retry_max_wait: float
    connect_timeout: float
    read_timeout: float
    chunk_size: int

    def download(self, source: Source, open_writer: Callable[[], AtomicWrite]) -> tuple[AtomicWrite, DownloadedContent]:
        """Stream ``source`` into a write from ``open_writer`` (one per attempt), left for the caller to commit.

        :raises DownloadError: when the attempts are used up (the last attempt's error).
        :raises DownloadRejectedError: at once, when the download cannot succeed as asked.
        """
        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception(lambda exc: isinstance(exc, DownloadError) and exc.transient),
            before_sleep=self._log_retry,
            reraise=True,
        )
        with requests_session() as session:
            adapter = AddressCheckingAdapter(self.address_policy)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            return retrying(self._download_once, session, source, open_writer)

    def _download_once(
        self, session: requests.Session, source: Source, open_writer: Callable[[], AtomicWrite]
    ) -> tuple[AtomicWrite, DownloadedContent]:
        """One attempt: open the response, check it, stream it into an uncommitted write."""
        response = self._open_response(session, source)
        with response:
            expected = self._check_response(response)
            content_type = _media_type(response.headers.get("Content-Type"))
            writer = open_writer()
            digest = _OverlappedSha256()
            try:
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
                    f"Download of {source.safe_url} broke off: {type(exc).__name__}: {self.secrets.scrub(str(exc))}"
                ) from None
            except requests.RequestException as exc:
                writer.discard()
                raise DownloadRejectedError(
                    f"Download of {source.safe_url} failed: {type(exc).__name__}: {self.secrets.scrub(str(exc))}"
                ) from None
            except BaseException:
                writer.discard()
                raise
            finally:
                sha256 = digest.close()
        return writer, DownloadedContent(sha256=sha256, size=size, content_type=content_type)

    def _open_response(self, session: requests.Session, source: Source) -> requests.Response:
        """GET the source, following at most ``max_redirects`` redirects, each checked against the policy."""
        url = source.url
        for _ in range(self.max_redirects + 1):
            self.secrets.register(url)
            check_scheme(url, allow_insecure_http=self.allow_insecure_http)
            self._check_proxied_target(url)
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
                    f"Cannot reach {redact_url(url)}: {type(exc).__name__}: {self.secrets.scrub(str(exc))}"
                ) from None
            except requests.RequestException as exc:
                raise DownloadRejectedError(
                    f"Cannot request {redact_url(url)}: {type(exc).__name__}: {self.secrets.scrub(str(exc))}"
                ) from None
            if not response.is_redirect:
                return response
            target = urljoin(url, response.headers["Location"])
            response.close()
            self.secrets.register(target)
            self.log.info("%s redirects to %s", redact_url(url), redact_url(target))
            url = target
        raise DownloadRejectedError(f"{source.safe_url} redirected more than max_redirects={self.max_redirects} times")

    def _check_proxied_target(self, url: str) -> None:
        """Through a proxy, check the name as resolved here (direct connections are checked as they are made)."""
        if environment_proxy(url) is None:
            return
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        try:
            self.address_policy.resolve_checked(parts.hostname or "", port)
        except OSError as exc:
            raise DownloadError(f"Cannot resolve {redact_url(url)}: {exc}") from None

    def _check_response(self, response: requests.Response) -> int | None:
        """Fail on a bad status, type or size; return the announced ``Content-Length``, if any."""
        url = redact_url(response.url)
        status = response.status_code
        try:
            if status in (408, 429) or status >= 500:
                raise DownloadError(
                    f"{url} answered HTTP {status} {response.reason}",
                    retry_after=parse_retry_after(response.headers.get("Retry-After")),
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
        backoff = wait_exponential_jitter(initial=self.retry_wait, max=self.retry_max_wait, jitter=self.retry_wait)
        return float(min(wait_retry_after(backoff)(retry_state), self.retry_max_wait))

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


class _OverlappedSha256:
    """SHA-256 of a stream, each chunk hashed on a thread of its own while the caller writes it and reads the next.

    ``hashlib`` releases the GIL while it hashes a large buffer, as file and socket I/O do while they copy: one
    chunk's hash then runs alongside its write and the next chunk's receive, on another core, instead of
    after them (SHA-256, ~2 GiB/s on one core, is otherwise the transfer's largest cost to a local disk). At
    most one chunk is being hashed at a time, so memory stays bounded by two chunks, and chunks are hashed in
    the order given.
    """

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
        self._hashing: Future[None] | None = None

    def update(self, chunk: bytes) -> None:
        """Hash ``chunk`` after the previous one, without waiting for it to be hashed."""
        self._wait()
        self._hashing = self._hasher.submit(self._digest.update, chunk)

    def close(self) -> str:
        """Wait for the last chunk and stop the thread; the hex digest of everything given."""
        try:
            self._wait()
        finally:
            self._hasher.shutdown(wait=True)
        return self._digest.hexdigest()

    def _wait(self) -> None:
        if self._hashing is not None:
            hashing, self._hashing = self._hashing, None
            hashing.result()


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()
