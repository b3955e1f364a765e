"""Run any Eachlabs model: submit one prediction, defer while it runs, return its outputs."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_runway.events import event_for_prediction, result_from_event
from airflow_runway.exceptions import EachlabsError, EachlabsNotFoundError, EachlabsPermanentError
from airflow_runway.hooks.eachlabs import EachlabsHook
from airflow_runway.links import VIDEO_URL_XCOM_KEY, RunwayVideoLink
from airflow_runway.models import Prediction, PredictionStatus
from airflow_runway.polling import PollSchedule, PredictionWatch
from airflow_runway.triggers.prediction import EachlabsPredictionTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

#: XCom key of the prediction id, pushed as soon as the prediction is created.
PREDICTION_ID_XCOM_KEY = "prediction_id"
#: ``task_state_store`` key under which a try remembers its prediction for the next try (Airflow >= 3.3).
PREDICTION_STATE_KEY = "eachlabs_prediction"
#: Airflow's own defer timeout is only a safety net behind the trigger's deadline (which cancels the job).
DEFER_TIMEOUT_MARGIN = timedelta(minutes=10)


def _seconds(value: timedelta | float | int, name: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return seconds


def _loggable(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The input as logged: data URIs (possibly megabytes of base64) are shortened."""
    return {
        key: f"{value[:32]}...({len(value):,} chars)" if isinstance(value, str) and value.startswith("data:") else value
        for key, value in payload.items()
    }


