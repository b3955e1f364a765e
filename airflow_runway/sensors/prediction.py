"""Wait for an Eachlabs prediction that already exists (created elsewhere, or with ``wait_for_completion=False``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout

from airflow_runway.events import EventStatus, event_for_prediction, result_from_event
from airflow_runway.exceptions import EachlabsTransientError
from airflow_runway.hooks.eachlabs import EachlabsHook
from airflow_runway.links import VIDEO_URL_XCOM_KEY, RunwayVideoLink
from airflow_runway.operators.prediction import DEFAULT_DEFERRABLE, DEFER_TIMEOUT_MARGIN
from airflow_runway.triggers.prediction import EachlabsPredictionTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context


class EachlabsPredictionSensor(BaseSensorOperator):
    """Wait until a prediction finishes; return the same result dict as the generation operators.

    Deferrable by default: it reads the prediction once and, unless it has already finished, waits in the
    triggerer with the same trigger as the operators. The sensor does not own the prediction, so it never cancels
    it (not on timeout, not on kill). A failed or cancelled prediction fails the task with the API's message.

    :param prediction_id: the prediction to wait for (templated), e.g.
        ``"{{ ti.xcom_pull(task_ids='submit', key='prediction_id') }}"``.
    :param eachlabs_conn_id: the Eachlabs connection.
    :param deferrable: wait in the triggerer instead of poking from a worker; ``True`` unless the deployment
        sets ``AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE=False``.
    :param max_poll_interval: in deferrable mode, the cap the poll gap backs off toward from ``poke_interval``.
    """

    template_fields: Sequence[str] = ("prediction_id",)
    operator_extra_links = (RunwayVideoLink(),)

    def __init__(
        self,
        *,
        prediction_id: str,
        eachlabs_conn_id: str = EachlabsHook.default_conn_name,
        deferrable: bool = DEFAULT_DEFERRABLE,
        max_poll_interval: float = 60.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", 10.0)
        super().__init__(**kwargs)
        self.prediction_id = prediction_id
        self.eachlabs_conn_id = eachlabs_conn_id
        self.deferrable = deferrable
        self.max_poll_interval = max_poll_interval

    @cached_property
    def hook(self) -> EachlabsHook:
        return EachlabsHook(eachlabs_conn_id=self.eachlabs_conn_id)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        # Airflow's convention for deferrable sensors: check first, so a finished prediction costs no deferral.
        done = self.poke(context)
        if isinstance(done, PokeReturnValue) and done.is_done:
            return done.xcom_value
        started_at = time.time()
        self.defer(
            trigger=EachlabsPredictionTrigger(
                prediction_id=self.prediction_id,
                eachlabs_conn_id=self.eachlabs_conn_id,
                poll_interval=float(self.poke_interval),
                max_poll_interval=max(self.max_poll_interval, float(self.poke_interval)),
                deadline=started_at + float(self.timeout),
                started_at=started_at,
                cancel_on_timeout=False,
                cancel_on_kill=False,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout)) + DEFER_TIMEOUT_MARGIN,
        )

    def poke(self, context: Context) -> PokeReturnValue | bool:
        try:
            prediction = self.hook.get_prediction_state(self.prediction_id)
        except EachlabsTransientError as error:
            self.log.warning("Could not read prediction %s, will poke again: %s", self.prediction_id, error)
            return False
        self.log.info("Prediction %s is %s", self.prediction_id, prediction.raw_status)
        if not prediction.status.is_terminal:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._finish(context, event_for_prediction(prediction, 0.0)))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger fired: return the result, or fail with the API's message."""
        if event.get("status") == EventStatus.TIMEOUT.value:
            raise AirflowSensorTimeout(event.get("message"))
        return self._finish(context, event)

    def _finish(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        result = result_from_event(event)
        if result.get("video_url"):
            context["ti"].xcom_push(key=VIDEO_URL_XCOM_KEY, value=result["video_url"])
        return result
