"""HTTP answers and network faults turned into the typed errors of :mod:`airflow_runway.exceptions`.

Shared by the sync (``requests``) and async (``aiohttp``) paths, so both map every status, body shape and fault
the same way. Every message is the API's own (``error``, plus ``details`` when sent) or, for a body that is not
JSON, the status and a short snippet; the API key is redacted from all of them.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time
from collections.abc import Mapping
from datetime import timezone
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import requests
from urllib3.exceptions import NewConnectionError

from airflow_runway.exceptions import (
    EachlabsAuthError,
    EachlabsConnectionError,
    EachlabsError,
    EachlabsInvalidInputError,
    EachlabsMalformedResponseError,
    EachlabsNotFoundError,
    EachlabsPaymentRequiredError,
    EachlabsRateLimitError,
    EachlabsRedirectError,
    EachlabsServerError,
)
from airflow_runway.redaction import redact

SNIPPET_LENGTH = 200
_TAG = re.compile(r"<[^>]*>")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")
# aiohttp >= 3.10 raises this when the TCP connect itself times out.
_AIOHTTP_CONNECT_TIMEOUT: tuple[type[BaseException], ...] = tuple(
    cls for cls in (getattr(aiohttp, "ConnectionTimeoutError", None),) if isinstance(cls, type)
)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date; ``None`` if absent/invalid."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds == float("inf"):  # NaN or infinite
        return None
    return max(0.0, seconds)


def snippet(body: bytes | str) -> str:
    """A short one-line excerpt of a body; an HTML page is reduced to its title, or else its text."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    if text.lstrip().startswith("<"):
        title = _TITLE.search(text)
        text = title.group(1) if title and title.group(1).strip() else _TAG.sub(" ", text)
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= SNIPPET_LENGTH else text[: SNIPPET_LENGTH - 3] + "..."


def _decode(body: bytes) -> Any:
    """The JSON value of ``body``, or ``ValueError``."""
    return json.loads(body.decode("utf-8"))


def _stringify(value: Any) -> str:
    return value.strip() if isinstance(value, str) else json.dumps(value, default=str)


def api_message(data: Any) -> str | None:
    """The error a JSON error body states: ``error`` (or ``message``), plus ``details`` when present."""
    if not isinstance(data, Mapping):
        return None
    error = next((data[key] for key in ("error", "message", "detail") if data.get(key) not in (None, "")), None)
    if isinstance(error, Mapping):
        error = error.get("message") or error
    if error is None:
        return None
    message = _stringify(error)
    details = data.get("details")
    if details not in (None, "", [], {}):
        message = f"{message}: {_stringify(details)}"
    return message or None


def _describe(status: int, reason: str, body: bytes) -> str:
    """The API's message, or the status and a snippet of a body that states none."""
    try:
        message = api_message(_decode(body))
    except ValueError:
        message = None
    if message:
        return message
    if not reason:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
    head = f"HTTP {status} {reason}".strip()
    excerpt = snippet(body)
    return f"{head}: {excerpt}" if excerpt else head


def error_for_response(
    status: int, body: bytes, headers: Mapping[str, str], *, reason: str = "", secret: str | None = None
) -> EachlabsError | None:
    """The typed error an HTTP answer means, or ``None`` for a 2xx.

    400/422 invalid input, 401/403 auth, 402 payment required, 404/410 not found, any other 4xx invalid input
    and any 3xx redirect (all permanent: requests never follow a redirect, see :func:`redirect_error`); 429 rate
    limit and 5xx server error (transient, with ``retry_after`` when sent); anything else (1xx) a malformed
    response.
    """
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return redirect_error(status, headers.get("Location"), reason=reason)
    message = redact(_describe(status, reason, body), secret)
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if status == 429:
        return EachlabsRateLimitError(message, status_code=status, retry_after=retry_after)
    if status >= 500:
        return EachlabsServerError(message, status_code=status, retry_after=retry_after)
    error_class: type[EachlabsError]
    if status in (401, 403):
        error_class = EachlabsAuthError
    elif status == 402:
        error_class = EachlabsPaymentRequiredError
    elif status in (404, 410):
        error_class = EachlabsNotFoundError
    elif 400 <= status < 500:
        error_class = EachlabsInvalidInputError
    else:
        error_class = EachlabsMalformedResponseError
    return error_class(message, status_code=status, retry_after=retry_after)


