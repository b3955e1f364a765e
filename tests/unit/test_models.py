"""The normalising function accepts every reading of the contract."""

from __future__ import annotations

import pytest

from airflow_runway.exceptions import EachlabsMalformedResponseError
from airflow_runway.models import PredictionStatus, extract_output_urls, normalize_status, parse_prediction

URL = "https://storage.eachlabs.ai/out/abc.mp4"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("created", PredictionStatus.PENDING),
        ("starting", PredictionStatus.PENDING),
        ("processing", PredictionStatus.PENDING),
        ("queued-in-a-new-way", PredictionStatus.PENDING),
        (None, PredictionStatus.PENDING),
        ("success", PredictionStatus.SUCCEEDED),
        ("SUCCESS", PredictionStatus.SUCCEEDED),
        ("error", PredictionStatus.FAILED),
        ("failed", PredictionStatus.FAILED),
        ("cancelled", PredictionStatus.CANCELLED),
        ("canceled", PredictionStatus.CANCELLED),
    ],
)
def test_status_mapping(raw, expected):
    assert normalize_status(raw) is expected
    assert expected.is_terminal is (expected is not PredictionStatus.PENDING)


@pytest.mark.parametrize(
    "output",
    [URL, [URL], {"video": URL}, {"url": URL}, {"output": [URL]}, {"something_new": URL}],
)
def test_output_url_found_in_every_shape(output):
    assert extract_output_urls(output) == (URL,)


def test_success_body():
    prediction = parse_prediction(
        {"id": "p1", "status": "success", "output": [URL, URL + "?2"], "metrics": {"predict_time": 833.2, "cost": 1}}
    )
    assert prediction.status is PredictionStatus.SUCCEEDED
    assert prediction.video_url == URL
    assert prediction.to_result() == {
        "prediction_id": "p1",
        "status": "succeeded",
        "video_url": URL,
        "outputs": [URL, URL + "?2"],
        "metrics": {"predict_time": 833.2, "cost": 1},
        "error_code": None,
        "error_message": None,
    }


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (
            {"status": "failed", "output": {"error_code": "PROVIDER_REJECTED", "error_message": "unsafe prompt"}},
            "PROVIDER_REJECTED",
            "unsafe prompt",
        ),
        ({"status": "error", "output": "legacy failure text"}, None, "legacy failure text"),
        ({"status": "error", "output": None, "logs": "worker lost\n"}, None, "worker lost"),
        ({"status": "failed", "output": None, "logs": None}, None, "ended with status 'failed'"),
    ],
)
def test_failure_shapes(body, code, message):
    prediction = parse_prediction(body, "p2")
    assert prediction.status is PredictionStatus.FAILED
    assert prediction.id == "p2"
    assert prediction.error_code == code
    assert message in (prediction.error_message or "")
    assert prediction.output_urls == ()


@pytest.mark.parametrize("body", ["<html>", ["a"], {"id": "x"}, None])
def test_malformed_bodies(body):
    with pytest.raises(EachlabsMalformedResponseError):
        parse_prediction(body)
