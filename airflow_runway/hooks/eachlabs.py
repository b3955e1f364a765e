"""The Eachlabs prediction API client: sync (``requests``) for workers, async (``aiohttp``) for triggers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import requests
from airflow.sdk import BaseHook

from airflow_runway.exceptions import EachlabsConnectionError, EachlabsNotFoundError, EachlabsTransientError
from airflow_runway.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR
from airflow_runway.hooks.errors import (
    connection_error_from_aiohttp,
    connection_error_from_requests,
    decode_object,
    error_for_response,
    prediction_id_from_create,
)
from airflow_runway.hooks.retry import UNBOUNDED, EachlabsRetryPolicy, RequestBounds, is_retryable
from airflow_runway.hooks.session import SESSIONS, SharedSession
from airflow_runway.hooks.settings import DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT, EachlabsSettings
from airflow_runway.hooks.transport import requests_session
from airflow_runway.models import Prediction, parse_prediction

T = TypeVar("T")

PREDICTIONS_PATH = "/v1/prediction/"
#: An id no prediction can have: ``test_connection`` reads it and expects "not found" from a working key.
TEST_PREDICTION_ID = "airflow-runway-connection-test-0000"


def _prediction_path(prediction_id: str, suffix: str = "") -> str:
    if not isinstance(prediction_id, str) or not prediction_id.strip():
        raise ValueError(f"prediction_id must be a non-empty string, got {prediction_id!r}")
    return f"/v1/prediction/{quote(prediction_id.strip(), safe='')}{suffix}"


def _body(data: dict[str, Any]) -> dict[str, Any]:
    return data


class EachlabsHook(BaseHook):
    """Create, read and cancel predictions on the Eachlabs API, with typed errors and safe retries.

    The connection (type ``eachlabs``): host = base URL (default ``https://api.eachlabs.ai``; a host without a
    scheme gets ``https``, ``http://`` is allowed for local servers, a port is honoured), password = API key.
    Extras: ``key_header`` (``"x-api-key"``, the default, or ``"bearer"``; the deprecated ``auth_header`` is still
    read), ``rate_limit_per_minute`` (default 60), ``timeout`` and ``max_attempts`` (used when the matching
    argument is left at its default).

    Sync methods reuse one ``requests.Session`` per hook. Async methods (for triggers) share one aiohttp session
    and one request budget per connection and event loop with every other hook in the process (see
    :mod:`airflow_runway.hooks.session`); call :meth:`aclose` when done. Retries follow
    :class:`~airflow_runway.hooks.retry.EachlabsRetryPolicy`: a create is retried only when it provably
    created nothing. The API key never appears in a log line, an error message or a ``repr``.

    :param eachlabs_conn_id: the Eachlabs connection id.
    :param timeout: seconds to wait to connect, and between bytes of an answer.
    :param max_attempts: attempts per request when the fault is transient.
    :param retry_wait_min: the first retry's backoff, and the jitter's width (seconds).
    :param retry_wait_max: the cap of the backoff (a server's ``Retry-After`` may exceed it).
    """

    conn_name_attr = "eachlabs_conn_id"
    default_conn_name = "eachlabs_default"
    conn_type = "eachlabs"
    hook_name = "Eachlabs"

    def __init__(
        self,
        eachlabs_conn_id: str = default_conn_name,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_wait_min: float = 1.0,
        retry_wait_max: float = 60.0,
    ) -> None:
        super().__init__()
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts!r}")
        if retry_wait_min < 0 or retry_wait_max < retry_wait_min:
            raise ValueError(f"need 0 <= retry_wait_min <= retry_wait_max, got {retry_wait_min!r}, {retry_wait_max!r}")
        self.eachlabs_conn_id = eachlabs_conn_id
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.retry_wait_min = retry_wait_min
        self.retry_wait_max = retry_wait_max
        #: The retry policy; built from the arguments and the connection's ``max_attempts`` on first request
        #: unless set beforehand (tests set one with recording sleeps).
        self.retry_policy: EachlabsRetryPolicy | None = None
        self._settings: EachlabsSettings | None = None
        self._session: requests.Session | None = None
        self._lease: SharedSession | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eachlabs_conn_id={self.eachlabs_conn_id!r})"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """How the connection form shows the standard fields (host = base URL, password = API key).

        Airflow >= 3.2 reads the same from the provider info's ``ui-field-behaviour``; this legacy form serves
        tools that still ask the hook.
        """
        return dict(UI_FIELD_BEHAVIOUR)

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The extra fields of the connection form, built from the provider info's ``conn-fields``.

        Airflow >= 3.2 reads ``conn-fields`` directly; this legacy form (wtforms fields) serves tools that still
        ask the hook.
        """
        from wtforms import IntegerField, StringField

        return {
            name: (IntegerField if "integer" in spec["schema"]["type"] else StringField)(
                spec["label"], description=spec.get("description", ""), default=spec["schema"].get("default")
            )
            for name, spec in CONN_FIELDS.items()
        }

    # ---- connection ---------------------------------------------------------------------------------------

    def _read_settings(
        self, host: str | None, port: int | None, schema: str | None, password: str | None, extra: Mapping[str, Any]
    ) -> EachlabsSettings:
        settings = EachlabsSettings.from_connection(
            self.eachlabs_conn_id,
            host=host,
            port=port,
            schema=schema,
            password=password,
            extra=extra,
            # An argument left at its default lets the connection's extra decide.
            timeout=self.timeout if self.timeout != DEFAULT_TIMEOUT else None,
            max_attempts=self.max_attempts if self.max_attempts != DEFAULT_MAX_ATTEMPTS else None,
        )
        self._settings = settings
        return settings

    @property
    def settings(self) -> EachlabsSettings:
        """The connection's settings, looked up once per hook (sync)."""
        if self._settings is None:
            conn = self.get_connection(self.eachlabs_conn_id)
            return self._read_settings(conn.host, conn.port, conn.schema, conn.password, conn.extra_dejson)
        return self._settings

    async def aget_settings(self) -> EachlabsSettings:
        """The connection's settings, looked up once per hook without blocking the event loop."""
        if self._settings is None:
            conn = await _aget_connection(self.eachlabs_conn_id)
            extra = await _aextra_dejson(conn)
            return self._read_settings(conn.host, conn.port, conn.schema, conn.password, extra)
        return self._settings

    def _policy(self, settings: EachlabsSettings) -> EachlabsRetryPolicy:
        if self.retry_policy is None:
            self.retry_policy = EachlabsRetryPolicy(
                max_attempts=settings.max_attempts, wait_min=self.retry_wait_min, wait_max=self.retry_wait_max
            )
        return self.retry_policy

    # ---- sync ---------------------------------------------------------------------------------------------

    def get_conn(self) -> requests.Session:
        """The hook's ``requests.Session`` (created on first use, reused by every sync call).

        It honours proxy variables and never reads ``~/.netrc`` (see :mod:`airflow_runway.hooks.transport`).
        """
        if self._session is None:
            self._session = requests_session()
        return self._session

    def _request(
        self,
        method: str,
        path: str,
        parse: Callable[[dict[str, Any]], T],
        *,
        payload: Mapping[str, Any] | None = None,
        create: bool = False,
        policy: EachlabsRetryPolicy | None = None,
        bounds: RequestBounds = UNBOUNDED,
    ) -> T:
        settings = self.settings
        session = self.get_conn()
        url = settings.base_url + path
        secret = settings.api_key

        def attempt() -> T:
            try:
                # Never follow a redirect: it would carry the key to another host (a 3xx is an error, see
                # errors.redirect_error).
                response = session.request(
                    method,
                    url,
                    json=payload,
                    headers=settings.headers,
                    timeout=bounds.timeout(settings.timeout),
                    allow_redirects=False,
                )
            except requests.RequestException as error:
                raise connection_error_from_requests(error, secret=secret) from error
            with response:
                return _finish(response.status_code, response.content, response.headers, response.reason, parse, secret)

        retrying = bounds.policy(policy or self._policy(settings)).retrying(
            create=create, description=f"{method} {path}", logger=self.log
        )
        return retrying(attempt)

    def create_prediction(
        self,
        model: str,
        version: str,
        input: Mapping[str, Any],
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> str:
        """Create a prediction (``POST /v1/prediction/``) and return its id. It is paid for: never sent twice.

        It is retried only when the API provably created nothing (connection refused, 429, 503).

        :param model: the Eachlabs model, e.g. ``"runway"``.
        :param version: the model version, e.g. ``"0.0.1"`` (always sent; newer API versions ignore it).
        :param input: the model's input object.
        :param webhook_url: a URL the API calls with the final prediction.
        :param webhook_secret: the secret the API signs webhook calls with.
        :raises EachlabsError: the typed error of the last attempt.
        """
        if not model or not isinstance(model, str):
            raise ValueError(f"model must be a non-empty string, got {model!r}")
        if not isinstance(input, Mapping):
            raise TypeError(f"input must be a mapping, got {type(input).__name__}")
        payload: dict[str, Any] = {"model": model, "version": str(version), "input": dict(input)}
        if webhook_url:
            payload["webhook_url"] = webhook_url
        if webhook_secret:
            payload["webhook_secret"] = webhook_secret
        secret = self.settings.api_key
        try:
            prediction_id = self._request(
                "POST",
                PREDICTIONS_PATH,
                lambda data: prediction_id_from_create(data, secret=secret),
                payload=payload,
                create=True,
            )
        except EachlabsTransientError as error:
            if not is_retryable(error, create=True):
                self.log.error(
                    "Creating an Eachlabs %r prediction failed after the request may have reached the API (%s). "
                    "It was not retried: a prediction may exist, and a duplicate would be paid for twice.",
                    model,
                    error,
                )
            raise
        self.log.info("Created Eachlabs prediction %s (model %r, version %r)", prediction_id, model, version)
        return prediction_id

    def get_prediction(self, prediction_id: str) -> dict[str, Any]:
        """The prediction's raw body (``GET /v1/prediction/{id}``)."""
        return self._request("GET", _prediction_path(prediction_id), _body)

    def get_prediction_state(
        self, prediction_id: str, *, deadline: float | None = None, once: bool = False
    ) -> Prediction:
        """The prediction, normalised by :func:`~airflow_runway.models.parse_prediction`.

        A body without a status counts as malformed and is retried like any transient fault.

        :param deadline: Unix time by which to return, retries included (see :class:`RequestBounds`).
        :param once: one short attempt, no retries.
        """
        return self._request(
            "GET",
            _prediction_path(prediction_id),
            lambda data: parse_prediction(data, prediction_id),
            bounds=RequestBounds(deadline, once),
        )

    def cancel_prediction(self, prediction_id: str, *, once: bool = False) -> dict[str, Any]:
        """Ask the API to cancel a prediction (best effort: the provider may still finish and bill it).

        :param once: one short attempt, no retries (a cancel at a deadline or on kill must not linger).
        """
        return self._request("POST", _prediction_path(prediction_id, "/cancel"), _body, bounds=RequestBounds(once=once))

    def test_connection(self) -> tuple[bool, str]:
        """Check the URL and key with one cheap authenticated read of a prediction that cannot exist.

        "Not found" means the key was accepted; 401 means it was not.
        """
        try:
            policy = EachlabsRetryPolicy(max_attempts=1)
            self._request("GET", _prediction_path(TEST_PREDICTION_ID), _body, policy=policy)
        except EachlabsNotFoundError:
            return True, "Connection successfully tested"
        except Exception as error:  # the form shows any failure, e.g. an unknown connection or a bad host
            return False, str(error)
        return True, "Connection successfully tested"

    def close(self) -> None:
        """Close the sync session (the async lease is released by :meth:`aclose`)."""
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def __enter__(self) -> EachlabsHook:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # ---- async --------------------------------------------------------------------------------------------

    def _shared(self, settings: EachlabsSettings) -> SharedSession:
        """This hook's lease on the running loop's shared session, taken on first async use."""
        lease = self._lease
        if lease is not None and lease.loop is asyncio.get_running_loop() and not lease.session.closed:
            return lease
        if lease is not None:
            # Used from another loop than before: hand that loop's lease back first.
            SESSIONS.release_nowait(lease)
        self._lease = SESSIONS.lease(self.eachlabs_conn_id, settings.base_url, settings.rate_limit_per_minute)
        return self._lease

    async def _arequest(
        self,
        method: str,
        path: str,
        parse: Callable[[dict[str, Any]], T],
        bounds: RequestBounds = UNBOUNDED,
        urgency: float = 0.0,
    ) -> T:
        settings = await self.aget_settings()
        shared = self._shared(settings)
        url = settings.base_url + path
        secret = settings.api_key

        async def attempt() -> T:
            limit = bounds.timeout(settings.timeout)
            # Per socket operation, like requests' timeout: time queued for a pooled connection is not counted.
            # With a deadline the whole attempt (the wait for the shared budget included) is bounded too.
            timeout = aiohttp.ClientTimeout(
                total=limit if bounds.deadline is not None or bounds.once else None,
                sock_connect=limit,
                sock_read=limit,
            )
            try:
                await shared.limiter.acquire(urgency, timeout=limit)
            except asyncio.TimeoutError:
                raise EachlabsConnectionError(
                    f"The Eachlabs request budget ({settings.rate_limit_per_minute:g}/min) had no room "
                    f"within {limit:.0f}s",
                    request_sent=False,
                ) from None
            try:
                async with shared.session.request(
                    method, url, headers=settings.headers, timeout=timeout, proxy=shared.proxy, allow_redirects=False
                ) as response:
                    body = await response.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                raise connection_error_from_aiohttp(error, secret=secret) from error
            return _finish(response.status, body, response.headers, response.reason or "", parse, secret)

        retrying = bounds.policy(self._policy(settings)).async_retrying(
            create=False, description=f"{method} {path}", logger=self.log
        )
        return await retrying(attempt)

    async def aget_prediction(self, prediction_id: str) -> dict[str, Any]:
        """Async :meth:`get_prediction`, on the shared session and budget."""
        return await self._arequest("GET", _prediction_path(prediction_id), _body)

    async def aget_prediction_state(
        self, prediction_id: str, *, deadline: float | None = None, once: bool = False, urgency: float = 0.0
    ) -> Prediction:
        """Async :meth:`get_prediction_state`, on the shared session and budget.

        :param urgency: when requests queue for the shared budget, the most urgent goes first (a poll schedule's
            ``urgency()``); the default serves in arrival order.
        """
        return await self._arequest(
            "GET",
            _prediction_path(prediction_id),
            lambda data: parse_prediction(data, prediction_id),
            RequestBounds(deadline, once),
            urgency,
        )

    async def acancel_prediction(self, prediction_id: str, *, once: bool = False) -> dict[str, Any]:
        """Async :meth:`cancel_prediction`, on the shared session and budget."""
        return await self._arequest("POST", _prediction_path(prediction_id, "/cancel"), _body, RequestBounds(once=once))

    async def aclose(self) -> None:
        """Release this hook's lease on the shared session; the last lease closes it."""
        lease, self._lease = self._lease, None
        if lease is not None:
            await SESSIONS.release(lease)

    async def __aenter__(self) -> EachlabsHook:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()


def _finish(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    reason: str,
    parse: Callable[[dict[str, Any]], T],
    secret: str,
) -> T:
    """Raise the typed error an answer means, or parse its JSON object (inside the attempt, so it is retried)."""
    error = error_for_response(status, body, headers, reason=reason, secret=secret)
    if error is not None:
        raise error
    return parse(decode_object(body, status, secret=secret))


async def _aget_connection(conn_id: str) -> Any:
    """Look a connection up without blocking the event loop.

    ``BaseHook.aget_connection`` masks secrets asynchronously only from Airflow 3.3.2 on (when
    ``Connection.aextra_dejson`` appeared); before that it calls the supervisor synchronously, which fails
    with ``DeadlockImminentError`` while another coroutine talks to it. There, and before
    ``aget_connection`` existed, the sync lookup runs in a worker thread instead.
    """
    from airflow.sdk import Connection

    if hasattr(Connection, "aextra_dejson") and hasattr(BaseHook, "aget_connection"):
        return await EachlabsHook.aget_connection(conn_id)
    from asgiref.sync import sync_to_async

    return await sync_to_async(EachlabsHook.get_connection)(conn_id)


async def _aextra_dejson(conn: Any) -> dict[str, Any]:
    """The connection's extra, masked without a blocking supervisor call (see :func:`_aget_connection`)."""
    aextra: Callable[[], Awaitable[dict[str, Any]]] | None = getattr(conn, "aextra_dejson", None)
    if aextra is not None:
        return dict(await aextra())
    from asgiref.sync import sync_to_async

    return dict(await sync_to_async(lambda: conn.extra_dejson)())
