"""Tell, from inside a trigger's ``on_kill``, a user's stop from a trigger merely moving to another triggerer.

Airflow 3.3 calls ``BaseTrigger.on_kill()`` when the triggerer cancels a trigger "by user action" (a user marked
the deferred task failed or succeeded, or cleared it). It also does so, wrongly, when the trigger was only
*reassigned*: a triggerer whose heartbeat lapsed (frozen, paused, overloaded, partitioned) for longer than
``[triggerer] triggerer_health_check_threshold`` loses its triggers to another triggerer, and when it recovers,
``TriggerRunnerSupervisor.update_triggers`` sees them missing from its assignment list and cancels them with the
user-action message, so ``run_trigger`` calls ``on_kill()`` on every one (``airflow/jobs/triggerer_job_runner.py``:
``update_triggers`` -> ``cancelling_triggers`` -> ``TriggerRunner.cancel_triggers`` -> ``_USER_ACTION_CANCEL_MSG``).
A trigger that cancels remote work in ``on_kill`` then cancels the job its new owner has just started polling.
Reported upstream and fixed by apache/airflow#73454 ("Skip ``on_kill()`` for triggers reassigned to another
triggerer", open at the time of writing); the bug is present since ``on_kill()`` shipped in 3.3.0
(apache/airflow#65590); the older report of the same effect is apache/airflow#41231.

:func:`stopped_by_user` asks Airflow, through the triggerer's own supervisor channel (the Task SDK's
``GetTaskStates`` message, which the triggerer serves from the execution API), what state the trigger's task
instance is in *now*:

- still ``deferred``: the task is still waiting on this trigger (it was moved, and its new owner is polling):
  **not** a user's stop; do not cancel.
- anything else (``failed``, ``success``, ``skipped`` after a user's mark; ``None``, ``scheduled``, ``queued``,
  ``restarting``, ``running`` after a clear): a stop; cancel.

What this cannot guard (the state is read when ``on_kill`` runs, not when the trigger was removed):

1. A task a user cleared that has already been scheduled, run and deferred again by the time ``on_kill`` runs
   reads ``deferred`` and counts as moved: nothing is cancelled. Spending is unaffected: the new try resumes the
   same prediction from ``task_state_store``.
2. A moved trigger whose new owner has already fired (the prediction finished, the task resumed: ``scheduled``
   ... ``success``) counts as stopped: ``on_kill`` sends a cancel for a prediction that has already finished,
   which the API ignores (one extra request, no money).
3. When the state cannot be read -- no task instance on the trigger, no supervisor channel (the trigger runs
   outside a triggerer, e.g. in a unit test), a comms error, or no answer within ``timeout`` (the API server is
   down) -- it returns ``True``: Airflow's documented meaning of ``on_kill`` is a user's stop, and a cancel that
   should not have happened loses one paid video, while a cancel that did not happen keeps paying for one the
   user stopped. The reason is logged.
4. A task instance that a user marked ``deferred`` again by hand (the REST API allows any state) is
   indistinguishable from a moved trigger.
5. A user's stop while the trigger's triggerer is dead (SIGKILLed, before another took the trigger over)
   reaches no ``on_kill`` at all: the trigger row is gone before any triggerer runs it again.

A second Airflow 3.3 defect shortens ``on_kill`` to about one second: until the runner reports the trigger
finished, the supervisor repeats the trigger id in every ``TriggerStateSync.to_cancel``, so
``TriggerRunner.cancel_triggers`` cancels the trigger's task again on each loop (about every second), and the
second ``CancelledError`` lands inside ``asyncio.wait_for(trigger.on_kill(), ...)``, which ``run_trigger``
swallows: ``on_kill`` is abandoned mid-request, silently (seen under load: the user-action log line, then
nothing, no cancel sent). :func:`shielded` runs ``on_kill``'s work in a task of its own that those repeated
cancellations do not reach, bounded by its own timeout::

    async def on_kill(self) -> None:
        await shielded(self._stop_if_user_stopped(), timeout=25)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Work started by :func:`shielded` that outlived the ``on_kill`` awaiting it (kept referenced until it ends).
_BACKGROUND: set[asyncio.Task[Any]] = set()

#: The state of a task instance still waiting on its trigger.
DEFERRED = "deferred"


def _supervisor_comms() -> Any:
    """The triggerer runner's channel to its supervisor, or ``None`` outside a triggerer."""
    try:
        from airflow.sdk.execution_time import task_runner
    except ImportError:  # pragma: no cover - Airflow without the Task SDK
        return None
    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    return comms if hasattr(comms, "asend") else None


