"""``stopped_by_user``: what a trigger's on_kill reads to tell a user's stop from a trigger moved to another
triggerer. The triggerer's supervisor channel is Airflow's (``task_runner.SUPERVISOR_COMMS``); here it is a stand-in
that answers ``GetTaskStates`` the way the execution API does. The real channel is exercised by ``make e2e``
(a frozen triggerer whose trigger moved, and a user marking the deferred task failed)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.execution_time import task_runner
from airflow.sdk.execution_time.comms import GetTaskStates, TaskStatesResult

from airflow_runway.triggers._ownership import stopped_by_user


class Channel:
    """Answers GetTaskStates from ``states`` ({run_id: {key: state}}) and records the requests."""

    def __init__(self, states: dict[str, dict[str, Any]] | None = None, error: BaseException | None = None) -> None:
        self.states = states or {}
        self.error = error
        self.requests: list[GetTaskStates] = []

    async def asend(self, msg: GetTaskStates) -> TaskStatesResult:
        self.requests.append(msg)
        if self.error is not None:
            raise self.error
        return TaskStatesResult(task_states=self.states)


def trigger(map_index: int = -1) -> Any:
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="generate", map_index=map_index)
    return SimpleNamespace(task_instance=ti)


@pytest.fixture
def channel(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(**kwargs: Any) -> Channel:
        comms = Channel(**kwargs)
        monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", comms, raising=False)
        return comms

    return install


async def test_a_task_still_deferred_means_the_trigger_moved(channel: Any) -> None:
    comms = channel(states={"r": {"generate": "deferred"}})
    assert await stopped_by_user(trigger()) is False
    (request,) = comms.requests
    assert (request.dag_id, request.task_ids, request.run_ids, request.map_index) == ("d", ["generate"], ["r"], -1)


@pytest.mark.parametrize("state", ["failed", "success", "skipped", None, "scheduled", "queued", "restarting"])
async def test_any_other_state_is_a_users_stop(channel: Any, state: str | None) -> None:
    channel(states={"r": {"generate": state}})
    assert await stopped_by_user(trigger()) is True


async def test_a_mapped_task_instance_is_read_by_its_map_index(channel: Any) -> None:
    comms = channel(states={"r": {"generate_3": "deferred"}})
    assert await stopped_by_user(trigger(map_index=3)) is False
    assert comms.requests[0].map_index == 3


@pytest.mark.parametrize(
    "kwargs",
    [{"states": {}}, {"error": RuntimeError("supervisor gone")}, {"error": asyncio.TimeoutError()}],
    ids=["no-state", "comms-error", "timeout"],
)
async def test_an_unknown_state_counts_as_a_users_stop(channel: Any, kwargs: dict[str, Any]) -> None:
    channel(**kwargs)
    assert await stopped_by_user(trigger()) is True


async def test_no_answer_within_the_timeout_counts_as_a_users_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    class Silent:
        async def asend(self, msg: Any) -> Any:
            await asyncio.sleep(60)

    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", Silent(), raising=False)
    assert await stopped_by_user(trigger(), timeout=0.1) is True


async def test_outside_a_triggerer_it_counts_as_a_users_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(task_runner, "SUPERVISOR_COMMS", raising=False)
    assert await stopped_by_user(trigger()) is True
    assert await stopped_by_user(SimpleNamespace(task_instance=None)) is True


async def test_shielded_work_survives_repeated_cancellation_of_its_caller() -> None:
    """The triggerer cancels a trigger's task again on every loop while its on_kill runs (Airflow 3.3)."""
    from airflow_runway.triggers._ownership import shielded

    done = asyncio.Event()

    async def cancel_remote_job() -> str:
        await asyncio.sleep(0.3)
        done.set()
        return "cancelled"

    caller = asyncio.ensure_future(shielded(cancel_remote_job(), timeout=5))
    await asyncio.sleep(0.05)
    caller.cancel("__airflow_user_action__")
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.wait_for(done.wait(), 2)  # the work went on without its caller


async def test_shielded_work_is_bounded_by_its_timeout() -> None:
    from airflow_runway.triggers._ownership import shielded

    with pytest.raises(asyncio.TimeoutError):
        await shielded(asyncio.sleep(10), timeout=0.1)
    assert await shielded(asyncio.sleep(0, result=7), timeout=1) == 7
