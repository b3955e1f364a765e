"""The emulator's HTTP side: the contract endpoints, the admin endpoints and the TCP listener, on aiohttp."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
import socket
import struct
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from airflow_runway.emulator.config import EmulatorConfig
from airflow_runway.emulator.faults import Fault, http_fault_body, parse_fault
from airflow_runway.emulator.state import EmulatorState, PredictionRecord, record_to_dict, render_prediction
from airflow_runway.emulator.validation import RequestRejected, parse_create_body
from airflow_runway.emulator.video import iter_body, padded_size, sample_mp4

log = logging.getLogger(__name__)

_ROUTE_COUNTERS = {"create": "create_requests", "get": "gets", "cancel": "cancels", "output": "output_requests"}
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
WEBHOOK_POLL_INTERVAL = 0.05
WEBHOOK_ATTEMPTS = 3

Endpoint = Callable[[web.Request, "Fault | None"], Awaitable[web.StreamResponse]]


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)


def _text_response(status: int, body: Any, default_type: str = "text/plain") -> web.Response:
    """A response from a fault's ``body`` override: JSON for objects and lists, the text itself for strings."""
    if isinstance(body, str):
        content_type = "text/html" if body.lstrip().startswith("<") else default_type
        return web.Response(status=status, text=body, content_type=content_type)
    return _json(status, body)


def _drop(request: web.BaseRequest, *, hard: bool) -> None:
    """Close the client's connection without (any more of) a response.

    ``hard`` sends a TCP reset (``SO_LINGER`` 0) so the client sees ``ECONNRESET``; otherwise the connection is
    closed after flushing what was already written, as when a server process dies mid-response.
    """
    transport = request.transport
    if transport is None or transport.is_closing():
        return
    if hard:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


