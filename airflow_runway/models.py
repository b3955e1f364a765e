"""The one place where Eachlabs responses become typed results.

Every reading of the contract is accepted: the statuses ``created``/``starting``/``processing`` (and any unknown
value) are pending, ``success`` succeeded, ``error``/``failed`` failed, ``cancelled``/``canceled`` cancelled; the
output may be a URL string, a list of URLs or an object holding them; a failure is described by an object with
``error_code``/``error_message``, a plain string, or ``null`` with the reason in ``logs``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_runway.exceptions import EachlabsMalformedResponseError


class PredictionStatus(str, enum.Enum):
    """The normalised state of a prediction."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self is not PredictionStatus.PENDING


_STATUS_MAP: dict[str, PredictionStatus] = {
    "success": PredictionStatus.SUCCEEDED,
    "succeeded": PredictionStatus.SUCCEEDED,
    "error": PredictionStatus.FAILED,
    "failed": PredictionStatus.FAILED,
    "cancelled": PredictionStatus.CANCELLED,
    "canceled": PredictionStatus.CANCELLED,
}

#: Failure codes (``output.error_code``) that mean trouble on Eachlabs' or the provider's side: a new prediction
#: may succeed, so the task's Airflow retries are used. Every other code, and none, means the input or the content
#: (``INPUT_VALIDATION_ERROR``, ``PROVIDER_REJECTED``, ``SAFETY.*``) or is unknown: no retries (spend-safe).
RETRYABLE_FAILURE_CODES = frozenset({"WORKER_LOST", "EXECUTION_TIMEOUT", "PROVIDER_RATE_LIMIT"})


def is_retryable_failure(error_code: str | None) -> bool:
    """Whether a prediction that failed with ``error_code`` is worth a new (paid) prediction."""
    return bool(error_code) and str(error_code).strip().upper() in RETRYABLE_FAILURE_CODES


# Keys under which an output object may hold its URL(s), most specific first.
_OUTPUT_KEYS = ("video", "video_url", "url", "urls", "output", "outputs", "uri", "file", "files")


@dataclass(frozen=True)
class Prediction:
    """A prediction as read from ``GET /v1/prediction/{id}``, normalised.

    :param id: the prediction id.
    :param status: the normalised status.
    :param raw_status: the status string exactly as the API sent it.
    :param output_urls: every output URL found, in order (empty unless succeeded).
    :param metrics: ``metrics`` as sent (``predict_time``, ``cost``, ...), or ``{}``.
    :param error_code: on failure, the API's error code when it gives one.
    :param error_message: on failure, the API's message (or its logs when that is all there is).
    """

    id: str
    status: PredictionStatus
    raw_status: str
    output_urls: tuple[str, ...] = ()
    metrics: dict[str, Any] = field(default_factory=dict)
    error_code: str | None = None
    error_message: str | None = None

    @property
    def video_url(self) -> str | None:
        """The first output URL, which for video models is the video."""
        return self.output_urls[0] if self.output_urls else None

    def to_result(self) -> dict[str, Any]:
        """The sanitised, JSON-serialisable form used for trigger events and operator return values."""
        return {
            "prediction_id": self.id,
            "status": self.status.value,
            "video_url": self.video_url,
            "outputs": list(self.output_urls),
            "metrics": dict(self.metrics),
            "error_code": self.error_code,
            "error_message": self.error_message,
        }


def normalize_status(raw: Any) -> PredictionStatus:
    """Map a raw status to :class:`PredictionStatus`; anything unknown means "not finished yet"."""
    if not isinstance(raw, str):
        return PredictionStatus.PENDING
    return _STATUS_MAP.get(raw.strip().lower(), PredictionStatus.PENDING)


def extract_output_urls(output: Any) -> tuple[str, ...]:
    """Find the output URL(s) whether ``output`` is a string, a list or an object holding them."""
    if output is None:
        return ()
    if isinstance(output, str):
        return (output,) if output.strip() else ()
    if isinstance(output, (list, tuple)):
        urls: list[str] = []
        for item in output:
            urls.extend(extract_output_urls(item))
        return tuple(urls)
    if isinstance(output, Mapping):
        for key in _OUTPUT_KEYS:
            if key in output:
                found = extract_output_urls(output[key])
                if found:
                    return found
        # An object with unknown keys: take every URL-looking string value, in order.
        urls = []
        for value in output.values():
            urls.extend(u for u in extract_output_urls(value) if u.startswith(("http://", "https://")))
        return tuple(urls)
    return ()


def _failure_details(output: Any, logs: Any) -> tuple[str | None, str | None]:
    """The failure's code and message; the message falls back to ``logs`` whatever shape ``output`` has."""
    code = message = None
    if isinstance(output, Mapping):
        code = output.get("error_code") or output.get("code")
        message = output.get("error_message") or output.get("message") or output.get("error")
    elif isinstance(output, str) and output.strip():
        message = output
    if not message and isinstance(logs, str) and logs.strip():
        message = logs.strip()
    return (str(code) if code else None, str(message) if message else None)


def parse_prediction(body: Any, prediction_id: str | None = None) -> Prediction:
    """Turn a ``GET /v1/prediction/{id}`` body into a :class:`Prediction`.

    :param body: the decoded JSON body.
    :param prediction_id: the id asked for, used when the body omits it.
    :raises EachlabsMalformedResponseError: when the body is not an object or carries no status.
    """
    if not isinstance(body, Mapping) or "status" not in body:
        raise EachlabsMalformedResponseError(
            f"Eachlabs returned a prediction body without a status: {str(body)[:200]!r}"
        )
    raw_status = str(body.get("status"))
    status = normalize_status(body.get("status"))
    pid = str(body.get("id") or body.get("predictionID") or prediction_id or "")
    metrics = body.get("metrics") if isinstance(body.get("metrics"), Mapping) else {}
    output = body.get("output")
    error_code = error_message = None
    urls: tuple[str, ...] = ()
    if status is PredictionStatus.SUCCEEDED:
        urls = extract_output_urls(output)
    elif status is PredictionStatus.FAILED:
        error_code, error_message = _failure_details(output, body.get("logs"))
        error_message = error_message or f"prediction {pid} ended with status {raw_status!r}"
    return Prediction(
        id=pid,
        status=status,
        raw_status=raw_status,
        output_urls=urls,
        metrics=dict(metrics or {}),
        error_code=error_code,
        error_message=error_message,
    )
