"""The emulator's pure state: emulated time, status progression, rendering, settings and the fault queue."""

from __future__ import annotations

import pytest

from airflow_runway.emulator import EmulatorConfig
from airflow_runway.emulator.faults import FaultQueue, http_fault_body, parse_fault
from airflow_runway.emulator.state import (
    EmulatedClock,
    EmulatorState,
    FailurePlan,
    PredictionRecord,
    progress_status,
    record_to_dict,
    render_prediction,
)
from airflow_runway.emulator.validation import CreateRequest
from airflow_runway.models import PredictionStatus, parse_prediction

BASE = "http://emu.test:1234"


class FakeMonotonic:
    def __init__(self) -> None:
        self.value = 1000.0

    def __call__(self) -> float:
        return self.value


def record(duration: float = 100.0, failure: FailurePlan | None = None) -> PredictionRecord:
    return PredictionRecord(
        id="p1",
        model="runway",
        version="0.0.1",
        input={"promptText": "x", "duration": "5"},
        created_at=0.0,
        duration=duration,
        auth_scheme="x-api-key",
        base_url=BASE,
        failure=failure,
    )


@pytest.mark.parametrize(
    ("elapsed", "status"),
    [
        (0.0, "created"),
        (4.99, "created"),
        (5.0, "starting"),
        (14.99, "starting"),
        (15.0, "processing"),
        (99.99, "processing"),
        (100.0, "success"),
        (1e9, "success"),
    ],
)
def test_status_progresses_by_fraction_of_duration(elapsed, status):
    assert progress_status(elapsed, 100.0) == status


def test_zero_duration_succeeds_at_once():
    assert progress_status(0.0, 0.0) == "success"


def test_clock_scales_real_time_and_speed_changes_never_jump():
    real = FakeMonotonic()
    clock = EmulatedClock(speed=10.0, monotonic=real)
    real.value += 2
    assert clock.now() == pytest.approx(20.0)
    clock.set_speed(100.0)
    assert clock.now() == pytest.approx(20.0)
    real.value += 1
    assert clock.now() == pytest.approx(120.0)
    clock.advance(30)
    assert clock.now() == pytest.approx(150.0)


def test_healthy_prediction_renders_each_output_shape():
    rec = record()
    for shape, expected in [
        ("string", f"{BASE}/v1/outputs/p1.mp4"),
        ("list", [f"{BASE}/v1/outputs/p1.mp4"]),
        ("object", {"video": f"{BASE}/v1/outputs/p1.mp4"}),
    ]:
        body = render_prediction(rec, 100.0, EmulatorConfig(output_shape=shape), BASE)
        assert body["status"] == "success"
        assert body["output"] == expected
        assert body["metrics"] == {"predict_time": 100.0, "cost": 0.25}
        assert body["urls"] == {"get": f"{BASE}/v1/prediction/p1", "cancel": f"{BASE}/v1/prediction/p1/cancel"}
        parsed = parse_prediction(body)
        assert parsed.status is PredictionStatus.SUCCEEDED
        assert parsed.video_url == f"{BASE}/v1/outputs/p1.mp4"


def test_pending_prediction_has_no_output_and_is_pending_for_the_client():
    body = render_prediction(record(), 50.0, EmulatorConfig(), BASE)
    assert set(body) == {"id", "input", "status", "output", "logs", "metrics", "urls"}
    assert body["status"] == "processing"
    assert body["output"] is None
    assert "50%" in body["logs"]
    assert parse_prediction(body).status is PredictionStatus.PENDING


@pytest.mark.parametrize("failure_status", ["failed", "error"])
@pytest.mark.parametrize("shape", ["object", "string", "logs"])
def test_failure_shapes_in_every_dialect(shape, failure_status):
    plan = FailurePlan("PROVIDER_REJECTED", "content policy", shape, at_once=False)
    rec = record(failure=plan)
    config = EmulatorConfig(failure_status=failure_status)
    assert render_prediction(rec, 99.0, config, BASE)["status"] == "processing"
    body = render_prediction(rec, 100.0, config, BASE)
    assert body["status"] == failure_status
    if shape == "object":
        assert body["output"] == {"error_code": "PROVIDER_REJECTED", "error_message": "content policy"}
    elif shape == "string":
        assert body["output"] == "content policy"
    else:
        assert body["output"] is None and body["logs"] == "content policy"
    parsed = parse_prediction(body)
    assert parsed.status is PredictionStatus.FAILED
    assert parsed.error_message == "content policy"
    assert parsed.error_code == ("PROVIDER_REJECTED" if shape == "object" else None)


def test_failure_at_once_is_terminal_immediately():
    rec = record(failure=FailurePlan("WORKER_LOST", "lost", "object", at_once=True))
    assert rec.phase(0.0) == "failed"
    assert rec.is_terminal(0.0)


@pytest.mark.parametrize("cancel_status", ["cancelled", "canceled"])
def test_cancel_before_the_end_sticks_and_after_the_end_does_nothing(cancel_status):
    state = EmulatorState(
        EmulatorConfig(duration=100, cancel_status=cancel_status), EmulatedClock(1.0, FakeMonotonic())
    )
    running = state.create(
        CreateRequest("runway", "0.0.1", {"promptText": "x"}, None, None), auth_scheme=None, base_url=BASE, fault=None
    )
    state.cancel(running)
    state.clock.advance(1000)
    body = render_prediction(running, state.clock.now(), state.config, BASE)
    assert body["status"] == cancel_status
    assert parse_prediction(body).status is PredictionStatus.CANCELLED
    finished = state.create(
        CreateRequest("runway", "0.0.1", {"promptText": "x"}, None, None), auth_scheme=None, base_url=BASE, fault=None
    )
    state.clock.advance(100)
    state.cancel(finished)
    assert finished.phase(state.clock.now()) == "success"
    assert finished.cancel_requests == 1


