"""Run the emulator in a background thread, and drive any running emulator through its admin endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import requests

from airflow_runway.emulator.app import EmulatorService
from airflow_runway.emulator.config import EmulatorConfig


class EmulatorError(RuntimeError):
    """An admin call was refused (for example an invalid setting or fault) or the emulator did not start."""


class EmulatorClient:
    """Drive an emulator (in this process or another) through its ``/_emulator/`` admin endpoints.

    :param url: the emulator's base URL, e.g. ``http://127.0.0.1:8089``.
    :param timeout: seconds to wait for each admin call.
    """

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = self._session.request(method, f"{self.url}/_emulator/{path}", json=body, timeout=self.timeout)
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise EmulatorError(f"emulator {method} /_emulator/{path} answered {response.status_code}: {message}")
        return response.json()

    def configure(self, **changes: Any) -> EmulatorConfig:
        """Change settings (any :class:`EmulatorConfig` field) and return the full new settings."""
        return EmulatorConfig(**self._call("POST", "config", changes))

    def config(self) -> EmulatorConfig:
        """The current settings."""
        return EmulatorConfig(**self._call("GET", "config"))

    def inject(
        self, faults: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None, /, **fault: Any
    ) -> list[dict[str, Any]]:
        """Queue faults: one given as keywords (``inject(route="get", kind="http", status=503)``), or one or more
        given as dicts. Returns the queued faults with their defaults filled in.
        """
        if faults is None:
            body: Any = dict(fault)
        elif fault:
            raise TypeError("give the fault as keywords or as dicts, not both")
        elif isinstance(faults, Mapping):
            body = dict(faults)
        else:
            body = [dict(item) for item in faults]
        return list(self._call("POST", "faults", body)["queued"])

    def pending_faults(self) -> list[dict[str, Any]]:
        """The faults still queued, oldest first."""
        return list(self._call("GET", "faults"))

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        self._call("DELETE", "faults")

    def stats(self) -> dict[str, int]:
        """The counters (see the package docs for the keys)."""
        return dict(self._call("GET", "stats"))

    def reset(self) -> None:
        """Forget every prediction, queued fault and counter (settings are kept)."""
        self._call("POST", "reset")

    def prediction(self, prediction_id: str) -> dict[str, Any]:
        """The emulator's stored record of a prediction.

        :raises KeyError: when the emulator has no such prediction.
        """
        try:
            return dict(self._call("GET", f"predictions/{prediction_id}"))
        except EmulatorError as error:
            if " answered 404" in str(error):
                raise KeyError(prediction_id) from None
            raise

    def predictions(self) -> list[dict[str, Any]]:
        """Every stored prediction record."""
        return list(self._call("GET", "predictions"))

    def advance(self, seconds: float) -> float:
        """Move emulated time ``seconds`` ahead (predictions progress as if that time had passed); returns now."""
        return float(self._call("POST", "advance", {"seconds": seconds})["now"])

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._session.close()


class EmulatorServer:
    """The emulator on a background thread with its own event loop.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with EmulatorServer(EmulatorConfig(api_key="test-key"), port=0) as emu:
            conn_host = emu.url

    The admin methods (:meth:`configure`, :meth:`inject`, :meth:`stats`, :meth:`reset`, :meth:`prediction`,
    :meth:`advance`) go over HTTP, exactly as :class:`EmulatorClient` does for an emulator in another process.

    :param config: the initial settings (defaults to :class:`EmulatorConfig` defaults).
    :param host: the address to listen on.
    :param port: the port; ``0`` picks a free one (read it back from :attr:`url` or :attr:`port`).
    :param startup_timeout: seconds :meth:`start` waits for the socket to listen.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        startup_timeout: float = 30.0,
    ) -> None:
        self._initial_config = config or EmulatorConfig()
        self._config = self._initial_config
        self.host = host
        self._requested_port = port
        self._startup_timeout = startup_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._service: EmulatorService | None = None
        self._client: EmulatorClient | None = None

    # ---- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> EmulatorServer:
        """Start serving; returns once the socket is listening.

        :raises EmulatorError: when the server could not start (for example the port is taken).
        """
        if self._thread is not None:
            raise EmulatorError("the emulator is already running")
        self._ready.clear()
        self._error = None
        self._config = self._initial_config
        self._thread = threading.Thread(target=self._run, name="eachlabs-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._startup_timeout):
            self.stop()
            raise EmulatorError(f"the emulator did not start within {self._startup_timeout} s")
        if self._error is not None:
            error = self._error
            self._thread.join()
            self._thread = None
            raise EmulatorError(f"the emulator could not start: {error}") from error
        assert self._service is not None
        self._client = EmulatorClient(self._service.url)
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()
            self._loop = None

    async def _main(self) -> None:
        self._stop_event = asyncio.Event()
        self._service = EmulatorService(self._initial_config, self.host, self._requested_port)
        try:
            await self._service.start()
        except BaseException as error:
            self._error = error
            await self._service.stop()
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await self._service.stop()

    def stop(self) -> None:
        """Stop serving and join the thread. Safe to call twice."""
        if self._client is not None:
            self._client.close()
            self._client = None
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and stop_event is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout=30)
        self._thread = None
        self._stop_event = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # ---- addresses ----------------------------------------------------------------------------------------

    @property
    def _running(self) -> EmulatorClient:
        if self._client is None:
            raise EmulatorError("the emulator is not running; call start() or use it as a context manager")
        return self._client

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:54321``: the host to give an Airflow connection."""
        return self._running.url

    @property
    def port(self) -> int:
        """The port actually listened on."""
        self._running  # noqa: B018 - raises when not running
        assert self._service is not None
        return self._service.port

    @property
    def api_key(self) -> str | None:
        """The API key the emulator accepts (as last set through this object)."""
        return self._config.api_key

    @property
    def config(self) -> EmulatorConfig:
        """The settings as last set through this object."""
        return self._config

    # ---- admin --------------------------------------------------------------------------------------------

    def configure(self, **changes: Any) -> EmulatorConfig:
        """Change settings (any :class:`EmulatorConfig` field) at run time; returns the new settings."""
        self._config = self._running.configure(**changes)
        return self._config

    def inject(
        self, faults: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None, /, **fault: Any
    ) -> list[dict[str, Any]]:
        """Queue faults; see :meth:`EmulatorClient.inject`."""
        return self._running.inject(faults, **fault)

    def pending_faults(self) -> list[dict[str, Any]]:
        """The faults still queued, oldest first."""
        return self._running.pending_faults()

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        self._running.clear_faults()

    def stats(self) -> dict[str, int]:
        """The counters."""
        return self._running.stats()

    def reset(self) -> None:
        """Forget every prediction, queued fault and counter (settings are kept)."""
        self._running.reset()

    def prediction(self, prediction_id: str) -> dict[str, Any]:
        """The emulator's stored record of a prediction; :class:`KeyError` if unknown."""
        return self._running.prediction(prediction_id)

    def predictions(self) -> list[dict[str, Any]]:
        """Every stored prediction record."""
        return self._running.predictions()

    def advance(self, seconds: float) -> float:
        """Move emulated time ``seconds`` ahead; returns the new emulated time."""
        return self._running.advance(seconds)
