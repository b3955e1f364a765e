"""The ``runway_review_and_publish`` example DAG on the real stack, the reviewer answering through the REST API
(``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails``).

Counts the emulator's creates: one paid video per generation round, never more.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.fixtures.stack import AirflowStack, StackError
from tests.ui.conftest import REVIEW_DAG, trigger, wait_run, xcom

pytestmark = [pytest.mark.ui, pytest.mark.e2e]

REVIEW_TIMEOUT = 90.0


@pytest.fixture
def emulator(emulator_server: Any, emulator_config: Any) -> Any:
    """The emulator with no predictions and counters, rendering in 5 s (see test_videos_page.runs)."""
    emulator_server.reset()
    emulator_server.configure(**{**dataclasses.asdict(emulator_config), "duration": 5, "speed": 1})
    return emulator_server


def states(stack: AirflowStack, run_id: str) -> dict[str, str | None]:
    listing = stack.request("GET", f"/api/v2/dags/{REVIEW_DAG}/dagRuns/{quote(run_id, safe='')}/taskInstances")
    return {ti["task_id"]: ti["state"] for ti in listing["task_instances"]}


def hitl_path(run_id: str, task_id: str) -> str:
    return f"/api/v2/dags/{REVIEW_DAG}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/-1/hitlDetails"


def await_review(stack: AirflowStack, run_id: str, task_id: str) -> dict[str, Any]:
    """Wait until the review task waits for a person; return its human-in-the-loop detail."""

    def waiting() -> bool:
        state = states(stack, run_id).get(task_id)
        if state in ("failed", "upstream_failed", "skipped", "success"):
            raise StackError(f"{task_id} ended {state} before asking\n{stack.log_tails()}")
        return state == "awaiting_input"

    stack.wait_for(waiting, f"{task_id} to await input", REVIEW_TIMEOUT)
    # A person answers after seconds, a test at once: let the scheduler first process the executor's "success"
    # of the workload that parked the task. An answer before that resumes the task while that event is still
    # queued, which Airflow then reads as a state changed externally and fails the try (an Airflow race).
    parked = f"task_id={task_id}, run_id={run_id}, map_index=-1"
    stack.wait_for(
        lambda: any(
            parked in line and "state=awaiting_input" in line
            for line in stack.logs["scheduler"].read_text(errors="replace").splitlines()
            if line.startswith(("TaskInstance Finished", "20")) and "TaskInstance Finished" in line
        ),
        f"the scheduler to see {task_id}'s parking workload finish",
        REVIEW_TIMEOUT,
    )
    return dict(stack.request("GET", hitl_path(run_id, task_id)))


def respond(stack: AirflowStack, run_id: str, task_id: str, option: str, revised_prompt: str | None = None) -> None:
    params = {} if revised_prompt is None else {"revised_prompt": revised_prompt}
    answer = stack.request("PATCH", hitl_path(run_id, task_id), {"chosen_options": [option], "params_input": params})
    assert answer["chosen_options"] == [option]


def published_files(video_root: Path) -> list[Path]:
    return sorted((video_root / "published").glob("*.mp4"))


def test_approve_publishes_the_first_video(ui_stack: AirflowStack, emulator: Any, video_root: Path) -> None:
    run_id = trigger(ui_stack, REVIEW_DAG, {"prompt": "A fox in the snow", "duration": 5})
    detail = await_review(ui_stack, run_id, "review_1")
    generated = xcom(ui_stack, REVIEW_DAG, run_id, "generate_1")
    staged = xcom(ui_stack, REVIEW_DAG, run_id, "stage_1")
    # The reviewer sees the prompt, the cost and the render time, and links to the video inside Airflow.
    body = detail["body"]
    assert "**Prompt:** A fox in the snow" in body
    assert f"${generated['metrics']['cost']:.2f}" in body and generated["prediction_id"] in body
    assert f"/runs/{quote(run_id, safe='')}/tasks/stage_1/plugin/runway-video" in body
    assert "/runway/videos?dag_id=runway_review_and_publish" in body
    assert detail["options"] == ["Approve", "Reject"]
    assert list(detail["params"]) == ["revised_prompt"]  # the form: only the reviewer's field, no DAG params
    assert "/staging/" in staged["uri"]

    respond(ui_stack, run_id, "review_1", "Approve")
    wait_run(ui_stack, REVIEW_DAG, run_id, REVIEW_TIMEOUT)

    final = states(ui_stack, run_id)
    assert final["publish_1"] == "success"
    assert final["generate_2"] == "skipped" and final["publish_2"] == "skipped"
    published = xcom(ui_stack, REVIEW_DAG, run_id, "publish_1")
    (path,) = [p for p in published_files(video_root) if p.stem == generated["prediction_id"]]
    assert published["uri"] == path.as_uri() and "/published/" in published["uri"]
    assert path.read_bytes() == Path(staged["uri"].removeprefix("file://")).read_bytes()
    # The asset event downstream DAGs schedule on names the published copy.
    query = f"source_dag_id={REVIEW_DAG}&source_run_id={quote(run_id, safe='')}"
    (event,) = ui_stack.request("GET", f"/api/v2/assets/events?{query}")["asset_events"]
    assert event["name"] == "runway_published_video"
    assert event["extra"]["uri"] == published["uri"]
    assert event["extra"]["prediction_id"] == generated["prediction_id"]
    assert emulator.stats()["creates"] == 1


def test_reject_with_a_revised_prompt_regenerates_then_approve(
    ui_stack: AirflowStack, emulator: Any, video_root: Path
) -> None:
    run_id = trigger(ui_stack, REVIEW_DAG, {"prompt": "A whale at sea", "duration": 5, "max_regenerations": 1})
    first = await_review(ui_stack, run_id, "review_1")
    assert "1 regeneration left" in first["body"]
    respond(ui_stack, run_id, "review_1", "Reject", "A whale at sea, at sunrise")

    second = await_review(ui_stack, run_id, "review_2")
    assert "**Prompt:** A whale at sea, at sunrise" in second["body"]
    # max_regenerations=1 was used up: rejecting round 2 would stop, and the reviewer is told so.
    assert "no regeneration is left" in second["body"]
    assert states(ui_stack, run_id)["publish_1"] == "skipped"
    respond(ui_stack, run_id, "review_2", "Approve")
    wait_run(ui_stack, REVIEW_DAG, run_id, REVIEW_TIMEOUT)

    final = states(ui_stack, run_id)
    assert (final["publish_1"], final["publish_2"], final["generate_3"]) == ("skipped", "success", "skipped")
    prompts = [prediction["input"]["promptText"] for prediction in emulator.predictions()]
    assert sorted(prompts) == ["A whale at sea", "A whale at sea, at sunrise"]
    assert emulator.stats()["creates"] == 2
    second_video = xcom(ui_stack, REVIEW_DAG, run_id, "generate_2")["prediction_id"]
    assert xcom(ui_stack, REVIEW_DAG, run_id, "publish_2")["prediction_id"] == second_video


def test_reject_without_a_prompt_stops(ui_stack: AirflowStack, emulator: Any, video_root: Path) -> None:
    run_id = trigger(ui_stack, REVIEW_DAG, {"prompt": "A kettle on a stove", "duration": 5})
    await_review(ui_stack, run_id, "review_1")
    respond(ui_stack, run_id, "review_1", "Reject", "")
    wait_run(ui_stack, REVIEW_DAG, run_id, REVIEW_TIMEOUT)

    final = states(ui_stack, run_id)
    assert final["review_1"] == "success"
    assert all(final[task] == "skipped" for task in ("publish_1", "generate_2", "review_2", "publish_3"))
    assert xcom(ui_stack, REVIEW_DAG, run_id, "review_1", key="review")["decision"] == "rejected"
    assert emulator.stats()["creates"] == 1