def test_state_counts_in_flight_peak_and_reset():
    state = EmulatorState(EmulatorConfig(duration=10), EmulatedClock(1.0, FakeMonotonic()))
    request = CreateRequest("ray", None, {}, None, None)
    for _ in range(3):
        state.create(request, auth_scheme=None, base_url=BASE, fault=None)
    assert state.stats()["in_flight"] == 3
    state.clock.advance(10)
    assert state.stats()["in_flight"] == 0
    assert state.stats()["peak_in_flight"] == 3
    assert state.stats()["creates"] == 3
    state.reset()
    assert state.predictions == {}
    assert all(value == 0 for value in state.stats().values())


def test_duration_is_captured_at_creation():
    state = EmulatorState(EmulatorConfig(duration=10), EmulatedClock(1.0, FakeMonotonic()))
    rec = state.create(CreateRequest("ray", None, {}, None, None), auth_scheme=None, base_url=BASE, fault=None)
    state.configure({"duration": 1000})
    state.clock.advance(10)
    assert rec.phase(state.clock.now()) == "success"
    assert record_to_dict(rec, state.clock.now(), state.config)["status"] == "success"


@pytest.mark.parametrize(
    "changes",
    [
        {"speed": 0},
        {"duration": -1},
        {"duration": "10"},
        {"output_shape": "dict"},
        {"failure_status": "failure"},
        {"cancel_status": "stopped"},
        {"max_in_flight": -1},
        {"output_size": 1.5},
        {"payment_required": "yes"},
        {"create_http_status": 202},
        {"api_key": ""},
        {"no_such_setting": 1},
    ],
)
def test_invalid_settings_are_refused(changes):
    with pytest.raises(ValueError):
        EmulatorConfig().updated(changes)


def test_settings_round_trip_and_ints_become_floats():
    config = EmulatorConfig().updated({"duration": 10, "speed": 100, "max_in_flight": None, "api_key": None})
    assert config.duration == 10.0 and isinstance(config.duration, float)
    assert EmulatorConfig(**config.to_dict()) == config


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "explode"},
        {"kind": "http"},
        {"kind": "http", "status": 200},
        {"kind": "http", "status": 503, "route": "nowhere"},
        {"kind": "http", "status": 503, "times": 0},
        {"kind": "http", "status": 503, "delay": 1},
        {"kind": "slow"},
        {"kind": "slow", "delay": -1},
        {"kind": "fail_prediction", "route": "get"},
        {"kind": "fail_prediction", "shape": "html"},
        {"kind": "reset_after_create", "route": "any"},
        {"kind": "truncate", "route": "get"},
        {"kind": "truncate", "after_bytes": -1},
        {"kind": "redirect"},
        {"kind": "redirect", "location": ""},
        {"kind": "redirect", "location": "http://other/", "status": 200},
        {"kind": "redirect", "location": "http://other/", "status": 304},
        {"kind": "redirect", "location": "http://other/", "retry_after": 1},
        "reset",
    ],
)
def test_inconsistent_faults_are_refused(spec):
    with pytest.raises(ValueError):
        parse_fault(spec)


def test_redirect_fault_defaults_to_302_on_any_route():
    fault = parse_fault({"kind": "redirect", "location": " http://other.test/x "})
    assert (fault.route, fault.status, fault.location) == ("any", 302, "http://other.test/x")
    assert fault.to_dict()["location"] == "http://other.test/x"
    assert parse_fault({"kind": "redirect", "location": "/x", "status": 308, "route": "create"}).status == 308


def test_fault_defaults_route_by_kind():
    assert parse_fault({"kind": "fail_prediction"}).route == "create"
    assert parse_fault({"kind": "truncate"}).route == "output"
    assert parse_fault({"kind": "reset"}).route == "any"


def test_fault_queue_takes_oldest_due_on_route_or_any_and_counts_times():
    queue = FaultQueue()
    queue.add(
        [
            parse_fault({"kind": "http", "status": 503, "route": "get", "times": 2}),
            parse_fault({"kind": "reset", "route": "any"}),
            parse_fault({"kind": "http", "status": 500, "route": "create"}),
        ]
    )
    assert queue.take("cancel").kind == "reset"  # type: ignore[union-attr]
    assert queue.take("create").status == 500  # type: ignore[union-attr]
    assert queue.take("get").status == 503  # type: ignore[union-attr]
    assert queue.pending() == [
        {"kind": "http", "route": "get", "times": 1, "applied": 1, "body": None, "retry_after": None, "status": 503}
    ]
    assert queue.take("get").status == 503  # type: ignore[union-attr]
    assert queue.take("get") is None
    assert queue.pending() == []


def test_default_fault_bodies_follow_the_contract():
    assert http_fault_body("create", 429, 60) == (
        "application/json",
        '{"error": "Rate limit exceeded. Please retry after 60 seconds."}',
    )
    content_type, text = http_fault_body("create", 429, None)
    assert '"too many requests"' in text and '"status": 429' in text
    assert http_fault_body("create", 500, None)[1] == '{"error": "Failed to create prediction"}'
    content_type, text = http_fault_body("get", 502, None)
    assert content_type == "text/html" and "502 Bad Gateway" in text
