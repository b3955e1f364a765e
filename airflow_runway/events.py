"""The events the prediction trigger yields, and how an operator turns one into a result or an error.

The trigger produces events; the operator, the sensor and the synchronous wait loop consume them through
:func:`result_from_event`, so the deferrable and the synchronous paths end in the same code.
"""

from __future__ import annotations

import enum
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_runway.exceptions import (
    EachlabsPredictionFailedError,
    EachlabsPredictionRejectedError,
    EachlabsPredictionTimeoutError,
)
from airflow_runway.models import Prediction, PredictionStatus, is_retryable_failure

#: Keys of the operator's return value (and of a successful event's ``prediction``).
RESULT_KEYS = ("prediction_id", "status", "video_url", "outputs", "metrics")


class EventStatus(str, enum.Enum):
    """How the wait for a prediction ended."""

    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    ERROR = "error"


def event_for_prediction(prediction: Prediction, elapsed: float) -> dict[str, Any]:
    """The event payload for a prediction that reached a terminal status."""
    status = {
        PredictionStatus.SUCCEEDED: EventStatus.SUCCESS,
        PredictionStatus.FAILED: EventStatus.FAILED,
        PredictionStatus.CANCELLED: EventStatus.CANCELLED,
    }[prediction.status]
    message = {
        EventStatus.SUCCESS: f"Prediction {prediction.id} succeeded after {elapsed:.0f}s",
        EventStatus.FAILED: f"Prediction {prediction.id} failed after {elapsed:.0f}s: "
        + (f"[{prediction.error_code}] " if prediction.error_code else "")
        + (prediction.error_message or prediction.raw_status),
        EventStatus.CANCELLED: f"Prediction {prediction.id} was cancelled after {elapsed:.0f}s",
    }[status]
    return {
        "status": status.value,
        "prediction_id": prediction.id,
        "prediction": prediction.to_result(),
        "message": message,
        "elapsed": round(elapsed, 3),
    }


def timeout_event(prediction_id: str, elapsed: float, cancelled: bool) -> dict[str, Any]:
    """The event payload for a wait that passed its deadline."""
    what = "cancelled it" if cancelled else "left it running"
    return {
        "status": EventStatus.TIMEOUT.value,
        "prediction_id": prediction_id,
        "message": f"Prediction {prediction_id} did not finish within the timeout ({elapsed:.0f}s elapsed); {what}",
        "elapsed": round(elapsed, 3),
    }


def error_event(prediction_id: str, elapsed: float, error: Exception) -> dict[str, Any]:
    """The event payload for a permanent API error met while polling (unknown id, bad key)."""
    return {
        "status": EventStatus.ERROR.value,
        "prediction_id": prediction_id,
        "message": f"Polling prediction {prediction_id} failed after {elapsed:.0f}s: {error}",
        "error_type": type(error).__name__,
        "elapsed": round(elapsed, 3),
    }


def result_from_event(event: dict[str, Any]) -> dict[str, Any]:
    """Return the operator result for a success event; raise the matching error for any other.

    How each ending fails the task (the README's "What fails how"):

    * failed with a retryable ``error_code`` (:data:`~airflow_runway.models.RETRYABLE_FAILURE_CODES`):
      :class:`EachlabsPredictionFailedError`, so the task's Airflow retries create a new prediction;
    * failed for any other reason: :class:`EachlabsPredictionRejectedError`, without retries;
    * timeout: :class:`EachlabsPredictionTimeoutError`, without retries (the cancel is best effort: each retry
      could be another billed video);
    * cancelled, or a permanent API error while polling: :class:`AirflowFailException`, without retries.
    """
    status = event.get("status")
    message = str(event.get("message") or f"Unexpected event from the prediction trigger: {event!r}")
    if status == EventStatus.SUCCESS.value:
        prediction = event["prediction"]
        return {key: prediction.get(key) for key in RESULT_KEYS}
    if status == EventStatus.FAILED.value:
        prediction = event.get("prediction") or {}
        code = prediction.get("error_code")
        if is_retryable_failure(code):
            raise EachlabsPredictionFailedError(
                f"{message} (a failure on Eachlabs' side: a retry of the task creates a new prediction)",
                error_code=code,
                prediction_id=event.get("prediction_id"),
            )
        raise EachlabsPredictionRejectedError(message, error_code=code, prediction_id=event.get("prediction_id"))
    if status == EventStatus.TIMEOUT.value:
        raise EachlabsPredictionTimeoutError(
            f"{message}. The task fails without retries, since a cancel is best effort and each retry could be "
            "another billed video: raise `timeout`, or clear the task to try again."
        )
    raise AirflowFailException(message)
