"""Where a transfer reads from: the output URL of a generation result, and the policy every URL must pass.

URL policy
    Only ``https`` is fetched, or plain ``http`` from a loopback host (``127.0.0.0/8``, ``::1``, ``localhost``:
    the bundled emulator), where no network carries the bytes; ``allow_insecure_http`` accepts plain ``http``
    from any host. The policy applies to the source and to every redirect. Independently, the address every hop
    connects to must be public unless ``allow_private_network`` is on (:mod:`~airflow_runway.transfers._network`),
    so plain ``http`` from the emulator on loopback needs that opt-in too.

Secrets
    Output URLs are often signed: their query string, fragment and any ``user:password@`` are secrets. They are
    never logged, returned, stored in the sidecar or put in an error message (:func:`redact_url` is the form
    that may be), and each is registered with Airflow's secrets masker and scrubbed from the text of network
    errors (:class:`UrlSecrets`). The operator registers them as soon as its template fields are rendered,
    before Airflow stores the rendered fields.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from airflow_runway.redaction import redact
from airflow_runway.transfers._errors import DownloadRejectedError


def redact_url(url: str) -> str:
    """``url`` without its query string, fragment and user info: the form that may be logged and stored."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _url_secrets(url: str) -> list[str]:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    return [secret for secret in (parts.query, parts.fragment, userinfo) if secret]


class UrlSecrets:
    """The secrets of every URL seen so far, each handed once to ``mask`` (Airflow's secrets masker).

    :param mask: called with each new secret.
    """

    def __init__(self, mask: Callable[[str], object]) -> None:
        self._mask = mask
        self._seen: set[str] = set()

    def register(self, url: str) -> None:
        """Remember (and mask) the secrets of ``url``."""
        for secret in _url_secrets(url):
            if secret not in self._seen:
                self._seen.add(secret)
                self._mask(secret)

    def scrub(self, text: str) -> str:
        """``text`` with every secret registered so far replaced by ``***``."""
        return redact(text, *self._seen)


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


def check_scheme(url: str, *, allow_insecure_http: bool) -> None:
    """Refuse ``url`` unless it is ``https``, or plain ``http`` from a loopback host (or any host when allowed).

    :raises DownloadRejectedError: when the URL may not be fetched.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "https" or (scheme == "http" and (allow_insecure_http or _is_loopback(parts.hostname))):
        return
    hint = " (set allow_insecure_http=True to allow plain http from other hosts)" if scheme == "http" else ""
    raise DownloadRejectedError(
        f"Refusing to download {redact_url(url)}: only https, or http from a loopback host{hint}"
    )


@dataclass(frozen=True)
class Source:
    """The URL to download and the prediction it is the output of, when known."""

    url: str
    prediction_id: str | None

    @property
    def safe_url(self) -> str:
        """The URL without its secrets (see :func:`redact_url`)."""
        return redact_url(self.url)


def source_urls(source: object) -> list[str]:
    """Every output URL a source names: the string itself, or a generation result's ``video_url`` then ``outputs``."""
    if isinstance(source, str):
        candidates: list[Any] = [source]
    elif isinstance(source, Mapping):
        candidates = [source.get("video_url")]
        outputs = source.get("outputs")
        if isinstance(outputs, str):
            candidates.append(outputs)
        elif isinstance(outputs, Iterable):
            candidates.extend(outputs)
    else:
        candidates = []
    return [c.strip() for c in candidates if isinstance(c, str) and c.strip()]


def resolve_source(source: object, *, secrets: UrlSecrets, allow_insecure_http: bool) -> Source:
    """The source of a transfer: a generation result (``video_url``, else ``outputs``) or a URL string.

    The URL's secrets are registered with ``secrets`` before the URL policy is checked.

    :raises DownloadRejectedError: when there is no output URL, or it fails the URL policy.
    """
    if not isinstance(source, (str, Mapping)):
        raise DownloadRejectedError(
            f"source must be a generation result (a dict with 'video_url'/'outputs') or a URL string, "
            f"got {type(source).__name__}"
        )
    prediction_id: str | None = None
    if isinstance(source, Mapping):
        raw_id = source.get("prediction_id")
        prediction_id = str(raw_id) if raw_id not in (None, "") else None
    urls = source_urls(source)
    if not urls:
        if isinstance(source, str):
            raise DownloadRejectedError("source is an empty URL")
        raise DownloadRejectedError(
            f"The source (prediction {prediction_id}, status {source.get('status')!r}) has no output URL "
            "in 'video_url' or 'outputs'"
        )
    url = urls[0]
    secrets.register(url)
    check_scheme(url, allow_insecure_http=allow_insecure_http)
    return Source(url=url, prediction_id=prediction_id)