def _state_key(task_id: str, map_index: int | None) -> str:
    # The execution API's /task-instances/states keys a mapped task instance as "<task_id>_<map_index>".
    return task_id if map_index is None or map_index < 0 else f"{task_id}_{map_index}"


async def task_instance_state(trigger: Any, timeout: float = 10.0) -> tuple[bool, str | None]:
    """``(known, state)`` of the trigger's task instance as the metadata database records it now.

    ``known`` is ``False`` when the state could not be read (see the module docstring, point 3).
    """
    ti = getattr(trigger, "task_instance", None)
    if ti is None:
        log.warning("on_kill: the trigger has no task instance; cannot tell a user's stop from a moved trigger")
        return False, None
    comms = _supervisor_comms()
    if comms is None:
        log.warning("on_kill: no triggerer supervisor channel; cannot tell a user's stop from a moved trigger")
        return False, None
    from airflow.sdk.execution_time.comms import GetTaskStates

    map_index = getattr(ti, "map_index", -1)
    request = GetTaskStates(
        dag_id=ti.dag_id,
        task_ids=[ti.task_id],
        run_ids=[ti.run_id],
        map_index=map_index if map_index is not None and map_index >= 0 else -1,
    )
    try:
        response = await asyncio.wait_for(comms.asend(request), timeout=timeout)
    except Exception as error:  # TimeoutError, a comms or API error: the state is unknown
        log.warning("on_kill: could not read the state of %s (%s: %s)", ti.task_id, type(error).__name__, error)
        return False, None
    states = (getattr(response, "task_states", None) or {}).get(ti.run_id) or {}
    key = _state_key(ti.task_id, map_index)
    if key not in states:
        log.warning("on_kill: the execution API returned no state for %s in run %s", key, ti.run_id)
        return False, None
    state = states[key]
    return True, None if state is None else str(getattr(state, "value", state))


async def stopped_by_user(trigger: Any, timeout: float = 10.0) -> bool:
    """Whether ``on_kill`` was called because a user stopped the task, rather than because the trigger moved.

    Call it first thing in ``on_kill``; cancel remote work only when it returns ``True``::

        async def on_kill(self) -> None:
            if not await stopped_by_user(self):
                self.log.info("The trigger moved to another triggerer; leaving the prediction running")
                return
            ...  # cancel

    :param trigger: the trigger whose ``on_kill`` runs (its ``task_instance`` is set by the triggerer).
    :param timeout: seconds to wait for the answer (the triggerer gives ``on_kill`` 30 s in all).
    :return: ``False`` only when the task instance is still ``deferred`` (see the module docstring for what
        that cannot tell apart); ``True`` otherwise, including when the state cannot be read.
    """
    known, state = await task_instance_state(trigger, timeout)
    if not known:
        return True
    if state == DEFERRED:
        log.info("on_kill: the task instance is still deferred: the trigger moved to another triggerer")
        return False
    log.info("on_kill: the task instance is %s: stopped by a user", state)
    return True


async def shielded(work: Awaitable[T], timeout: float) -> T:
    """Await ``work`` in a task of its own, shielded from the triggerer's repeated cancellation of ``on_kill``.

    If the caller is cancelled, ``work`` goes on in the background until it finishes or ``timeout`` seconds
    pass (the triggerer keeps its event loop running; a shutdown ends it with the loop).

    :raises TimeoutError: when ``work`` takes longer than ``timeout``.
    """
    task: asyncio.Task[T] = asyncio.ensure_future(asyncio.wait_for(work, timeout))
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return await asyncio.shield(task)
