"""The "Runway video" extra link on generation tasks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

#: XCom key under which a generation task stores its video's URL.
VIDEO_URL_XCOM_KEY = "video_url"
#: ``TaskInstanceState.SUCCESS`` (a ``str`` enum in both Airflow core and the task SDK).
SUCCESS = "success"


class RunwayVideoLink(BaseOperatorLink):
    """Links a generation task to the video it produced (empty until the task succeeds).

    Airflow 3 resolves the link in the worker at the end of every try and stores it as the XCom
    ``_link_RunwayVideoLink`` that the UI shows.
    """

    name = "Runway video"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        # The task runner passes its running task instance, which knows how this try ended. Only a succeeded try
        # has pushed the URL; looking it up after a deferral, a failure or a retry would make the execution API
        # client log a missing XCom as an error on every deferral.
        state = getattr(ti_key, "state", None)
        if state is not None and state != SUCCESS:
            return ""
        url = XCom.get_value(ti_key=ti_key, key=VIDEO_URL_XCOM_KEY)
        return url if isinstance(url, str) else ""
