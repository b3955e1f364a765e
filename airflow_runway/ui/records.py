"""The videos the page shows, read from Airflow's metadata database (never from the paid API).

Where each fact comes from:

* the generation task's XCom ``return_value`` (``prediction_id``, ``status``, ``video_url``, ``metrics`` with
  ``predict_time`` and ``cost``): written by the operator when it finishes;
* the generation task's rendered template fields (prompt, Runway model, ratio, duration, seed): what Airflow
  already stores for the "Rendered Templates" view. They are kept for the last
  ``[core] max_num_rendered_ti_fields_per_task`` runs of a task (30 by default); older cards show "-";
* the stored copies: the transfer task's XCom ``return_value`` (``uri``, ``sha256``, ``size``,
  ``prediction_id``) with its rendered ``dest_conn_id``, and the asset events whose ``extra`` the transfer
  filled (``uri``, ``prediction_id``, ``dest_conn_id``).

The output URL is kept on the record for the media endpoint only: it never reaches a page.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

#: ``TaskInstance.operator`` of the tasks whose result is a prediction.
GENERATION_OPERATORS = ("RunwayGenerateVideoOperator", "EachlabsPredictionOperator")
#: ``TaskInstance.operator`` of the tasks whose result is a stored copy.
TRANSFER_OPERATORS = ("EachlabsToObjectStorageOperator",)
#: The most cards one page lists.
PAGE_LIMIT = 200


@dataclass(frozen=True)
class TaskRef:
    """One task instance."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1


@dataclass(frozen=True)
class StoredCopy:
    """A copy of a video in object storage, readable with ``conn_id``."""

    uri: str
    conn_id: str | None
    prediction_id: str | None
    size: int | None
    sha256: str | None
    task: TaskRef | None


@dataclass
class Video:
    """One generated (or stored) video with what the page shows about it."""

    task: TaskRef
    prediction_id: str | None
    status: str | None
    finished_at: datetime | None
    output_url: str | None = None
    prompt: str | None = None
    model: str | None = None
    ratio: str | None = None
    duration: Any = None
    seed: Any = None
    predict_time: float | None = None
    cost: float | None = None
    stored: list[StoredCopy] = field(default_factory=list)

    @property
    def playable(self) -> bool:
        return bool(self.stored or self.output_url)


def _first(*values: Any) -> Any:
    return next((value for value in values if value not in (None, "", "None")), None)


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def describe_input(rendered: Mapping[str, Any]) -> dict[str, Any]:
    """Prompt, model, ratio, duration and seed from a generation task's rendered template fields.

    Reads both the typed operator's fields (``prompt_text``, ``runway_model`` or ``model``, ...) and a generic
    ``input`` dict in the API's wire form (``promptText``, ``model``, ...).
    """
    raw_input = rendered.get("input")
    wire: Mapping[str, Any] = raw_input if isinstance(raw_input, Mapping) else {}
    model = rendered.get("runway_model")
    if model is None and rendered.get("model") not in (None, "runway"):
        model = rendered.get("model")
    return {
        "prompt": _first(rendered.get("prompt_text"), wire.get("promptText"), wire.get("prompt")),
        "model": _first(model, wire.get("model"), rendered.get("model")),
        "ratio": _first(rendered.get("ratio"), wire.get("ratio")),
        "duration": _first(rendered.get("duration"), wire.get("duration")),
        "seed": _first(rendered.get("seed"), wire.get("seed")),
    }


def _xcom_rows(
    session: Session, operators: Collection[str], dag_ids: Collection[str], where: Iterable[Any] = ()
) -> list[Any]:
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.models.xcom import XComModel

    ti_join = and_(
        TI.dag_id == XComModel.dag_id,
        TI.run_id == XComModel.run_id,
        TI.task_id == XComModel.task_id,
        TI.map_index == XComModel.map_index,
    )
    rtif_join = and_(
        RTIF.dag_id == XComModel.dag_id,
        RTIF.run_id == XComModel.run_id,
        RTIF.task_id == XComModel.task_id,
        RTIF.map_index == XComModel.map_index,
    )
    query = (
        select(XComModel, TI.end_date, RTIF.rendered_fields)
        .join(TI, ti_join)
        .outerjoin(RTIF, rtif_join)
        .where(XComModel.key == "return_value", TI.operator.in_(operators), XComModel.dag_id.in_(dag_ids))
        .where(*where)
        .order_by(XComModel.timestamp.desc())
        .limit(PAGE_LIMIT)
    )
    return list(session.execute(query).all())