def redirect_error(status: int, location: str | None, *, reason: str = "") -> EachlabsRedirectError:
    """The error of a 3xx answer, naming the status and the host of its ``Location`` (never its path or query).

    API requests never follow redirects: that would send the API key to the host the ``Location`` names. A
    redirect is a configuration error (the connection's host is not the API's address), so it is permanent.
    """
    if not reason:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
    target = (location or "").strip()
    if not target:
        where = "without a Location"
    else:
        parts = urlsplit(target)
        host = parts.netloc.rpartition("@")[2]
        where = f"to host {host!r}" if host else "to another path on the same host"
    head = f"HTTP {status} {reason}".strip()
    return EachlabsRedirectError(
        f"Eachlabs answered {head}, a redirect {where}. API requests never follow redirects (the API key goes "
        "only to the configured host): set the connection's host to the API's own address.",
        status_code=status,
    )


def decode_object(body: bytes, status: int, *, secret: str | None = None) -> dict[str, Any]:
    """The JSON object of a successful answer.

    :raises EachlabsMalformedResponseError: when the body is not JSON or not an object.
    """
    try:
        data = _decode(body)
    except ValueError:
        data = None
        problem = "a body that is not JSON"
    else:
        problem = f"a JSON {type(data).__name__} instead of an object"
    if isinstance(data, dict):
        return data
    message = redact(f"Eachlabs answered HTTP {status} with {problem}: {snippet(body)!r}", secret)
    raise EachlabsMalformedResponseError(message, status_code=status)


def prediction_id_from_create(data: Mapping[str, Any], *, secret: str | None = None) -> str:
    """The ``predictionID`` of a create answer.

    :raises EachlabsMalformedResponseError: when it is missing or empty.
    """
    prediction_id = data.get("predictionID")
    if isinstance(prediction_id, (str, int)) and not isinstance(prediction_id, bool) and str(prediction_id).strip():
        return str(prediction_id).strip()
    body = snippet(json.dumps(data, default=str))
    raise EachlabsMalformedResponseError(
        redact(f"Eachlabs answered the create without a predictionID: {body!r}", secret), status_code=200
    )


def _requests_never_connected(error: requests.RequestException) -> bool:
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return True
    # requests wraps urllib3's MaxRetryError, whose ``reason`` is the fault; refused and DNS failures are
    # NewConnectionError (NameResolutionError subclasses it in urllib3 2).
    cause = error.args[0] if error.args else None
    return isinstance(getattr(cause, "reason", cause), NewConnectionError)


def connection_error_from_requests(error: requests.RequestException, *, secret: str | None = None) -> EachlabsError:
    """A ``requests`` network fault as :class:`EachlabsConnectionError`.

    ``request_sent`` is ``False`` only when the connection was never established (refused, DNS failure or
    connect timeout), which is what makes retrying a create safe.
    """
    never_connected = isinstance(error, requests.ConnectionError) and _requests_never_connected(error)
    kind = "could not connect" if never_connected else "request failed"
    message = redact(f"Eachlabs {kind}: {type(error).__name__}: {error}", secret)
    return EachlabsConnectionError(message, request_sent=not never_connected)


def connection_error_from_aiohttp(error: BaseException, *, secret: str | None = None) -> EachlabsError:
    """An ``aiohttp`` network fault (or timeout) as :class:`EachlabsConnectionError`.

    ``request_sent`` is ``False`` only for :class:`aiohttp.ClientConnectorError` (refused, DNS, TLS handshake)
    and a connect timeout.
    """
    never_connected = isinstance(error, (aiohttp.ClientConnectorError, *_AIOHTTP_CONNECT_TIMEOUT))
    kind = "could not connect" if never_connected else "request failed"
    if isinstance(error, asyncio.TimeoutError):
        detail = str(error) or "timed out"
    else:
        detail = str(error) or type(error).__name__
    message = redact(f"Eachlabs {kind}: {type(error).__name__}: {detail}", secret)
    return EachlabsConnectionError(message, request_sent=not never_connected)
