"""Run any Eachlabs model: submit one prediction, defer while it runs, return its outputs."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_runway.events import event_for_prediction, result_from_event
from airflow_runway.exceptions import EachlabsError
from airflow_runway.hooks.eachlabs import EachlabsHook
from airflow_runway.ledger import PredictionLedger, input_fingerprint
from airflow_runway.links import VIDEO_URL_XCOM_KEY, RunwayVideoLink
from airflow_runway.poll_policy import (
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_SPREAD,
    DurationPrior,
    prior_for,
)
from airflow_runway.triggers.prediction import EachlabsPredictionTrigger

try:
    from airflow.sdk.configuration import conf
except ImportError:  # Airflow 3.2
    from airflow.configuration import conf

if TYPE_CHECKING:
    from airflow.sdk import Context

#: XCom key of the prediction id, pushed as soon as the prediction is created.
PREDICTION_ID_XCOM_KEY = "prediction_id"
#: XCom key of the ``metrics.predict_time`` of the task's latest successful runs, which tune its poll schedule.
PREDICT_TIMES_XCOM_KEY = "predict_times"
#: How many of them are kept.
PREDICT_TIMES_KEPT = 20
#: Airflow's own defer timeout is only a safety net behind the trigger's deadline (which cancels the job).
DEFER_TIMEOUT_MARGIN = timedelta(minutes=10)


def default_deferrable() -> bool:
    """The ``deferrable`` default: ``True``, unless the deployment switches it off in its environment.

    A deployment without a triggerer sets Airflow's own option through its environment,
    ``AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE=False``, and these operators then wait in the worker. The option's
    value in ``airflow.cfg`` is not read: Airflow writes every default into the file it generates
    (``default_deferrable = false``, for operators whose deferrable mode is an opt-in), so a value there cannot
    be told from a choice, and these operators are deferrable by design.
    """
    value = os.environ.get("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE")
    return True if value is None else conf.getboolean("operators", "default_deferrable", fallback=True)


#: :func:`default_deferrable`, read when the operators are defined (as Airflow's own operators read it).
DEFAULT_DEFERRABLE = default_deferrable()


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


@dataclass(frozen=True)
class PredictionRequest:
    """What a create sends: the Eachlabs model, its version and the validated ``input`` object."""

    model: str
    version: str
    input: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return input_fingerprint(self.model, self.version, self.input)


class BaseEachlabsPredictionOperator(BaseOperator):
    """Submit one Eachlabs prediction, wait for it (deferred by default) and return its outputs.

    Subclasses say what to send by implementing :meth:`build_request`; everything else is here. The task
    validates the input, then creates at most one (paid) prediction and pushes its id to XCom at once (key
    ``prediction_id``); by default it defers to :class:`EachlabsPredictionTrigger`, freeing its worker slot while
    the model runs, and returns ``{"prediction_id", "status", "video_url", "outputs", "metrics"}``.

    Whether a try creates, resumes an earlier try's prediction or refuses is decided by
    :class:`~airflow_runway.ledger.PredictionLedger` (its docstring is the contract; resuming needs Airflow's
    ``task_state_store``, Airflow >= 3.3). How each ending fails the task is
    :func:`~airflow_runway.events.result_from_event`'s table.

    :param eachlabs_conn_id: the Eachlabs connection.
    :param webhook_url: an optional URL the API calls with the final prediction (templated).
    :param deferrable: wait in the triggerer instead of holding a worker slot; ``True`` unless the deployment
        sets ``AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE=False`` (see :func:`default_deferrable`).
    :param poll_interval: the gap between status requests around the expected finish, and the shortest gap, in
        seconds. The API refreshes a prediction's status about every 5 s, so polling faster buys nothing. Early
        on the prediction is checked every ``4 * poll_interval`` (an early failure is seen within about 20 s),
        then sparsely until its expected finish (see :mod:`airflow_runway.poll_policy`).
    :param max_poll_interval: the largest gap between status requests, in seconds.
    :param expected_duration: how long a prediction typically takes (``timedelta`` or seconds). By default the
        model's built-in estimate (Runway: 833 s), refined by ``metrics.predict_time`` of this task's latest
        successful runs (kept in its ``predict_times`` XCom).
    :param timeout: the longest wait for the prediction (``timedelta`` or seconds). At the deadline the status is
        read once more (a finished video is returned), else the prediction is cancelled (best effort) and the
        task fails without Airflow retries.
    :param wait_for_completion: ``False`` returns right after the create (pair with
        :class:`~airflow_runway.sensors.prediction.EachlabsPredictionSensor`).
    :param cancel_on_kill: cancel the prediction when the task is killed, marked failed or cleared.
    """

    operator_extra_links = (RunwayVideoLink(),)
    ui_color = "#e8dcff"

    def __init__(
        self,
        *,
        eachlabs_conn_id: str = EachlabsHook.default_conn_name,
        webhook_url: str | None = None,
        deferrable: bool = DEFAULT_DEFERRABLE,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        expected_duration: timedelta | float | None = None,
        timeout: timedelta | float = timedelta(hours=1),
        wait_for_completion: bool = True,
        cancel_on_kill: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.eachlabs_conn_id = eachlabs_conn_id
        self.webhook_url = webhook_url
        self.deferrable = deferrable
        self.poll_interval = _seconds(poll_interval, "poll_interval")
        self.max_poll_interval = max(_seconds(max_poll_interval, "max_poll_interval"), self.poll_interval)
        self.expected_duration = None if expected_duration is None else _seconds(expected_duration, "expected_duration")
        self.timeout = timeout
        self.timeout_seconds = _seconds(timeout, "timeout")
        self.wait_for_completion = wait_for_completion
        self.cancel_on_kill = cancel_on_kill
        self.prediction_id: str | None = None

    @cached_property
    def hook(self) -> EachlabsHook:
        return EachlabsHook(eachlabs_conn_id=self.eachlabs_conn_id)

    def build_request(self, context: Context) -> PredictionRequest:
        """Validate the rendered parameters and return what to send. Runs before any request.

        :raises AirflowFailException: when the input is invalid (no retries: retrying cannot fix it).
        """
        raise NotImplementedError

    def check_result(self, result: dict[str, Any]) -> None:
        """Check a succeeded prediction's result before it is returned; raise to fail the task."""

    def execute(self, context: Context) -> dict[str, Any]:
        request = self.build_request(context)
        ledger = PredictionLedger.for_try(context, self.log, self.timeout_seconds)
        decision = ledger.resume_or_create(self.hook, request.fingerprint, lambda: self._create(request))
        self.prediction_id = decision.prediction_id
        context["ti"].xcom_push(key=PREDICTION_ID_XCOM_KEY, value=decision.prediction_id)
        if decision.succeeded is not None:
            return self._finish(context, event_for_prediction(decision.succeeded, 0.0))
        if not self.wait_for_completion:
            ledger.succeeded()
            return {
                "prediction_id": decision.prediction_id,
                "status": "pending",
                "video_url": None,
                "outputs": [],
                "metrics": {},
            }
        prior = self._duration_prior(context, request.model)
        trigger = EachlabsPredictionTrigger(
            prediction_id=decision.prediction_id,
            eachlabs_conn_id=self.eachlabs_conn_id,
            poll_interval=self.poll_interval,
            max_poll_interval=self.max_poll_interval,
            expected_duration=prior.expected if prior else None,
            spread=prior.spread if prior else DEFAULT_SPREAD,
            deadline=time.time() + self.timeout_seconds,
            started_at=decision.created_at,
            cancel_on_timeout=True,
            cancel_on_kill=self.cancel_on_kill,
        )
        if self.deferrable:
            # From here the trigger owns the prediction (and its cancel): a SIGTERM the worker gets after the
            # deferral must not cancel the prediction the task is about to wait for in the triggerer.
            self.prediction_id = None
            self.defer(
                trigger=trigger,
                method_name="execute_complete",
                timeout=timedelta(seconds=self.timeout_seconds) + DEFER_TIMEOUT_MARGIN,
            )
        # deferrable=False: the trigger's own wait, in this worker's event loop; on_kill cancels from here.
        return self._finish(context, asyncio.run(trigger.wait()))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger fired: return the result, or fail with the API's message."""
        return self._finish(context, event)

    def _create(self, request: PredictionRequest) -> str:
        self.log.info(
            "Creating a %s %s prediction with input %s", request.model, request.version, _loggable(request.input)
        )
        prediction_id = self.hook.create_prediction(
            model=request.model, version=request.version, input=request.input, webhook_url=self.webhook_url
        )
        self.log.info("Created prediction %s", prediction_id)
        return prediction_id

    def _duration_prior(self, context: Context, model: str) -> DurationPrior | None:
        if self.expected_duration is not None:
            return DurationPrior(self.expected_duration, DEFAULT_SPREAD)
        return prior_for(model, self._predict_times(context))

    def _predict_times(self, context: Context) -> list[float]:
        """``metrics.predict_time`` of this task's latest successful runs, oldest first."""
        try:
            times = context["ti"].xcom_pull(task_ids=self.task_id, key=PREDICT_TIMES_XCOM_KEY, include_prior_dates=True)
        except Exception:  # a history only tunes the poll schedule: never fail a paid wait over it
            self.log.debug("No predict_time history for this task", exc_info=True)
            return []
        if not isinstance(times, list):
            return []
        return [float(t) for t in times if isinstance(t, (int, float)) and not isinstance(t, bool)]

    def _finish(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        self.prediction_id = event.get("prediction_id", self.prediction_id)
        result = result_from_event(event)  # raises for anything but success
        self.log.info("%s", event.get("message"))
        PredictionLedger.for_try(context, self.log, self.timeout_seconds).succeeded()
        predict_time = (result.get("metrics") or {}).get("predict_time")
        if isinstance(predict_time, (int, float)) and predict_time > 0:
            history = [*self._predict_times(context), float(predict_time)][-PREDICT_TIMES_KEPT:]
            context["ti"].xcom_push(key=PREDICT_TIMES_XCOM_KEY, value=history)
        self.prediction_id = None  # finished: nothing left for on_kill to cancel
        self.check_result(result)
        if result.get("video_url"):
            context["ti"].xcom_push(key=VIDEO_URL_XCOM_KEY, value=result["video_url"])
        return result

    def _cancel(self, reason: str) -> bool:
        if self.prediction_id is None:
            return False
        try:
            self.hook.cancel_prediction(self.prediction_id, once=True)
        except EachlabsError as error:
            self.log.warning("Could not cancel prediction %s (%s): %s", self.prediction_id, reason, error)
            return False
        self.log.info("Cancelled prediction %s: %s", self.prediction_id, reason)
        return True

    def on_kill(self) -> None:
        """Cancel the running prediction when the task is killed while waiting in the worker."""
        if self.cancel_on_kill:
            self._cancel("the task was killed")


class EachlabsPredictionOperator(BaseEachlabsPredictionOperator):
    """Run one prediction of any Eachlabs model and return its outputs.

    .. code-block:: python

        ltx = EachlabsPredictionOperator(
            task_id="ltx",
            model="ltx-video",
            version="0.0.1",
            input={"prompt": "waves at dawn, {{ ds }}", "num_frames": 97},
        )

    See :class:`BaseEachlabsPredictionOperator` for the shared parameters, the return value and the rules of
    creating, resuming and failing.

    :param model: the Eachlabs model, e.g. ``"runway"``, ``"mochi-1"``, ``"ltx-video"`` (templated).
    :param version: the model version, e.g. ``"0.0.1"`` (templated).
    :param input: the model's input object, sent as it is (templated).
    """

    template_fields: Sequence[str] = ("model", "version", "input", "webhook_url")
    template_fields_renderers = {"input": "json"}

    def __init__(self, *, model: str, version: str, input: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.version = version
        self.input = input

    def build_request(self, context: Context) -> PredictionRequest:
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
        return PredictionRequest(self.model, self.version, dict(self.input))
