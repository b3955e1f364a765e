"""The create-or-resume decision: one task, one paid prediction, unless a user asks for another.

Every create is a paid video. A generation task keeps one record in Airflow's ``task_state_store`` (Airflow >= 3.3;
it survives retries and clears), under :data:`PREDICTION_STATE_KEY`, and :class:`PredictionLedger` alone reads and
writes it. The rules, in the order a try meets them:

1. **Intent before the request.** Before the create is sent the record says ``creating`` with the input's
   fingerprint; if that write fails, nothing is sent. Right after the create it says ``created`` with the id.
2. **A create whose outcome is unknown is never sent again.** A read timeout or reset after the body was sent,
   a 500/502/504, or a malformed 2xx may have created a prediction: the task fails without Airflow retries
   (:class:`~airflow_runway.exceptions.EachlabsCreateUncertainError`), saying so, and the record is removed, so
   that a user's clear (the explicit "run it again") creates anew. A create that provably created nothing (429,
   503, connection refused) or was rejected (400, 401, 402) removes the record and raises its own error.
3. **A try that finds ``creating`` without an id** (the worker died between the request and the bookkeeping)
   fails the same way, without sending anything, and removes the record.
4. **Bookkeeping never costs a second video.** If recording the new id fails, the try logs it and goes on
   waiting for that prediction; the id is in XCom all the same. (A later try then finds ``creating`` and refuses:
   rule 3.)
5. **Resume.** A try that finds ``created`` with the same input reads that prediction: still running, it waits
   for it; succeeded, it returns it at once; cancelled, gone, or failed with a retryable code, it creates a new
   one. Failed for any other reason (the input or the content), or cancelled after the task's ``timeout``, it
   fails again as that ending did, without creating: such an ending fails the task without retries, so this try
   is one Airflow started anyway (the try that met the ending was lost before it could report it, e.g. its
   worker died). Only a user's clear makes a new prediction then, and a clear is told from a retry by
   ``max_tries``, which each clear raises and a retry leaves as it is: the record keeps the ``max_tries`` of the
   try that created.
6. **Input changed between tries** (a prompt templated with the try's start time, a re-encoded image): the
   earlier prediction, if still running, is cancelled (best effort, logged) before the new one is created; an
   earlier succeeded one is left as it is (its id is logged) and not returned for the new input.
7. **A returned video is recorded as such.** Once a try has returned its prediction the record says
   ``returned``: a retry Airflow starts after that (the try was lost before it could report its success) returns
   the same prediction again, and a user's clear (``max_tries`` raised) makes a new video instead of returning the
   old one. Until a try has returned it (a crash while resuming), even a clear resumes it: a paid video is never
   dropped. A try that resumes a running prediction records its own ``max_tries``, so that the rules above follow
   the latest clear.

Without a ``task_state_store`` (Airflow 3.2) there is no record: rule 2 still holds, and each new try creates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from airflow_runway.exceptions import (
    EachlabsCreateUncertainError,
    EachlabsError,
    EachlabsNotFoundError,
    EachlabsPredictionRejectedError,
    EachlabsPredictionTimeoutError,
)
from airflow_runway.hooks.eachlabs import EachlabsHook
from airflow_runway.hooks.retry import is_retryable
from airflow_runway.models import Prediction, PredictionStatus, is_retryable_failure

#: The ``task_state_store`` key of a generation task's record.
PREDICTION_STATE_KEY = "eachlabs_prediction"
CREATING = "creating"
CREATED = "created"
RETURNED = "returned"

_MAY_EXIST = (
    "A prediction may exist and be billed. Check the Eachlabs console (https://console.eachlabs.ai) before "
    "running again; the task was failed without retries so that it does not pay twice. Clear the task to create "
    "a new prediction."
)

_RETRIED_ANYWAY = (
    "Airflow retried the task although this ending allows no retries: the try that met it was probably lost "
    "before it could report it"
)


class TaskStateStore(Protocol):
    """What the ledger uses of Airflow's ``TaskStateStoreAccessor`` (``context["task_state_store"]``)."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...


