"""An Eachlabs Airflow connection read into what a request needs: base URL, auth header and limits."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from airflow_runway.exceptions import EachlabsAuthError

DEFAULT_BASE_URL = "https://api.eachlabs.ai"
DEFAULT_RATE_LIMIT_PER_MINUTE = 60.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_ATTEMPTS = 5
AUTH_X_API_KEY = "x-api-key"
AUTH_BEARER = "bearer"
USER_AGENT = "airflow-runway"
#: The extra naming the header that carries the key. Not a name Airflow's secrets masker hides
#: (its ``DEFAULT_SENSITIVE_FIELDS``, matched as substrings of the name).
KEY_HEADER_EXTRA = "key_header"
#: Its former name, still read but deprecated: Airflow masks it (it is one of those names).
DEPRECATED_KEY_HEADER_EXTRA = "auth_header"
#: What Airflow's API and UI show (and an untouched form saves) in place of a value it considers secret.
MASKED_PLACEHOLDER = "***"

log = logging.getLogger(__name__)


def normalize_base_url(host: str | None, port: int | None = None, schema: str | None = None) -> str:
    """The API's base URL from a connection's host, port and schema fields.

    An empty host means ``https://api.eachlabs.ai``; a host without a scheme gets ``https`` (or ``schema``
    when that is ``http``/``https``); a connection ``port`` replaces any port in the host; a trailing ``/``
    or ``/v1`` is dropped, since every request path starts with ``/v1``.

    :raises ValueError: when the host is not an ``http``/``https`` URL with a host name.
    """
    text = (host or "").strip() or DEFAULT_BASE_URL
    if "://" not in text:
        scheme = schema.strip().lower() if schema and schema.strip().lower() in ("http", "https") else "https"
        text = f"{scheme}://{text}"
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"The Eachlabs connection's host must be an http(s) URL or a host name, got {host!r}")
    hostname = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    effective_port = port or parts.port
    netloc = f"{hostname}:{effective_port}" if effective_port else hostname
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunsplit((scheme, netloc, path, "", ""))


def _positive_number(extra: Mapping[str, Any], name: str) -> float | None:
    value = extra.get(name)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise ValueError(f"The Eachlabs connection's extra {name!r} must be a positive number, got {value!r}")
    return number


def _positive_int(extra: Mapping[str, Any], name: str) -> int | None:
    number = _positive_number(extra, name)
    if number is None:
        return None
    if number != int(number):
        raise ValueError(f"The Eachlabs connection's extra {name!r} must be a whole number, got {extra[name]!r}")
    return int(number)


def _auth_scheme(extra: Mapping[str, Any]) -> str:
    """The auth scheme from the extra ``key_header``, or from the deprecated ``auth_header``.

    Airflow hides the value of extras whose name looks secret (``auth_header`` is one): its connection form
    shows ``***`` and, saved untouched, stores it. That placeholder is never a choice: it is ignored, with a
    warning, and the default applies.
    """
    name, value = KEY_HEADER_EXTRA, extra.get(KEY_HEADER_EXTRA)
    if value in (None, "", MASKED_PLACEHOLDER) and extra.get(DEPRECATED_KEY_HEADER_EXTRA) not in (None, ""):
        name, value = DEPRECATED_KEY_HEADER_EXTRA, extra[DEPRECATED_KEY_HEADER_EXTRA]
        log.warning(
            "The Eachlabs connection's extra %r is deprecated: name it %r (Airflow masks %r as a secret)",
            name,
            KEY_HEADER_EXTRA,
            name,
        )
    if value == MASKED_PLACEHOLDER:
        log.warning(
            "The Eachlabs connection's extra %r holds Airflow's masked placeholder %r, not a value: using %r",
            name,
            MASKED_PLACEHOLDER,
            AUTH_X_API_KEY,
        )
        return AUTH_X_API_KEY
    scheme = str(value).strip().lower() if value is not None else ""
    if scheme in ("", AUTH_X_API_KEY, "x_api_key", "api_key", "api-key"):
        return AUTH_X_API_KEY
    if scheme == AUTH_BEARER:
        return AUTH_BEARER
    raise ValueError(f"The Eachlabs connection's extra {name!r} must be 'x-api-key' or 'bearer', got {value!r}")


@dataclass(frozen=True)
class EachlabsSettings:
    """What the hook needs from an Eachlabs connection. The key is left out of ``repr``.

    :param conn_id: the connection id.
    :param base_url: the API base URL, without a trailing slash.
    :param api_key: the API key (the connection's password).
    :param auth_scheme: ``"x-api-key"`` (``X-API-Key: <key>``) or ``"bearer"`` (``Authorization: Bearer <key>``).
    :param rate_limit_per_minute: the async request budget shared per connection, event loop and process.
    :param timeout: seconds to wait to connect, and between bytes of a response.
    :param max_attempts: attempts per request when the fault is transient.
    """

    conn_id: str
    base_url: str
    api_key: str = field(repr=False)
    auth_scheme: str = AUTH_X_API_KEY
    rate_limit_per_minute: float = DEFAULT_RATE_LIMIT_PER_MINUTE
    timeout: float = DEFAULT_TIMEOUT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    @classmethod
    def from_connection(
        cls,
        conn_id: str,
        *,
        host: str | None,
        port: int | None,
        schema: str | None,
        password: str | None,
        extra: Mapping[str, Any],
        timeout: float | None = None,
        max_attempts: int | None = None,
    ) -> EachlabsSettings:
        """Read a connection's fields.

        :param timeout: when given, wins over the extra's ``timeout``.
        :param max_attempts: when given, wins over the extra's ``max_attempts``.
        :raises EachlabsAuthError: when the connection has no API key (password).
        :raises ValueError: when the host or an extra is invalid.
        """
        api_key = (password or "").strip()
        if not api_key:
            raise EachlabsAuthError(
                f"The Eachlabs connection {conn_id!r} has no API key: set it as the connection's password"
            )
        return cls(
            conn_id=conn_id,
            base_url=normalize_base_url(host, port, schema),
            api_key=api_key,
            auth_scheme=_auth_scheme(extra),
            rate_limit_per_minute=_positive_number(extra, "rate_limit_per_minute") or DEFAULT_RATE_LIMIT_PER_MINUTE,
            timeout=timeout or _positive_number(extra, "timeout") or DEFAULT_TIMEOUT,
            max_attempts=max_attempts or _positive_int(extra, "max_attempts") or DEFAULT_MAX_ATTEMPTS,
        )

    @property
    def headers(self) -> dict[str, str]:
        """The headers of every request, the key in the form the connection asks for."""
        auth = (
            {"Authorization": f"Bearer {self.api_key}"}
            if self.auth_scheme == AUTH_BEARER
            else {"X-API-Key": self.api_key}
        )
        return {**auth, "Accept": "application/json", "User-Agent": USER_AGENT}
