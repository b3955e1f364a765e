"""The bookkeeping of a wait for a prediction: deadline, status-change logs and the final event."""

from __future__ import annotations

import logging
import time
from typing import Any

from airflow_runway.events import error_event, event_for_prediction, timeout_event
from airflow_runway.exceptions import EachlabsError
from airflow_runway.models import Prediction
from airflow_runway.poll_policy import FinishAwareSchedule


class PredictionWatch:
    """The bookkeeping of one wait for a prediction (the trigger's, in the triggerer or in a worker).

    It knows the deadline and the poll schedule, logs each status change once with the elapsed time, and
    turns a terminal prediction into the event the wait ends with. The loop around it only does the I/O.

    :param prediction_id: the prediction waited for.
    :param schedule: the poll schedule.
    :param deadline: absolute deadline (Unix seconds), or ``None`` to wait forever.
    :param started_at: when the prediction was created (Unix seconds).
    :param log: where status changes are logged.
    """

    def __init__(
        self,
        prediction_id: str,
        schedule: FinishAwareSchedule,
        deadline: float | None,
        started_at: float,
        log: logging.Logger | logging.LoggerAdapter[Any] | Any,
    ) -> None:
        self.prediction_id = prediction_id
        self.schedule = schedule
        self.deadline = deadline
        self.started_at = started_at
        self.log = log
        self._last_status: str | None = None

    @property
    def elapsed(self) -> float:
        return time.time() - self.started_at

    @property
    def expired(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline

    def observe(self, prediction: Prediction) -> dict[str, Any] | None:
        """Record a status read; return the final event if the prediction is finished, else ``None``."""
        if prediction.raw_status != self._last_status:
            self._last_status = prediction.raw_status
            self.log.info("Prediction %s is %s after %.0fs", self.prediction_id, prediction.raw_status, self.elapsed)
        if prediction.status.is_terminal:
            return event_for_prediction(prediction, self.elapsed)
        return None

    def transient_error(self, error: EachlabsError) -> None:
        """Record a transient fault the hook could not retry away; polling goes on."""
        self.log.warning("Polling prediction %s failed, will poll again: %s", self.prediction_id, error)

    def final_read_failed(self, error: EachlabsError) -> None:
        """Record that the last read before cancelling at the deadline failed."""
        self.log.warning("Could not read prediction %s at the deadline: %s", self.prediction_id, error)

    def next_delay(self, retry_after: float | None = None) -> float:
        """The gap before the next poll, never past the deadline."""
        delay = self.schedule.next_delay(retry_after)
        if self.deadline is not None:
            delay = max(0.0, min(delay, self.deadline - time.time()))
        return delay

    def timeout_event(self, cancelled: bool) -> dict[str, Any]:
        return timeout_event(self.prediction_id, self.elapsed, cancelled)

    def error_event(self, error: Exception) -> dict[str, Any]:
        return error_event(self.prediction_id, self.elapsed, error)
