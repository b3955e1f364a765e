"""The "Runway video" extra link on generation tasks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

#: XCom key under which a generation task stores its video's URL.
VIDEO_URL_XCOM_KEY = "video_url"


class RunwayVideoLink(BaseOperatorLink):
    """Links a generation task to the video it produced (empty until the task succeeds)."""

    name = "Runway video"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        url = XCom.get_value(ti_key=ti_key, key=VIDEO_URL_XCOM_KEY)
        return url if isinstance(url, str) else ""
