"""The errors a transfer raises when its source cannot be downloaded, split by whether a retry can help."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException, AirflowFailException


class DownloadError(AirflowException):
    """The download failed in a way that may clear by itself (network fault, 429, 5xx, truncated body).

    The operator retries it with backoff, restarting the download; when the attempts are used up, Airflow's
    own task retries apply.
    """

    #: Whether starting the download again can succeed.
    transient: bool = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DownloadRejectedError(DownloadError, AirflowFailException):
    """The download cannot succeed as asked (403/404/410, wrong content type, too big, disallowed URL).

    The task fails at once, without retries.
    """

    transient = False