def _value(xcom: Any) -> Mapping[str, Any]:
    from airflow.models.xcom import XComModel

    value = XComModel.deserialize_value(xcom)
    return value if isinstance(value, Mapping) else {}


def _ref(xcom: Any) -> TaskRef:
    return TaskRef(xcom.dag_id, xcom.run_id, xcom.task_id, xcom.map_index)


def _stored_copies(session: Session, dag_ids: Collection[str], where: Iterable[Any]) -> list[StoredCopy]:
    """Copies from transfer results, then from asset events (which may name a copy no XCom shows)."""
    from airflow.models.asset import AssetEvent

    copies: dict[str, StoredCopy] = {}
    for xcom, _end, rendered in _xcom_rows(session, TRANSFER_OPERATORS, dag_ids, where):
        value = _value(xcom)
        uri = value.get("uri")
        if not isinstance(uri, str) or uri in copies:
            continue
        conn_id = (rendered or {}).get("dest_conn_id") or None
        prediction_id = value.get("prediction_id") or None
        copies[uri] = StoredCopy(uri, conn_id, prediction_id, value.get("size"), value.get("sha256"), _ref(xcom))
    events = session.execute(
        select(AssetEvent)
        .where(AssetEvent.source_dag_id.in_(dag_ids))
        .order_by(AssetEvent.timestamp.desc())
        .limit(PAGE_LIMIT)
    ).scalars()
    for event in events:
        extra = event.extra or {}
        uri = extra.get("uri")
        if not isinstance(uri, str) or not extra.get("prediction_id") or uri in copies:
            continue
        ref = TaskRef(event.source_dag_id or "", event.source_run_id or "", event.source_task_id or "")
        copies[uri] = StoredCopy(
            uri, extra.get("dest_conn_id"), extra["prediction_id"], extra.get("size"), extra.get("sha256"), ref
        )
    return list(copies.values())


def _attach(videos: list[Video], copies: list[StoredCopy]) -> list[Video]:
    """Give each video its stored copies (by prediction id); a copy no generation result names gets a card."""
    by_prediction = {video.prediction_id: video for video in videos if video.prediction_id}
    orphans: list[Video] = []
    for copy in copies:
        prediction_id = copy.prediction_id
        video = by_prediction.get(prediction_id) if prediction_id else None
        if video is not None:
            video.stored.append(copy)
        elif copy.task is not None:
            orphan = Video(task=copy.task, prediction_id=prediction_id, status=None, finished_at=None)
            orphan.stored.append(copy)
            orphans.append(orphan)
            if prediction_id:
                by_prediction[prediction_id] = orphan
    return videos + orphans


def find_videos(
    session: Session,
    dag_ids: Collection[str],
    *,
    run_id: str | None = None,
    task: TaskRef | None = None,
) -> list[Video]:
    """The videos of ``dag_ids`` (optionally of one run, or of one task instance), newest first."""
    from airflow.models.xcom import XComModel

    if not dag_ids:
        return []
    where: list[Any] = []
    if run_id is not None:
        where.append(XComModel.run_id == run_id)
    videos: list[Video] = []
    for xcom, end_date, rendered in _xcom_rows(session, GENERATION_OPERATORS, dag_ids, where):
        value = _value(xcom)
        raw_metrics = value.get("metrics")
        metrics: Mapping[str, Any] = raw_metrics if isinstance(raw_metrics, Mapping) else {}
        video_url = value.get("video_url")
        videos.append(
            Video(
                task=_ref(xcom),
                prediction_id=value.get("prediction_id"),
                status=value.get("status"),
                finished_at=end_date or xcom.timestamp,
                output_url=video_url if isinstance(video_url, str) else None,
                predict_time=_number(metrics.get("predict_time")),
                cost=_number(metrics.get("cost")),
                **describe_input(rendered or {}),
            )
        )
    videos = _attach(videos, _stored_copies(session, dag_ids, where))
    if run_id is not None:
        videos = [video for video in videos if video.task.run_id == run_id]
    if task is not None:
        videos = [video for video in videos if _belongs_to(video, task)]
    return videos


def _belongs_to(video: Video, task: TaskRef) -> bool:
    return video.task == task or any(copy.task == task for copy in video.stored)
