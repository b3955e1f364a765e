"""The plugin's FastAPI app, mounted by the api-server under :data:`URL_PREFIX` (imported by the api-server only,
on the first request: see :class:`airflow_runway.ui.plugin.LazyApp`).

Every route asks Airflow's auth manager, like the core API's own routes: the user comes from the same JWT
(``Authorization: Bearer`` or the UI's ``_token`` cookie) through ``GetUserDep``; a page lists only the DAGs
``get_authorized_dag_ids`` returns; a video's bytes need ``is_authorized_dag`` (GET) on its DAG.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from airflow_runway.ui import media
from airflow_runway.ui.plugin import URL_PREFIX, base_path
from airflow_runway.ui.records import TaskRef, Video, find_videos

_templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
# A page embedded in Airflow's UI must not be framed by anyone else, nor load anything but its own videos.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; media-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'self'; base-uri 'none'"
    ),
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


def _readable_dag_ids(user: Any) -> set[str]:
    from airflow.api_fastapi.app import get_auth_manager

    return set(get_auth_manager().get_authorized_dag_ids(user=user, method="GET"))


def _require_dag(user: Any, dag_id: str) -> None:
    """403 unless the user may read ``dag_id``: the same check as the core API's ``requires_access_dag``."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.models.dag import DagModel

    details = DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id))
    if not get_auth_manager().is_authorized_dag(
        method="GET", access_entity=DagAccessEntity.XCOM, details=details, user=user
    ):
        raise HTTPException(403, "Forbidden")


def _map_index(raw: str | None) -> int:
    # The UI substitutes {MAP_INDEX} only on mapped task instances: anything else is an unmapped task.
    try:
        return int(raw) if raw is not None else -1
    except ValueError:
        return -1


class Links:
    """URLs of the page: Airflow UI pages (opened in the top window) and this app's media endpoint."""

    def __init__(self) -> None:
        self.base = base_path()

    def run(self, ref: TaskRef) -> str:
        return f"{self.base}/dags/{quote(ref.dag_id, safe='')}/runs/{quote(ref.run_id, safe='')}"

    def task(self, ref: TaskRef) -> str:
        url = f"{self.run(ref)}/tasks/{quote(ref.task_id, safe='')}"
        return f"{url}/mapped/{ref.map_index}" if ref.map_index >= 0 else url

    def media(self, ref: TaskRef) -> str:
        query = {"dag_id": ref.dag_id, "run_id": ref.run_id, "task_id": ref.task_id, "map_index": ref.map_index}
        return f"{self.base}{URL_PREFIX}/media?{urlencode(query)}"

    def videos(self, **query: str) -> str:
        return f"{self.base}{URL_PREFIX}/videos" + (f"?{urlencode(query)}" if query else "")


def _page(request: Request, template: str, **context: Any) -> HTMLResponse:
    response = _templates.TemplateResponse(request, template, {"links": Links(), **context})
    response.headers.update(_SECURITY_HEADERS)
    return response


def create_app() -> FastAPI:
    """Build the app (called once, by the api-server, on the first request under :data:`URL_PREFIX`)."""
    app = FastAPI(title="Runway videos", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/videos", response_class=HTMLResponse)
    def videos_page(
        request: Request,
        user: GetUserDep,
        session: SessionDep,
        dag_id: Annotated[str | None, Query()] = None,
        run_id: Annotated[str | None, Query()] = None,
    ) -> Response:
        """Every video of the DAGs the user may read, newest first; ``dag_id``/``run_id`` narrow it."""
        readable = _readable_dag_ids(user)
        all_videos = find_videos(session, readable, run_id=run_id)
        dag_ids = sorted({video.task.dag_id for video in all_videos} | ({dag_id} & readable if dag_id else set()))
        shown = [video for video in all_videos if not dag_id or video.task.dag_id == dag_id]
        return _page(
            request,
            "videos.html",
            videos=shown,
            dag_ids=dag_ids,
            selected_dag=dag_id,
            run_id=run_id,
            title="Runway videos",
        )

    @app.get("/task-video", response_class=HTMLResponse)
    def task_video(
        request: Request,
        user: GetUserDep,
        session: SessionDep,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: Annotated[str | None, Query()] = None,
    ) -> Response:
        """The task instance's video (generation or transfer task); for another task, its run's videos."""
        _require_dag(user, dag_id)
        ref = TaskRef(dag_id, run_id, task_id, _map_index(map_index))
        videos: Collection[Video] = find_videos(session, {dag_id}, run_id=run_id, task=ref)
        of_task = bool(videos)
        if not videos:
            videos = find_videos(session, {dag_id}, run_id=run_id)
        return _page(
            request, "task.html", videos=videos, task=ref, of_task=of_task, title="Runway video", layout="single"
        )

    @app.get("/media")
    def video_bytes(
        request: Request,
        user: GetUserDep,
        session: SessionDep,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: int = -1,
    ) -> Response:
        """The video of a generation or transfer task: its stored copy, else the provider's output."""
        _require_dag(user, dag_id)
        ref = TaskRef(dag_id, run_id, task_id, map_index)
        videos = find_videos(session, {dag_id}, run_id=run_id, task=ref)
        if not videos:
            raise HTTPException(404, "No video for this task instance")
        video = videos[0]
        range_header = request.headers.get("range")
        copies = [copy for copy in video.stored if copy.task == ref] or video.stored
        if copies:
            copy = copies[0]
            return media.stream_stored_copy(copy.uri, copy.conn_id, range_header)
        if video.output_url:
            return media.stream_output_url(video.output_url, range_header)
        raise HTTPException(404, "No video for this task instance")

    return app
