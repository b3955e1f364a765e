"""Typed errors for the Eachlabs API, each carrying the API's own message.

Permanent errors (bad input, bad key, no balance, unknown prediction, a prediction rejected for its input or
content, a timeout, a create whose outcome is unknown) subclass :class:`~airflow.sdk.exceptions.AirflowFailException`,
so a task that raises one fails at once instead of burning its Airflow retries. Transient ones (rate limit, server
error, network fault, malformed body, a prediction lost to an infrastructure failure) are plain
:class:`~airflow.sdk.exceptions.AirflowException` subclasses: the hook retries requests first, and Airflow's own
retries take over if they persist.
"""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException, AirflowFailException


class EachlabsError(AirflowException):
    """Base class of every Eachlabs API error.

    :param message: the error as the API states it (never contains the API key).
    :param status_code: the HTTP status, when the error came from an HTTP response (kept as ``http_status``:
        ``AirflowException.status_code`` is Airflow's own, for its REST API).
    :param retry_after: seconds the API asked us to wait (``Retry-After``), when given.
    """

    #: Whether retrying the same request can succeed.
    transient: bool = False

    def __init__(self, message: str, *, status_code: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = status_code
        self.retry_after = retry_after


class EachlabsTransientError(EachlabsError):
    """A fault that may clear by itself: worth retrying with backoff."""

    transient = True


class EachlabsPermanentError(EachlabsError, AirflowFailException):
    """A fault that retrying cannot fix: the task fails without Airflow retries."""


class EachlabsInvalidInputError(EachlabsPermanentError):
    """HTTP 400/422: the request or the model input was rejected."""


class EachlabsAuthError(EachlabsPermanentError):
    """HTTP 401: the API key is missing or invalid."""


class EachlabsPaymentRequiredError(EachlabsPermanentError):
    """HTTP 402: the account balance is too low for more in-flight work."""


class EachlabsNotFoundError(EachlabsPermanentError):
    """HTTP 404: no such prediction."""


class EachlabsPredictionFailedError(EachlabsError):
    """The prediction finished with status ``error``/``failed`` for a reason on Eachlabs' side.

    Raised as is only for the failure codes :func:`~airflow_runway.models.is_retryable_failure` lists
    (``WORKER_LOST``, ...): the task's Airflow retries then create a new prediction. Every other failure raises
    :class:`EachlabsPredictionRejectedError`.
    """

    def __init__(self, message: str, *, error_code: str | None = None, prediction_id: str | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.prediction_id = prediction_id


class EachlabsPredictionRejectedError(EachlabsPredictionFailedError, AirflowFailException):
    """The prediction failed because of its input or content (or an unknown code): no Airflow retries."""


class EachlabsPredictionTimeoutError(AirflowFailException):
    """The wait passed the operator's ``timeout``: the prediction was cancelled (best effort) and the task fails.

    No Airflow retries: a cancel is best effort, so each retry could be another billed video.
    """


class EachlabsCreateUncertainError(AirflowFailException):
    """A create whose outcome is unknown: a prediction may exist (and be billed). Never sent again.

    Fails the task without Airflow retries; a user who wants a new prediction clears the task.
    """


class EachlabsRateLimitError(EachlabsTransientError):
    """HTTP 429: the rate limit or the in-flight concurrency cap was hit."""


class EachlabsServerError(EachlabsTransientError):
    """HTTP 5xx from the API."""


class EachlabsConnectionError(EachlabsTransientError):
    """The request failed on the network: refused, reset or timed out.

    :param request_sent: ``False`` only when the request provably never reached the server (for example the
        connection was refused), which is what makes retrying a create safe.
    """

    def __init__(self, message: str, *, request_sent: bool = True) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class EachlabsMalformedResponseError(EachlabsTransientError):
    """The API answered with a body that is not the JSON the contract describes."""


class EachlabsRedirectError(EachlabsPermanentError):
    """HTTP 3xx: the API answered with a redirect, which API requests never follow.

    Following it would send the API key to whatever host the ``Location`` names; a redirect from the API's
    address means the connection's host is wrong (or something between us and the API rewrites answers).
    """