def _parse_range(header: str | None, total: int) -> tuple[int, int] | bool | None:
    """``(start, end_exclusive)`` for a single-range ``Range`` header, ``None`` without one, ``False`` if unusable."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return False
    if not match.group(1):
        length = int(match.group(2))
        return (max(0, total - length), total) if length else False
    start = int(match.group(1))
    end = int(match.group(2)) + 1 if match.group(2) else total
    if start >= total or end <= start:
        return False
    return start, min(end, total)


class EmulatorApp:
    """The aiohttp application over an :class:`EmulatorState`.

    :param state: the state the handlers read and mutate (only ever from the server's event loop).
    """

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.closing = asyncio.Event()
        self._webhook_task: asyncio.Task[None] | None = None
        self._webhook_session: aiohttp.ClientSession | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        # Transports that have carried a contract request. Counting a connection when its first contract request
        # arrives (never again, even across a reset) keeps admin-only connections out of ``tcp_connections``.
        self._seen_connections: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()

    # ---- wiring -------------------------------------------------------------------------------------------

    def build(self) -> web.Application:
        """Create the :class:`aiohttp.web.Application` with every route."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        contract: list[tuple[str, str, str, Endpoint]] = [
            ("POST", "/v1/prediction", "create", self._create),
            ("GET", "/v1/prediction/{pid}", "get", self._get),
            ("POST", "/v1/prediction/{pid}/cancel", "cancel", self._cancel),
        ]
        for method, path, route, endpoint in contract:
            handler = self._contract(route, endpoint)
            app.router.add_route(method, path, handler)
            app.router.add_route(method, path + "/", handler)
        app.router.add_get("/v1/outputs/{pid}.mp4", self._contract("output", self._output))
        admin: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("GET", "/_emulator/config", self._admin_get_config),
            ("POST", "/_emulator/config", self._admin_config),
            ("POST", "/_emulator/reset", self._admin_reset),
            ("GET", "/_emulator/stats", self._admin_stats),
            ("GET", "/_emulator/faults", self._admin_list_faults),
            ("POST", "/_emulator/faults", self._admin_faults),
            ("DELETE", "/_emulator/faults", self._admin_clear_faults),
            ("GET", "/_emulator/predictions", self._admin_predictions),
            ("GET", "/_emulator/predictions/{pid}", self._admin_prediction),
            ("POST", "/_emulator/advance", self._admin_advance),
        ]
        for method, path, admin_handler in admin:
            app.router.add_route(method, path, admin_handler)
            app.router.add_route(method, path + "/", admin_handler)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self._webhook_task = asyncio.create_task(self._webhook_loop())

    async def _on_shutdown(self, app: web.Application) -> None:
        # Wakes handlers sleeping in a "slow" fault or streaming a large output so the server stops promptly.
        self.closing.set()
        tasks = [t for t in (self._webhook_task, *self._deliveries) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._webhook_session is not None:
            await self._webhook_session.close()

    async def _sleep(self, seconds: float) -> bool:
        """Sleep ``seconds`` (real time); ``False`` if the server began shutting down meanwhile."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.closing.wait(), seconds)
            return False
        return True

    # ---- contract endpoints -------------------------------------------------------------------------------

    def _contract(self, route: str, endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            self.state.count("requests")
            self.state.count(_ROUTE_COUNTERS[route])
            transport = request.transport
            if transport is not None and transport not in self._seen_connections:
                self._seen_connections[transport] = True
                self.state.count("tcp_connections")
            fault = self.state.faults.take(route)
            if fault is not None:
                self.state.count("faults_applied")
            response = await self._early_fault(request, route, fault)
            if response is None:
                response = await endpoint(request, fault)
            if response.status == 429:
                self.state.count("status_429")
            return response

        return handler

    async def _early_fault(self, request: web.Request, route: str, fault: Fault | None) -> web.StreamResponse | None:
        """Answer ``request`` as ``fault`` scripts, or ``None`` to let the endpoint run."""
        if fault is None:
            return None
        if fault.kind == "http":
            headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
            if fault.body is not None:
                response = _text_response(fault.status, fault.body)
            else:
                content_type, text = http_fault_body(route, fault.status, fault.retry_after)
                response = web.Response(status=fault.status, text=text, content_type=content_type)
            response.headers.update(headers)
            return response
        if fault.kind == "redirect":
            await request.read()
            return web.Response(status=fault.status, headers={"Location": fault.location})
        if fault.kind == "reset":
            await request.read()
            _drop(request, hard=True)
            return web.Response()
        if fault.kind == "slow":
            if not await self._sleep(fault.delay):
                _drop(request, hard=True)
                return web.Response()
            return None
        if fault.kind == "malformed":
            body = fault.body if fault.body is not None else '{"status": "success", "predictionID": '
            if isinstance(body, str):
                return web.Response(status=200, text=body, content_type="application/json")
            return _json(200, body)
        if fault.kind == "malformed_json_object":
            return _json(200, fault.body if fault.body is not None else {"message": "OK"})
        return None

    def _authorize(self, request: web.Request) -> tuple[bool, str | None]:
        """Check the key in either header form; returns ``(ok, "x-api-key" | "bearer" | None)``."""
        expected = self.state.config.api_key
        header_key = request.headers.get("X-API-Key")
        authorization = request.headers.get("Authorization", "")
        bearer = authorization[7:].strip() if authorization[:7].lower() == "bearer " else None
        if expected is None:
            return True, "x-api-key" if header_key else "bearer" if bearer else None
        if header_key is not None and hmac.compare_digest(header_key.encode(), expected.encode()):
            return True, "x-api-key"
        if bearer is not None and hmac.compare_digest(bearer.encode(), expected.encode()):
            return True, "bearer"
        return False, None

    @staticmethod
    def _unauthorized() -> web.Response:
        return _json(401, {"error": "Invalid or missing API key"})

    @staticmethod
    def _base_url(request: web.Request) -> str:
        return str(request.url.origin())

    async def _create(self, request: web.Request, fault: Fault | None) -> web.StreamResponse:
        response = await self._create_response(request, fault)
        # The "after create" faults act once the request has been processed, whatever its outcome.
        if fault is None:
            return response
        if fault.kind == "reset_after_create" or (
            fault.kind == "slow_after_create" and not await self._sleep(fault.delay)
        ):
            _drop(request, hard=True)
        return response

    async def _create_response(self, request: web.Request, fault: Fault | None) -> web.Response:
        raw = await request.read()
        authorized, scheme = self._authorize(request)
        if not authorized:
            return self._unauthorized()
        config = self.state.config
        try:
            parsed = parse_create_body(raw, require_version=config.require_version)
        except RequestRejected as rejected:
            return _json(rejected.status, rejected.body)
        if config.payment_required:
            return _json(
                402,
                {
                    "status": 402,
                    "error": "payment required",
                    "details": "insufficient balance for more in-flight predictions; top up your account",
                },
            )
        if config.max_in_flight is not None and self.state.in_flight() >= config.max_in_flight:
            return _json(
                429,
                {
                    "status": 429,
                    "error": "too many requests",
                    "details": f"at most {config.max_in_flight} predictions may be in flight; wait for one to finish",
                },
            )
        record = self.state.create(parsed, auth_scheme=scheme, base_url=self._base_url(request), fault=fault)
        return _json(
            config.create_http_status,
            {"status": "success", "message": "Prediction created successfully", "predictionID": record.id},
        )

    def _find(self, request: web.Request) -> PredictionRecord | None:
        return self.state.predictions.get(request.match_info["pid"])

    async def _get(self, request: web.Request, fault: Fault | None) -> web.StreamResponse:
        if not self._authorize(request)[0]:
            return self._unauthorized()
        record = self._find(request)
        if record is None:
            return _json(404, {"error": "Prediction not found"})
        record.polls += 1
        state = self.state
        return _json(200, render_prediction(record, state.clock.now(), state.config, self._base_url(request)))

    async def _cancel(self, request: web.Request, fault: Fault | None) -> web.StreamResponse:
        await request.read()
        if not self._authorize(request)[0]:
            return self._unauthorized()
        record = self._find(request)
        if record is None:
            return _json(404, {"error": "Prediction not found"})
        self.state.cancel(record)
        return _json(
            200, {"status": "cancelled", "message": "Prediction canceled successfully", "predictionID": record.id}
        )

    async def _output(self, request: web.Request, fault: Fault | None) -> web.StreamResponse:
        record = self._find(request)
        if record is None or record.phase(self.state.clock.now()) != "success":
            return _json(404, {"error": "Output not found"})
        if request.method == "GET":
            record.downloads += 1
        if fault is not None and fault.kind == "content_type" and fault.body is not None:
            override = fault.body if isinstance(fault.body, str) else json.dumps(fault.body)
            return web.Response(status=200, body=override.encode(), headers={"Content-Type": fault.value})
        video = await asyncio.to_thread(sample_mp4)
        total = padded_size(len(video), self.state.config.output_size)
        wanted = _parse_range(request.headers.get("Range"), total)
        if wanted is False:
            return web.Response(status=416, headers={"Content-Range": f"bytes */{total}"})
        start, end = wanted if isinstance(wanted, tuple) else (0, total)
        response = web.StreamResponse(status=206 if isinstance(wanted, tuple) else 200)
        content_type = fault.value if fault is not None and fault.kind == "content_type" else "video/mp4"
        response.headers["Content-Type"] = content_type
        response.headers["Accept-Ranges"] = "bytes"
        if isinstance(wanted, tuple):
            response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{total}"
        response.content_length = end - start
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        limit = fault.after_bytes if fault is not None and fault.kind == "truncate" else None
        sent = 0
        try:
            for chunk in iter_body(video, total, start, end):
                if limit is not None and sent + len(chunk) >= limit:
                    await response.write(chunk[: limit - sent])  # an empty write still flushes the headers
                    self.state.count("output_bytes", limit - sent)
                    _drop(request, hard=False)
                    return response
                await response.write(chunk)
                sent += len(chunk)
                self.state.count("output_bytes", len(chunk))
                if self.closing.is_set():
                    _drop(request, hard=True)
                    return response
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away mid-download: nothing to answer, nothing worth logging
        return response

    # ---- webhooks -----------------------------------------------------------------------------------------

    async def _webhook_loop(self) -> None:
        while True:
            await asyncio.sleep(WEBHOOK_POLL_INTERVAL)
            now = self.state.clock.now()
            for pid in list(self.state.webhooks_due):
                record = self.state.predictions.get(pid)
                if record is None or not record.webhook_url:
                    self.state.webhooks_due.discard(pid)
                elif record.is_terminal(now):
                    self.state.webhooks_due.discard(pid)
                    record.webhook_delivered = True
                    body = render_prediction(record, now, self.state.config, record.base_url)
                    task = asyncio.create_task(self._deliver(record.webhook_url, record.webhook_secret, body))
                    self._deliveries.add(task)
                    task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, url: str, secret: str | None, body: dict[str, Any]) -> None:
        """POST the final prediction to its webhook, signed when a secret was given, with a few retries."""
        if self._webhook_session is None:
            self._webhook_session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        raw = json.dumps(body).encode()
        for attempt in range(WEBHOOK_ATTEMPTS):
            timestamp = str(int(time.time()))
            headers = {"Content-Type": "application/json", "X-Webhook-Timestamp": timestamp}
            if secret:
                digest = hmac.new(secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
                headers["X-Webhook-Signature"] = f"sha256={digest}"
            try:
                async with self._webhook_session.post(url, data=raw, headers=headers) as response:
                    if response.status < 300:
                        self.state.count("webhooks_sent")
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
                log.debug("Webhook delivery to %s failed: %s", url, error)
            await asyncio.sleep(0.5 * (attempt + 1))
        self.state.count("webhooks_failed")

    # ---- admin endpoints ----------------------------------------------------------------------------------

    @staticmethod
    async def _admin_json(request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as error:
            raise web.HTTPBadRequest(
                text=json.dumps({"error": f"invalid JSON: {error}"}), content_type="application/json"
            ) from None

    async def _admin_get_config(self, request: web.Request) -> web.StreamResponse:
        return _json(200, self.state.config.to_dict())

    async def _admin_config(self, request: web.Request) -> web.StreamResponse:
        changes = await self._admin_json(request) or {}
        if not isinstance(changes, dict):
            return _json(400, {"error": "the body must be a JSON object of settings"})
        try:
            config: EmulatorConfig = self.state.configure(changes)
        except (TypeError, ValueError) as error:
            return _json(400, {"error": str(error)})
        return _json(200, config.to_dict())

    async def _admin_reset(self, request: web.Request) -> web.StreamResponse:
        self.state.reset()
        return _json(200, {"reset": True})

    async def _admin_stats(self, request: web.Request) -> web.StreamResponse:
        return _json(200, self.state.stats())

    async def _admin_list_faults(self, request: web.Request) -> web.StreamResponse:
        return _json(200, self.state.faults.pending())

    async def _admin_faults(self, request: web.Request) -> web.StreamResponse:
        specs = await self._admin_json(request)
        specs = specs if isinstance(specs, list) else [specs]
        try:
            faults = [parse_fault(spec) for spec in specs]
        except ValueError as error:
            return _json(400, {"error": str(error)})
        self.state.faults.add(faults)
        return _json(200, {"queued": [fault.to_dict() for fault in faults]})

    async def _admin_clear_faults(self, request: web.Request) -> web.StreamResponse:
        self.state.faults.clear()
        return _json(200, {"cleared": True})

    async def _admin_predictions(self, request: web.Request) -> web.StreamResponse:
        now = self.state.clock.now()
        return _json(
            200, [record_to_dict(record, now, self.state.config) for record in self.state.predictions.values()]
        )

    async def _admin_prediction(self, request: web.Request) -> web.StreamResponse:
        record = self._find(request)
        if record is None:
            return _json(404, {"error": "Prediction not found"})
        return _json(200, record_to_dict(record, self.state.clock.now(), self.state.config))

    async def _admin_advance(self, request: web.Request) -> web.StreamResponse:
        body = await self._admin_json(request) or {}
        seconds = body.get("seconds") if isinstance(body, dict) else None
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            return _json(400, {"error": 'advance needs {"seconds": <number >= 0>}'})
        self.state.clock.advance(float(seconds))
        return _json(200, {"now": self.state.clock.now()})


def public_host(host: str) -> str:
    """The host to put in the emulator's URL: a wildcard bind is reached through loopback."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class EmulatorService:
    """A running emulator on the current event loop: ``await start()``, then ``await stop()``.

    :param config: the initial settings.
    :param host: the address to listen on.
    :param port: the port to listen on; ``0`` picks a free one.
    :param access_log: log every request through ``aiohttp.access``.
    """

    def __init__(self, config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0, access_log: bool = False):
        self.state = EmulatorState(config)
        self.app = EmulatorApp(self.state)
        self.host = host
        self.port = port
        self._access_log = access_log
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8089``."""
        return f"http://{public_host(self.host)}:{self.port}"

    async def start(self) -> str:
        """Listen; returns once the socket accepts connections, with the URL."""
        kwargs: dict[str, Any] = {} if self._access_log else {"access_log": None}
        self._runner = web.AppRunner(self.app.build(), shutdown_timeout=2.0, **kwargs)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self.url

    async def stop(self) -> None:
        """Stop listening, end open connections and release everything."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