def input_fingerprint(model: str, version: str, payload: Mapping[str, Any]) -> str:
    """The identity of a request's input: equal fingerprints mean the same video was asked for."""
    return hashlib.sha256(json.dumps([model, version, payload], sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Decision:
    """What a try waits for: the prediction's id, when it was created (Unix seconds; for a prediction of an
    earlier try recorded before that was kept, the time of this decision), and the prediction itself when it has
    already succeeded."""

    prediction_id: str
    created_at: float
    succeeded: Prediction | None = None
    created: bool = False


class PredictionLedger:
    """The task's record of the prediction it paid for, and the rules above.

    :param store: ``context.get("task_state_store")``; ``None`` before Airflow 3.3.
    :param log: the task's logger.
    :param max_tries: the try's ``ti.max_tries`` (rule 5); ``None`` when unknown.
    :param timeout: the operator's ``timeout`` in seconds (rule 5).
    """

    def __init__(
        self,
        store: TaskStateStore | None,
        log: logging.Logger | Any,
        max_tries: int | None = None,
        timeout: float = float("inf"),
    ) -> None:
        self.store = store
        self.log = log
        self.max_tries = max_tries
        self.timeout = timeout

    @classmethod
    def for_try(cls, context: Mapping[str, Any], log: logging.Logger | Any, timeout: float) -> PredictionLedger:
        """The ledger of the task instance whose try ``context`` is, for an operator with this ``timeout``."""
        max_tries = getattr(context.get("ti"), "max_tries", None)
        return cls(context.get("task_state_store"), log, max_tries if isinstance(max_tries, int) else None, timeout)

    def resume_or_create(self, hook: EachlabsHook, fingerprint: str, create: Callable[[], str]) -> Decision:
        """Apply the rules: return the earlier try's prediction to resume, or call ``create`` once.

        :param hook: reads (and, when the input changed, cancels) an earlier try's prediction.
        :param fingerprint: :func:`input_fingerprint` of this try's input.
        :param create: sends the create request and returns the new prediction's id.
        :raises EachlabsCreateUncertainError: when a prediction may exist that this try cannot know the id of.
        """
        record = self._record()
        if record is not None:
            resumed = self._resume(hook, record, fingerprint)
            if resumed is not None:
                return resumed
        self._write({"state": CREATING, "fingerprint": fingerprint, "max_tries": self.max_tries})  # raises: no request
        try:
            prediction_id = create()
        except EachlabsError as error:
            self._forget()
            if error.transient and not is_retryable(error, create=True):
                raise EachlabsCreateUncertainError(
                    f"The create request's outcome is unknown ({error}). {_MAY_EXIST}"
                ) from error
            raise  # provably nothing was created, or the API refused: the error says which
        # Any other exception (the task killed or timed out mid-request) leaves "creating": rule 3.
        created_at = time.time()
        try:
            self._write(
                {
                    "state": CREATED,
                    "fingerprint": fingerprint,
                    "prediction_id": prediction_id,
                    "created_at": created_at,
                    "max_tries": self.max_tries,
                }
            )
        except Exception:
            self.log.exception(
                "Could not record prediction %s in task_state_store; waiting for it in this try all the same "
                "(a later try of this task will refuse to create another)",
                prediction_id,
            )
        return Decision(prediction_id, created_at, created=True)

    def succeeded(self) -> None:
        """Record that this try returned its prediction (rule 7): a retry returns it again, a clear creates anew.

        Not knowing ``max_tries``, it removes the record instead, so that a clear creates anew. A failure is
        logged, not raised: the result stands, and the record left as it was at worst makes a later try resume or
        refuse, never pay twice.
        """
        try:
            record = self._record()
            if record is None:
                return
            if self.max_tries is None:
                self._delete()
            else:
                self._write({**record, "state": RETURNED, "max_tries": self.max_tries})
        except Exception:
            self.log.exception("Could not record in task_state_store that the prediction was returned")

    # ---- the rules --------------------------------------------------------------------------------------------

    def _resume(self, hook: EachlabsHook, record: Mapping[str, Any], fingerprint: str) -> Decision | None:
        prediction_id = record.get("prediction_id")
        if record.get("state") == CREATING or not prediction_id:
            self._forget()
            raise EachlabsCreateUncertainError(
                f"An earlier try of this task sent a create request and stopped before it recorded the "
                f"prediction's id. {_MAY_EXIST}"
            )
        if record.get("state") == RETURNED and not self._is_retry(record):
            self.log.info("The task was cleared after it returned prediction %s: creating a new one", prediction_id)
            return None
        earlier = self._read(hook, str(prediction_id))
        if earlier is None:
            return None
        same_input = record.get("fingerprint") == fingerprint
        created_at = record.get("created_at")
        created_at = float(created_at) if isinstance(created_at, (int, float)) else time.time()
        if same_input and earlier.status is PredictionStatus.PENDING:
            self.log.info("Resuming prediction %s of an earlier try (%s)", earlier.id, earlier.raw_status)
            if not self._is_retry(record):
                self._adopt(record)
            return Decision(earlier.id, created_at)
        if same_input and earlier.status is PredictionStatus.SUCCEEDED:
            self.log.info("Prediction %s of an earlier try has succeeded: returning it", earlier.id)
            return Decision(earlier.id, created_at, succeeded=earlier)
        final = self._final_ending(record, earlier, created_at) if same_input else None
        if final is not None:
            raise final
        if same_input:
            self.log.info(
                "Prediction %s of an earlier try ended %s: creating a new one", earlier.id, earlier.raw_status
            )
        elif earlier.status is PredictionStatus.PENDING:
            self.log.warning(
                "The input changed since the earlier try: cancelling its prediction %s before creating a new one",
                earlier.id,
            )
            self._cancel(hook, earlier.id)
        else:
            self.log.info(
                "The input changed since the earlier try, whose prediction %s ended %s: creating a new one",
                earlier.id,
                earlier.raw_status,
            )
        return None

    def _final_ending(
        self, record: Mapping[str, Any], earlier: Prediction, created_at: float
    ) -> EachlabsPredictionRejectedError | EachlabsPredictionTimeoutError | None:
        """The error with which ``earlier``'s ending failed the task without retries, when this try is a retry
        that Airflow started anyway (not a user's clear); ``None`` when a new prediction may be created."""
        if not self._is_retry(record):
            return None
        if earlier.status is PredictionStatus.FAILED and not is_retryable_failure(earlier.error_code):
            return EachlabsPredictionRejectedError(
                f"Prediction {earlier.id} of an earlier try of this task failed"
                f"{f' ({earlier.error_code})' if earlier.error_code else ''}: "
                f"{earlier.error_message or earlier.raw_status}. A new prediction of the same input would fail the "
                f"same way, so none is created ({_RETRIED_ANYWAY}). Change the input, or clear the task to pay for "
                "a new prediction anyway.",
                error_code=earlier.error_code,
                prediction_id=earlier.id,
            )
        # Cancelled once the task's timeout had passed: the timeout's cancel (a cancel before it, e.g. on_kill in
        # a worker that is shutting down, leaves the retry its new prediction).
        if earlier.status is PredictionStatus.CANCELLED and time.time() - created_at >= self.timeout:
            return EachlabsPredictionTimeoutError(
                f"Prediction {earlier.id} of an earlier try of this task was cancelled when the task's timeout "
                f"({self.timeout:.0f} s) passed, so none is created ({_RETRIED_ANYWAY}). Raise `timeout`, or clear "
                "the task to pay for a new prediction."
            )
        return None

    def _is_retry(self, record: Mapping[str, Any]) -> bool:
        """Whether this try is a retry of the try that last wrote ``record`` rather than a user's clear.

        A record without ``max_tries`` (written before it was kept) cannot tell: it counts as a clear, which
        creates as before.
        """
        recorded = record.get("max_tries")
        return isinstance(recorded, int) and recorded == self.max_tries

    def _adopt(self, record: Mapping[str, Any]) -> None:
        """Record this try's ``max_tries`` on the prediction it resumes after a clear (best effort: rule 4)."""
        if self.max_tries is None:
            return
        try:
            self._write({**record, "max_tries": self.max_tries})
        except Exception:
            self.log.exception("Could not record in task_state_store that this try resumed the prediction")

    def _read(self, hook: EachlabsHook, prediction_id: str) -> Prediction | None:
        """The earlier prediction, or ``None`` when it no longer exists. Other errors propagate: not knowing
        whether it still runs, this try must not create."""
        try:
            return hook.get_prediction_state(prediction_id)
        except EachlabsNotFoundError:
            self.log.info("The earlier try's prediction %s no longer exists", prediction_id)
            return None

    def _cancel(self, hook: EachlabsHook, prediction_id: str) -> None:
        try:
            hook.cancel_prediction(prediction_id, once=True)
        except EachlabsError as error:
            self.log.warning("Could not cancel prediction %s (best effort): %s", prediction_id, error)
        else:
            self.log.info("Cancelled prediction %s", prediction_id)

    # ---- the record -------------------------------------------------------------------------------------------

    def _record(self) -> Mapping[str, Any] | None:
        if self.store is None:
            return None
        record = self.store.get(PREDICTION_STATE_KEY)
        return record if isinstance(record, Mapping) else None

    def _write(self, record: dict[str, Any]) -> None:
        if self.store is not None:
            self.store.set(PREDICTION_STATE_KEY, record)

    def _delete(self) -> None:
        if self.store is not None:
            self.store.delete(PREDICTION_STATE_KEY)

    def _forget(self) -> None:
        """Remove the record. A failure is logged, not raised: a record left behind at worst makes a later try
        resume or refuse, never pay twice."""
        try:
            self._delete()
        except Exception:
            self.log.exception("Could not remove the prediction record from task_state_store")
