"""The Airflow plugin that puts the videos into Airflow's UI (registered through the provider info and the
``airflow.plugins`` entry point, as Airflow's own providers do).

* ``fastapi_apps``: :mod:`airflow_runway.ui.app`, mounted by the api-server under ``/runway``;
* ``external_views``: a "Runway videos" page in the Browse menu, and a "Runway video" tab on every task
  instance (Airflow fills ``{DAG_ID}``, ``{RUN_ID}``, ``{TASK_ID}`` and ``{MAP_INDEX}`` in the URL).

Every Airflow component loads plugins, not only the api-server: this module imports nothing heavy, and the
app (FastAPI routes, templates, the metadata-DB queries) is built on its first request.
"""

from __future__ import annotations

import threading
from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/runway"


def base_path() -> str:
    """The path under which Airflow is served (``[api] base_url``), which the UI's iframes need in the href."""
    from urllib.parse import urlsplit

    from airflow.configuration import conf

    base_url = conf.get("api", "base_url", fallback="/") or "/"
    return (urlsplit(base_url).path if "://" in base_url else base_url).rstrip("/")


class LazyApp:
    """An ASGI app that builds :func:`airflow_runway.ui.app.create_app` on its first call."""

    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    from airflow_runway.ui.app import create_app

                    self._app = create_app()
        await self._app(scope, receive, send)


class RunwayVideosPlugin(AirflowPlugin):
    """The "Runway videos" page and the task instances' "Runway video" view."""

    name = "runway_videos"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "Runway videos"}]
    external_views = [
        {
            "name": "Runway videos",
            "href": f"{base_path()}{URL_PREFIX}/videos",
            "destination": "nav",
            "category": "browse",
            "url_route": "runway-videos",
        },
        {
            "name": "Runway video",
            "href": (
                f"{base_path()}{URL_PREFIX}/task-video?dag_id={{DAG_ID}}&run_id={{RUN_ID}}&task_id={{TASK_ID}}"
                "&map_index={MAP_INDEX}"
            ),
            "destination": "task_instance",
            "url_route": "runway-video",
        },
    ]
