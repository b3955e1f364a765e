"""The deferrable trigger that waits for an Eachlabs prediction in the triggerer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_runway.exceptions import EachlabsError, EachlabsPermanentError
from airflow_runway.hooks.eachlabs import EachlabsHook
from airflow_runway.poll_policy import (
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_SPREAD,
    schedule_for_wait,
)
from airflow_runway.polling import PredictionWatch
from airflow_runway.triggers._ownership import shielded, stopped_by_user

#: What ``on_kill`` may take in all: the triggerer gives it 30 s.
ON_KILL_SECONDS = 25.0


class EachlabsPredictionTrigger(BaseTrigger):
    """Poll one prediction until it succeeds, fails, is cancelled or passes its deadline.

    It only ever reads (and, on timeout or kill, cancels) an existing prediction: it never creates one, so a
    triggerer restart or two HA triggerers running it at once cannot cost a second video. All triggers of one
    connection in a triggerer process share one HTTP connection pool and one request budget (see
    :class:`~airflow_runway.hooks.eachlabs.EachlabsHook`). It yields exactly one event, then returns; transient
    faults never escape ``run()``: it keeps polling until the deadline, and any other exception becomes an error
    event. Every request is bounded by the deadline; at the deadline it reads the status once more (a finished
    video is returned, not cancelled), then cancels with one short attempt.

    :param prediction_id: the prediction to wait for.
    :param eachlabs_conn_id: the Eachlabs connection (only its id is serialized, never the key).
    :param poll_interval: the gap near the expected finish, and the shortest gap between two status requests,
        in seconds (see :func:`~airflow_runway.poll_policy.schedule_for_wait`).
    :param max_poll_interval: the largest gap, in seconds.
    :param expected_duration: how long the prediction typically takes, in seconds (see
        :func:`~airflow_runway.poll_policy.prior_for`); ``None`` when unknown.
    :param spread: the relative half-width of the window it typically finishes in.
    :param deadline: absolute wall-clock deadline (Unix seconds), or ``None`` for none. Enforced here, not by
        Airflow's defer timeout, because on that timeout the operator is never resumed to cancel the prediction.
    :param started_at: when the prediction was created (Unix seconds): the poll schedule's phases and the elapsed
        time in logs and events are measured from it.
    :param cancel_on_timeout: cancel the prediction when the deadline passes.
    :param cancel_on_kill: cancel the prediction when a user marks the task failed or clears it.
    """

    def __init__(
        self,
        *,
        prediction_id: str,
        eachlabs_conn_id: str = EachlabsHook.default_conn_name,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        expected_duration: float | None = None,
        spread: float = DEFAULT_SPREAD,
        deadline: float | None = None,
        started_at: float | None = None,
        cancel_on_timeout: bool = True,
        cancel_on_kill: bool = True,
    ) -> None:
        super().__init__()
        self.prediction_id = prediction_id
        self.eachlabs_conn_id = eachlabs_conn_id
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.expected_duration = expected_duration
        self.spread = spread
        self.deadline = deadline
        self.started_at = started_at if started_at is not None else time.time()
        self.cancel_on_timeout = cancel_on_timeout
        self.cancel_on_kill = cancel_on_kill

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "prediction_id": self.prediction_id,
                "eachlabs_conn_id": self.eachlabs_conn_id,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "expected_duration": self.expected_duration,
                "spread": self.spread,
                "deadline": self.deadline,
                "started_at": self.started_at,
                "cancel_on_timeout": self.cancel_on_timeout,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        yield TriggerEvent(await self.wait())

    async def wait(self) -> dict[str, Any]:
        """Wait for the prediction and return the one event ``run()`` yields.

        Also what an operator with ``deferrable=False`` runs in its worker's own event loop: both modes share
        this loop, its deadline rules and its events.
        """
        hook = EachlabsHook(eachlabs_conn_id=self.eachlabs_conn_id)
        watch = PredictionWatch(
            self.prediction_id,
            schedule_for_wait(
                started_at=self.started_at,
                poll_interval=self.poll_interval,
                max_poll_interval=self.max_poll_interval,
                expected_duration=self.expected_duration,
                spread=self.spread,
            ),
            self.deadline,
            self.started_at,
            self.log,
        )
        try:
            event = await self._wait(hook, watch)
        except Exception as error:
            # Nothing but cancellation escapes: a missing connection, a bad extra or a client bug becomes an
            # error event, and the task fails with its message instead of the triggerer's traceback.
            self.log.exception("Waiting for prediction %s failed", self.prediction_id)
            event = watch.error_event(error)
        finally:
            await hook.aclose()
        return event

    async def _wait(self, hook: EachlabsHook, watch: PredictionWatch) -> dict[str, Any]:
        while not watch.expired:
            retry_after: float | None = None
            try:
                prediction = await hook.aget_prediction_state(
                    self.prediction_id, deadline=self.deadline, urgency=watch.schedule.urgency()
                )
                event = watch.observe(prediction)
            except EachlabsPermanentError as error:
                event = watch.error_event(error)
            except EachlabsError as error:
                watch.transient_error(error)
                retry_after, event = error.retry_after, None
            if event is not None:
                return event
            await asyncio.sleep(watch.next_delay(retry_after))
        # One more read before cancelling: a video that finished in the last poll gap, or while the triggerer
        # was down past the deadline, is returned, never cancelled.
        try:
            event = watch.observe(await hook.aget_prediction_state(self.prediction_id, once=True))
        except EachlabsError as error:
            watch.final_read_failed(error)
            event = None
        if event is not None:
            return event
        cancelled = self.cancel_on_timeout and await self._cancel(hook, "the deadline passed")
        return watch.timeout_event(cancelled)

    async def _cancel(self, hook: EachlabsHook, reason: str) -> bool:
        try:
            await hook.acancel_prediction(self.prediction_id, once=True)
        except EachlabsError as error:
            self.log.warning("Could not cancel prediction %s (%s): %s", self.prediction_id, reason, error)
            return False
        self.log.info("Cancelled prediction %s: %s", self.prediction_id, reason)
        return True

    async def on_kill(self) -> None:
        """Cancel the prediction when a user marks the deferred task failed or clears it (Airflow >= 3.3).

        Airflow 3.3 also calls ``on_kill`` when the trigger merely moved to another triggerer, and cuts a running
        ``on_kill`` short; see :mod:`airflow_runway.triggers._ownership` for both guards and what they cannot
        tell apart.
        """
        if self.cancel_on_kill:
            await shielded(self._cancel_if_stopped_by_user(), timeout=ON_KILL_SECONDS)

    async def _cancel_if_stopped_by_user(self) -> None:
        if not await stopped_by_user(self):
            self.log.info("Trigger of prediction %s moved to another triggerer: leaving it running", self.prediction_id)
            return
        hook = EachlabsHook(eachlabs_conn_id=self.eachlabs_conn_id)
        try:
            await self._cancel(hook, "the task was stopped by a user")
        finally:
            await hook.aclose()
