"""The poll schedule, and how events become results or errors."""

from __future__ import annotations

import logging

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_runway.events import event_for_prediction, result_from_event, timeout_event
from airflow_runway.exceptions import (
    EachlabsPredictionFailedError,
    EachlabsPredictionRejectedError,
    EachlabsPredictionTimeoutError,
)
from airflow_runway.models import is_retryable_failure, parse_prediction
from airflow_runway.poll_policy import FinishAwareSchedule, schedule_for_wait
from airflow_runway.polling import PredictionWatch


def schedule(interval: float) -> FinishAwareSchedule:
    return schedule_for_wait(
        started_at=0.0, poll_interval=interval, max_poll_interval=interval, expected_duration=None, spread=0.2
    )


def test_watch_logs_each_status_change_once(caplog):
    log = logging.getLogger("test.watch")
    watch = PredictionWatch("p1", schedule(1), deadline=None, started_at=0.0, log=log)
    with caplog.at_level(logging.INFO, logger="test.watch"):
        for status in ("created", "processing", "processing", "processing"):
            assert watch.observe(parse_prediction({"id": "p1", "status": status})) is None
        event = watch.observe(parse_prediction({"id": "p1", "status": "success", "output": "https://x/v.mp4"}))
    assert [r.getMessage().split(" after ")[0] for r in caplog.records] == [
        "Prediction p1 is created",
        "Prediction p1 is processing",
        "Prediction p1 is success",
    ]
    assert event is not None and event["status"] == "success"


def test_watch_never_sleeps_past_the_deadline():
    import time

    watch = PredictionWatch("p1", schedule(60), deadline=time.time() + 2, started_at=time.time(), log=None)
    assert 0 < watch.next_delay() <= 2
    assert not watch.expired


def test_success_event_becomes_the_result():
    prediction = parse_prediction({"id": "p1", "status": "success", "output": {"video": "https://x/v.mp4"}})
    result = result_from_event(event_for_prediction(prediction, 12.0))
    assert result == {
        "prediction_id": "p1",
        "status": "succeeded",
        "video_url": "https://x/v.mp4",
        "outputs": ["https://x/v.mp4"],
        "metrics": {},
    }


def test_failed_event_fails_without_retries_and_keeps_the_api_message():
    prediction = parse_prediction(
        {"id": "p1", "status": "failed", "output": {"error_code": "SAFETY.INPUT", "error_message": "unsafe"}}
    )
    with pytest.raises(EachlabsPredictionFailedError, match=r"\[SAFETY.INPUT\] unsafe") as info:
        result_from_event(event_for_prediction(prediction, 3.0))
    assert isinstance(info.value, AirflowFailException)
    assert info.value.error_code == "SAFETY.INPUT"


def test_cancelled_and_timeout_events_fail_without_retries():
    """Point 5: a timed-out task must not retry (each retry could be another billed video)."""
    cancelled = parse_prediction({"id": "p1", "status": "canceled"})
    with pytest.raises(AirflowFailException, match="cancelled"):
        result_from_event(event_for_prediction(cancelled, 3.0))
    with pytest.raises(
        EachlabsPredictionTimeoutError, match=r"p9 did not finish within the timeout \(61s elapsed\); cancelled it"
    ) as info:
        result_from_event(timeout_event("p9", 61.2, cancelled=True))
    assert isinstance(info.value, AirflowFailException)
    assert "without retries" in str(info.value)


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        ("WORKER_LOST", True),
        ("EXECUTION_TIMEOUT", True),
        ("PROVIDER_RATE_LIMIT", True),
        ("worker_lost", True),
        ("INPUT_VALIDATION_ERROR", False),
        ("PROVIDER_REJECTED", False),
        ("SAFETY.INPUT.TEXT", False),
        ("SOMETHING_NEW", False),
        (None, False),
    ],
)
def test_failure_codes_split_retryable_from_final(code, retryable):
    """Point 6: infrastructure failures keep the task's retries; input, content and unknown ones do not."""
    output = {"error_code": code, "error_message": "it failed"} if code else None
    prediction = parse_prediction({"id": "p1", "status": "error", "output": output, "logs": "it failed"})
    with pytest.raises(EachlabsPredictionFailedError, match="it failed") as info:
        result_from_event(event_for_prediction(prediction, 3.0))
    assert isinstance(info.value, AirflowFailException) is not retryable
    assert isinstance(info.value, EachlabsPredictionRejectedError) is not retryable
    assert is_retryable_failure(code) is retryable


def test_a_failure_with_a_code_but_no_message_keeps_the_reason_from_logs():
    """Point 15: ``{"error_code": ...}`` without a message: the reason in ``logs`` is kept."""
    prediction = parse_prediction(
        {"id": "p1", "status": "failed", "output": {"error_code": "PROVIDER_REJECTED"}, "logs": "nsfw frame 3"}
    )
    assert (prediction.error_code, prediction.error_message) == ("PROVIDER_REJECTED", "nsfw frame 3")
