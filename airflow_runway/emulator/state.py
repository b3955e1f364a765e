"""The emulator's state: emulated time, predictions and counters. Pure Python, no I/O."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_runway.emulator.config import EmulatorConfig
from airflow_runway.emulator.faults import Fault, FaultQueue
from airflow_runway.emulator.validation import CreateRequest, cost_of

#: Fractions of the duration at which a prediction leaves ``created`` and ``starting``.
CREATED_UNTIL = 0.05
STARTING_UNTIL = 0.15

STAT_KEYS = (
    "creates",
    "create_requests",
    "gets",
    "cancels",
    "output_requests",
    "requests",
    "in_flight",
    "peak_in_flight",
    "tcp_connections",
    "faults_applied",
    "status_429",
    "output_bytes",
    "webhooks_sent",
    "webhooks_failed",
)


def progress_status(elapsed: float, duration: float) -> str:
    """The status of a healthy prediction ``elapsed`` emulated seconds after creation.

    ``created`` for the first 5% of ``duration``, ``starting`` until 15%, ``processing`` until ``duration``,
    then ``success``.
    """
    if duration <= 0 or elapsed >= duration:
        return "success"
    fraction = elapsed / duration
    if fraction < CREATED_UNTIL:
        return "created"
    if fraction < STARTING_UNTIL:
        return "starting"
    return "processing"


class EmulatedClock:
    """Emulated seconds: real seconds times ``speed``, integrated so that changing the speed never jumps.

    :param speed: emulated seconds per real second.
    :param monotonic: the real clock (injectable for tests).
    """

    def __init__(self, speed: float = 1.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._speed = speed
        self._base_real = monotonic()
        self._base_emulated = 0.0

    def now(self) -> float:
        """The current emulated time in seconds."""
        return self._base_emulated + (self._monotonic() - self._base_real) * self._speed

    def set_speed(self, speed: float) -> None:
        """Change the speed from now on."""
        self._base_emulated = self.now()
        self._base_real = self._monotonic()
        self._speed = speed

    def advance(self, seconds: float) -> None:
        """Jump ``seconds`` of emulated time ahead."""
        self._base_emulated += seconds


@dataclass(frozen=True)
class FailurePlan:
    """How a prediction scripted to fail fails."""

    error_code: str
    error_message: str
    shape: str
    at_once: bool


@dataclass
class PredictionRecord:
    """One prediction as the emulator stores it."""

    id: str
    model: str
    version: str | None
    input: dict[str, Any]
    created_at: float
    duration: float
    auth_scheme: str | None
    base_url: str
    webhook_url: str | None = None
    webhook_secret: str | None = None
    failure: FailurePlan | None = None
    cancelled_at: float | None = None
    cancel_requests: int = 0
    polls: int = 0
    downloads: int = 0
    webhook_delivered: bool = False

    def phase(self, now: float) -> str:
        """The normalised state at emulated time ``now``: a progress status, ``failed`` or ``cancelled``."""
        if self.cancelled_at is not None:
            return "cancelled"
        elapsed = now - self.created_at
        if self.failure is not None and (self.failure.at_once or elapsed >= self.duration):
            return "failed"
        return progress_status(elapsed, self.duration)

    def is_terminal(self, now: float) -> bool:
        """Whether the prediction has finished (succeeded, failed or been cancelled) at ``now``."""
        return self.phase(now) in ("success", "failed", "cancelled")

    def ended_at(self, now: float) -> float:
        """When the prediction ended (emulated), assuming it is terminal at ``now``."""
        if self.cancelled_at is not None:
            return self.cancelled_at
        if self.failure is not None and self.failure.at_once:
            return self.created_at
        return self.created_at + self.duration


def output_url(base_url: str, prediction_id: str) -> str:
    """Where the video of a prediction is served."""
    return f"{base_url}/v1/outputs/{prediction_id}.mp4"


def render_prediction(record: PredictionRecord, now: float, config: EmulatorConfig, base_url: str) -> dict[str, Any]:
    """The ``GET /v1/prediction/{id}`` body of ``record`` at emulated time ``now``, in the configured dialect."""
    phase = record.phase(now)
    elapsed = max(0.0, now - record.created_at)
    output: Any = None
    logs: str | None = None
    metrics: dict[str, Any] = {}
    status = phase
    if phase == "success":
        url = output_url(base_url, record.id)
        output = {"string": url, "list": [url], "object": {"video": url}, "none": None}[config.output_shape]
        logs = "Prediction started\nGenerating video\nVideo generated"
        metrics = {"predict_time": record.duration, "cost": cost_of(record.model, record.input)}
        if record.model != "runway":  # the contract's "some engines add tier, billed_seconds, output_gb"
            metrics.update(tier="standard", billed_seconds=round(record.duration, 3), output_gb=0.0001)
    elif phase == "failed":
        assert record.failure is not None
        status = config.failure_status
        plan = record.failure
        if plan.shape == "object":
            output = {"error_code": plan.error_code, "error_message": plan.error_message}
        elif plan.shape == "string":
            output = plan.error_message
        else:
            logs = plan.error_message
        metrics = {"predict_time": round(record.ended_at(now) - record.created_at, 3), "cost": 0}
    elif phase == "cancelled":
        status = config.cancel_status
        logs = "Prediction cancelled"
        metrics = {"predict_time": round(record.ended_at(now) - record.created_at, 3), "cost": 0}
    elif phase == "starting":
        logs = "Prediction started"
    elif phase == "processing":
        percent = int(100 * elapsed / record.duration) if record.duration else 100
        logs = f"Prediction started\nGenerating video ({percent}%)"
    return {
        "id": record.id,
        "input": record.input,
        "status": status,
        "output": output,
        "logs": logs,
        "metrics": metrics,
        "urls": {
            "get": f"{base_url}/v1/prediction/{record.id}",
            "cancel": f"{base_url}/v1/prediction/{record.id}/cancel",
        },
    }


def record_to_dict(record: PredictionRecord, now: float, config: EmulatorConfig) -> dict[str, Any]:
    """The emulator's full stored record of a prediction, for test assertions.

    ``status``, ``output``, ``logs`` and ``metrics`` are what ``GET /v1/prediction/{id}`` would answer now;
    ``phase`` is the dialect-free state (``created`` ... ``success``, ``failed``, ``cancelled``).
    """
    rendered = render_prediction(record, now, config, record.base_url)
    return {
        "id": record.id,
        "status": rendered["status"],
        "output": rendered["output"],
        "logs": rendered["logs"],
        "metrics": rendered["metrics"],
        "model": record.model,
        "version": record.version,
        "input": record.input,
        "phase": record.phase(now),
        "terminal": record.is_terminal(now),
        "created_at": record.created_at,
        "elapsed": now - record.created_at,
        "duration": record.duration,
        "auth_scheme": record.auth_scheme,
        "webhook_url": record.webhook_url,
        "has_webhook_secret": record.webhook_secret is not None,
        "webhook_delivered": record.webhook_delivered,
        "failure": None
        if record.failure is None
        else {
            "error_code": record.failure.error_code,
            "error_message": record.failure.error_message,
            "shape": record.failure.shape,
            "at_once": record.failure.at_once,
        },
        "cancelled_at": record.cancelled_at,
        "cancel_requests": record.cancel_requests,
        "polls": record.polls,
        "downloads": record.downloads,
    }


@dataclass
class EmulatorState:
    """Everything the emulator remembers; mutated only from the server's event loop."""

    config: EmulatorConfig
    clock: EmulatedClock = field(default_factory=EmulatedClock)
    predictions: dict[str, PredictionRecord] = field(default_factory=dict)
    faults: FaultQueue = field(default_factory=FaultQueue)
    counters: dict[str, int] = field(default_factory=dict)
    #: Ids of predictions not known to be finished; pruned lazily so counting in-flight work stays cheap.
    active: set[str] = field(default_factory=set)
    #: Ids of predictions whose webhook has not been delivered yet.
    webhooks_due: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.clock.set_speed(self.config.speed)
        self.reset()

    def reset(self) -> None:
        """Forget every prediction, fault and counter (the settings stay)."""
        self.predictions.clear()
        self.active.clear()
        self.webhooks_due.clear()
        self.faults.clear()
        self.counters = {key: 0 for key in STAT_KEYS if key != "in_flight"}

    def configure(self, changes: dict[str, Any]) -> EmulatorConfig:
        """Apply setting changes; raises ``ValueError`` for invalid ones."""
        config = self.config.updated(changes)
        if config.speed != self.config.speed:
            self.clock.set_speed(config.speed)
        self.config = config
        return config

    def count(self, key: str, amount: int = 1) -> None:
        """Add ``amount`` to a counter."""
        self.counters[key] += amount

    def in_flight(self) -> int:
        """How many predictions are not finished now."""
        now = self.clock.now()
        finished = {pid for pid in self.active if pid not in self.predictions or self.predictions[pid].is_terminal(now)}
        self.active -= finished
        return len(self.active)

    def stats(self) -> dict[str, int]:
        """Every counter, plus ``in_flight`` now."""
        return {**self.counters, "in_flight": self.in_flight()}

    def create(
        self, request: CreateRequest, *, auth_scheme: str | None, base_url: str, fault: Fault | None
    ) -> PredictionRecord:
        """Store a new prediction (capturing the current duration) and update the counters."""
        failure = None
        if fault is not None and fault.kind == "fail_prediction":
            failure = FailurePlan(fault.error_code, fault.error_message, fault.shape, fault.at_once)
        record = PredictionRecord(
            id=secrets.token_hex(12),
            model=request.model,
            version=request.version,
            input=request.input,
            created_at=self.clock.now(),
            duration=self.config.duration,
            auth_scheme=auth_scheme,
            base_url=base_url,
            webhook_url=request.webhook_url,
            webhook_secret=request.webhook_secret,
            failure=failure,
        )
        self.predictions[record.id] = record
        self.active.add(record.id)
        if record.webhook_url:
            self.webhooks_due.add(record.id)
        self.count("creates")
        self.counters["peak_in_flight"] = max(self.counters["peak_in_flight"], self.in_flight())
        return record

    def cancel(self, record: PredictionRecord) -> None:
        """Cancel ``record`` unless it has already finished (cancelling is best effort)."""
        record.cancel_requests += 1
        now = self.clock.now()
        if not record.is_terminal(now):
            record.cancelled_at = now
