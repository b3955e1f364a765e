"""A human review of a generated video (Airflow's human-in-the-loop operators), and publishing it once approved.

:class:`VideoReviewOperator` is a :class:`~airflow.providers.standard.operators.hitl.HITLBranchOperator` with
two options, *Approve* and *Reject*, and one form field, ``revised_prompt``. Its body shows the prompt, the
render time and cost, and links to the video in Airflow's UI (the provider's "Runway video" task view and the
"Runway videos" page). After the response it branches:

* *Approve* -> ``approve_task_id`` (e.g. the publish task);
* *Reject* with a revised prompt, while regenerations are left -> ``regenerate_task_id`` (the next round's
  generation task, whose prompt is ``{{ ti.xcom_pull(task_ids=<this task>, key="review")["revised_prompt"] }}``);
* otherwise -> nothing: every downstream task is skipped and the run ends.

The decision is pushed to XCom under the key ``review``: ``{"decision", "revised_prompt", "round"}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from airflow.providers.standard.operators.hitl import HITLBranchOperator, HITLOperator
from airflow.sdk import ObjectStoragePath, Param

if TYPE_CHECKING:
    from airflow.sdk import Context

#: XCom key of the reviewer's decision.
REVIEW_XCOM_KEY = "review"
#: The form field a reviewer fills in to ask for another video.
REVISED_PROMPT = "revised_prompt"


def _money(value: Any) -> str:
    try:
        return f"${float(value):.2f}"
    except (TypeError, ValueError):
        return "unknown"


def _seconds(value: Any) -> str:
    try:
        return f"{float(value):.0f} s"
    except (TypeError, ValueError):
        return "unknown"


class VideoReviewOperator(HITLBranchOperator):
    """Ask a person to approve a generated video, or to reject it with a revised prompt.

    :param prompt: the prompt the video was generated from (shown in the body; templated).
    :param generation_task_id: the generation task (its result gives the prediction id, render time and cost).
    :param stored_task_id: the transfer task that stored the video (its task view plays the stored copy).
    :param approve_task_id: the task to run on approval.
    :param regenerate_task_id: the task to run on a rejection with a revised prompt; ``None`` in the last round.
    :param round_index: this review's round, 0 for the first video.
    :param max_regenerations: how many regenerations a run allows (templated, e.g. ``{{ params.max_regenerations }}``).
    """

    APPROVE = "Approve"
    REJECT = "Reject"
    template_fields = (*HITLBranchOperator.template_fields, "prompt", "max_regenerations")

    def __init__(
        self,
        *,
        prompt: str,
        generation_task_id: str,
        stored_task_id: str,
        approve_task_id: str,
        regenerate_task_id: str | None = None,
        round_index: int = 0,
        max_regenerations: int | str = 0,
        **kwargs: Any,
    ) -> None:
        params = kwargs.pop("params", None) or {}
        if regenerate_task_id is not None:
            params = {
                **params,
                REVISED_PROMPT: Param(
                    None,
                    type=["null", "string"],
                    maxLength=1000,
                    title="Revised prompt",
                    description="On Reject: the prompt of a new video. Leave empty to stop without a new video.",
                ),
            }
        kwargs.setdefault("subject", f"Review the Runway video (round {round_index + 1})")
        super().__init__(options=[self.APPROVE, self.REJECT], params=params, **kwargs)
        self.prompt = prompt
        self.generation_task_id = generation_task_id
        self.stored_task_id = stored_task_id
        self.approve_task_id = approve_task_id
        self.regenerate_task_id = regenerate_task_id
        self.round_index = round_index
        self.max_regenerations = max_regenerations

    @property
    def serialized_params(self) -> dict[str, dict[str, Any]]:
        # At run time Airflow merges the DAG's params into the task's: the reviewer's form must only show and
        # accept this operator's own field(s), not the whole DAG's params.
        return {key: value for key, value in super().serialized_params.items() if key in self._form_fields}

    @property
    def _form_fields(self) -> set[str]:
        return {REVISED_PROMPT} if self.regenerate_task_id is not None else set()

    def validate_params_input(self, params_input: Mapping) -> None:
        if unknown := set(params_input) - self._form_fields:
            raise ValueError(f"Unknown review fields {sorted(unknown)}; the form has {sorted(self._form_fields)}")
        for key, value in params_input.items():
            self.params[key] = value  # validated against the field's schema

    def _regenerations_left(self) -> int:
        if self.regenerate_task_id is None:
            return 0
        return max(int(self.max_regenerations) - self.round_index, 0)

    def review_body(self, context: Context) -> str:
        """The Markdown the reviewer reads: prompt, cost, render time and links to the video in Airflow."""
        from airflow.configuration import conf

        ti = context["ti"]
        video = ti.xcom_pull(task_ids=self.generation_task_id) or {}
        stored = ti.xcom_pull(task_ids=self.stored_task_id) or {}
        metrics = video.get("metrics") or {}
        base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
        run = f"{base}/dags/{quote(ti.dag_id, safe='')}/runs/{quote(ti.run_id, safe='')}"
        task_view = f"{run}/tasks/{quote(self.stored_task_id, safe='')}/plugin/runway-video"
        page = f"{base}/runway/videos?{urlencode({'dag_id': ti.dag_id, 'run_id': ti.run_id})}"
        left = self._regenerations_left()
        reject = (
            f"**Reject** with a *revised prompt* to generate a new video ({left} regeneration"
            f"{'' if left == 1 else 's'} left), or with an empty one to stop."
            if left
            else "**Reject** stops: no regeneration is left in this run."
        )
        return "\n".join(
            [
                f"**Prompt:** {self.prompt}",
                "",
                f"**Cost:** {_money(metrics.get('cost'))} · **render time:** {_seconds(metrics.get('predict_time'))}"
                f" · **prediction:** `{video.get('prediction_id', 'unknown')}`",
                "",
                f"**Staged copy:** `{stored.get('uri', 'not stored')}`",
                "",
                f"[▶ Watch the video]({task_view}) · [All videos of this run]({page})",
                "",
                f"**Approve** publishes it. {reject}",
            ]
        )

    def execute(self, context: Context) -> Any:
        self.body = self.review_body(context)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        ret = HITLOperator.execute_complete(self, context=context, event=event)
        chosen = ret["chosen_options"][0]
        revised = str((ret["params_input"] or {}).get(REVISED_PROMPT) or "").strip()
        branch: list[str] | None
        if chosen == self.APPROVE:
            decision, branch = "approved", [self.approve_task_id]
        elif revised and self.regenerate_task_id is not None and self._regenerations_left() > 0:
            decision, branch = "regenerate", [self.regenerate_task_id]
        else:
            decision, branch = "rejected", None
        self.log.info("Review of round %d: %s", self.round_index + 1, decision)
        context["ti"].xcom_push(
            key=REVIEW_XCOM_KEY,
            value={"decision": decision, REVISED_PROMPT: revised or None, "round": self.round_index},
        )
        self.hitl_summary_extra["branches_to_execute"] = branch
        return self.do_branch(context=context, branches_to_execute=branch)


def publish_video(staged: Mapping[str, Any], destination: str, conn_id: str | None = None) -> dict[str, Any]:
    """Copy a stored video (a transfer's result) into the ``destination`` folder; return what was published.

    The copy is checked against the staged copy's size. The staged copy is kept (it is cheap to delete with
    a lifecycle rule; a finished video is never thrown away by this provider).
    """
    source = ObjectStoragePath(staged["uri"], conn_id=staged.get("dest_conn_id") or conn_id or None)
    folder = ObjectStoragePath(destination, conn_id=conn_id or None)
    target = folder / source.name
    if target.protocol in ("file", "local"):  # object stores have no folders to create
        folder.mkdir(parents=True, exist_ok=True)
    source.copy(target)
    size = target.stat()["size"]
    if staged.get("size") is not None and size != staged["size"]:
        raise ValueError(f"Published copy {target} has {size} bytes, the staged one {staged['size']}")
    return {
        "uri": str(target),
        "staged_uri": staged["uri"],
        "sha256": staged.get("sha256"),
        "size": size,
        "prediction_id": staged.get("prediction_id"),
        "dest_conn_id": conn_id or None,
    }