class EachlabsPredictionOperator(BaseOperator):
    """Run one prediction of any Eachlabs model and return its outputs.

    The task validates the input, creates exactly one (paid) prediction, pushes its id to XCom at once
    (key ``prediction_id``), then by default defers to :class:`EachlabsPredictionTrigger`, freeing its worker
    slot while the model runs. It returns ``{"prediction_id", "status", "video_url", "outputs", "metrics"}``.

    A new try of the task resumes the prediction an earlier try created (still running or succeeded) rather
    than paying for another, when Airflow provides ``task_state_store`` (Airflow >= 3.3). Permanent errors
    (bad input, bad key, no balance, a failed prediction) fail the task without retries; transient ones leave
    Airflow's retries to do their job.

    :param model: the Eachlabs model, e.g. ``"runway"``, ``"mochi-1"``, ``"ltx-video"`` (templated).
    :param version: the model version, e.g. ``"0.0.1"`` (templated).
    :param input: the model's input object (templated).
    :param eachlabs_conn_id: the Eachlabs connection.
    :param webhook_url: an optional URL the API calls with the final prediction (templated).
    :param deferrable: wait in the triggerer (default) instead of holding a worker slot.
    :param poll_interval: the shortest gap between status requests, in seconds. The API refreshes a
        prediction's status about every 5 s, so polling faster buys nothing.
    :param max_poll_interval: the cap the gap backs off toward while the prediction runs, in seconds.
    :param timeout: the longest wait for the prediction (``timedelta`` or seconds); on expiry the prediction
        is cancelled and the task fails.
    :param wait_for_completion: ``False`` returns right after the create (pair with
        :class:`~airflow_runway.sensors.prediction.EachlabsPredictionSensor`).
    :param cancel_on_kill: cancel the prediction when the task is killed, marked failed or cleared.
    """

    template_fields: Sequence[str] = ("model", "version", "input", "webhook_url")
    template_fields_renderers = {"input": "json"}
    operator_extra_links = (RunwayVideoLink(),)
    ui_color = "#e8dcff"

    def __init__(
        self,
        *,
        model: str,
        version: str,
        input: Mapping[str, Any] | None = None,
        eachlabs_conn_id: str = EachlabsHook.default_conn_name,
        webhook_url: str | None = None,
        deferrable: bool = True,
        poll_interval: float = 10.0,
        max_poll_interval: float = 60.0,
        timeout: timedelta | float = timedelta(hours=1),
        wait_for_completion: bool = True,
        cancel_on_kill: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.version = version
        self.input = input
        self.eachlabs_conn_id = eachlabs_conn_id
        self.webhook_url = webhook_url
        self.deferrable = deferrable
        self.poll_interval = _seconds(poll_interval, "poll_interval")
        self.max_poll_interval = max(_seconds(max_poll_interval, "max_poll_interval"), self.poll_interval)
        self.timeout = timeout
        self.timeout_seconds = _seconds(timeout, "timeout")
        self.wait_for_completion = wait_for_completion
        self.cancel_on_kill = cancel_on_kill
        self.prediction_id: str | None = None

    @cached_property
    def hook(self) -> EachlabsHook:
        return EachlabsHook(eachlabs_conn_id=self.eachlabs_conn_id)

    def build_input(self, context: Context) -> dict[str, Any]:
        """Validate and return the ``input`` object to send. Subclasses build typed inputs here.

        :raises AirflowFailException: when the input is invalid; nothing has been sent yet.
        """
        for name in ("model", "version"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise AirflowFailException(f"Invalid {name}={value!r}: a non-empty string is required")
        if not isinstance(self.input, Mapping):
            raise AirflowFailException(f"Invalid input={self.input!r}: a JSON object (dict) is required")
        try:
            json.dumps(self.input)
        except (TypeError, ValueError) as error:
            raise AirflowFailException(f"Invalid input: it must be JSON-serialisable ({error})") from error
        return dict(self.input)

    def execute(self, context: Context) -> dict[str, Any]:
        payload = self.build_input(context)
        prediction_id, finished = self._resume_or_create(context, payload)
        self.prediction_id = prediction_id
        context["ti"].xcom_push(key=PREDICTION_ID_XCOM_KEY, value=prediction_id)
        if finished is not None:
            return self._finish(context, event_for_prediction(finished, 0.0))
        if not self.wait_for_completion:
            return {
                "prediction_id": prediction_id,
                "status": "pending",
                "video_url": None,
                "outputs": [],
                "metrics": {},
            }
        started_at = time.time()
        deadline = started_at + self.timeout_seconds
        if self.deferrable:
            self.defer(
                trigger=EachlabsPredictionTrigger(
                    prediction_id=prediction_id,
                    eachlabs_conn_id=self.eachlabs_conn_id,
                    poll_interval=self.poll_interval,
                    max_poll_interval=self.max_poll_interval,
                    deadline=deadline,
                    started_at=started_at,
                    cancel_on_timeout=True,
                    cancel_on_kill=self.cancel_on_kill,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.timeout_seconds) + DEFER_TIMEOUT_MARGIN,
            )
        return self._finish(context, self._wait(prediction_id, started_at, deadline))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger fired: return the result, or fail with the API's message."""
        return self._finish(context, event)

    def _finish(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        self.prediction_id = event.get("prediction_id", self.prediction_id)
        result = result_from_event(event)  # raises for anything but success
        self.log.info("%s", event.get("message"))
        if result.get("video_url"):
            context["ti"].xcom_push(key=VIDEO_URL_XCOM_KEY, value=result["video_url"])
        self.prediction_id = None  # finished: nothing left for on_kill to cancel
        return result

    def _resume_or_create(self, context: Context, payload: dict[str, Any]) -> tuple[str, Prediction | None]:
        """Return the prediction to wait for, and the prediction itself if an earlier try saw it succeed."""
        store = context.get("task_state_store")
        fingerprint = hashlib.sha256(
            json.dumps([self.model, self.version, payload], sort_keys=True).encode()
        ).hexdigest()
        if store is None:
            self.log.debug("task_state_store unavailable (Airflow < 3.3): a new try creates a new prediction")
        else:
            saved = store.get(PREDICTION_STATE_KEY)
            if isinstance(saved, dict) and saved.get("fingerprint") == fingerprint:
                earlier = self._earlier_prediction(str(saved.get("prediction_id")))
                if earlier is not None and earlier.status in (
                    PredictionStatus.PENDING,
                    PredictionStatus.SUCCEEDED,
                ):
                    self.log.info(
                        "Resuming prediction %s from an earlier try (status %s) instead of creating a new one",
                        earlier.id,
                        earlier.raw_status,
                    )
                    return earlier.id, earlier if earlier.status is PredictionStatus.SUCCEEDED else None
        self.log.info("Creating a %s %s prediction with input %s", self.model, self.version, _loggable(payload))
        prediction_id = self.hook.create_prediction(
            model=self.model, version=self.version, input=payload, webhook_url=self.webhook_url
        )
        self.log.info("Created prediction %s", prediction_id)
        if store is not None:
            store.set(PREDICTION_STATE_KEY, {"prediction_id": prediction_id, "fingerprint": fingerprint})
        return prediction_id, None

    def _earlier_prediction(self, prediction_id: str) -> Prediction | None:
        try:
            earlier = self.hook.get_prediction_state(prediction_id)
        except EachlabsNotFoundError:
            self.log.info("The earlier try's prediction %s no longer exists; creating a new one", prediction_id)
            return None
        if earlier.status in (PredictionStatus.FAILED, PredictionStatus.CANCELLED):
            self.log.info(
                "The earlier try's prediction %s ended %s; creating a new one",
                prediction_id,
                earlier.raw_status,
            )
        return earlier

    def _wait(self, prediction_id: str, started_at: float, deadline: float) -> dict[str, Any]:
        """Wait in the worker (``deferrable=False``): the same schedule and events as the trigger."""
        watch = PredictionWatch(
            prediction_id,
            PollSchedule(self.poll_interval, self.max_poll_interval),
            deadline,
            started_at,
            self.log,
        )
        while not watch.expired:
            retry_after: float | None = None
            try:
                event = watch.observe(self.hook.get_prediction_state(prediction_id))
            except EachlabsPermanentError as error:
                event = watch.error_event(error)
            except EachlabsError as error:
                watch.transient_error(error)
                retry_after, event = error.retry_after, None
            if event is not None:
                return event
            time.sleep(watch.next_delay(retry_after))
        return watch.timeout_event(self._cancel("the deadline passed"))

    def _cancel(self, reason: str) -> bool:
        if self.prediction_id is None:
            return False
        try:
            self.hook.cancel_prediction(self.prediction_id)
        except EachlabsError as error:
            self.log.warning("Could not cancel prediction %s (%s): %s", self.prediction_id, reason, error)
            return False
        self.log.info("Cancelled prediction %s: %s", self.prediction_id, reason)
        return True

    def on_kill(self) -> None:
        """Cancel the running prediction when the task is killed while waiting in the worker."""
        if self.cancel_on_kill:
            self._cancel("the task was killed")
