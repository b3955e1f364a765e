"""The trigger survives Airflow's own trigger serialization (encrypted kwargs in the metadata DB) intact."""

from __future__ import annotations

import json

from airflow.models.trigger import Trigger
from airflow.sdk._shared.module_loading import import_string

from airflow_runway.triggers.prediction import EachlabsPredictionTrigger


def make_trigger() -> EachlabsPredictionTrigger:
    return EachlabsPredictionTrigger(
        prediction_id="pred-123",
        eachlabs_conn_id="eachlabs_prod",
        poll_interval=7.5,
        max_poll_interval=90.0,
        deadline=1_900_000_000.25,
        started_at=1_899_999_000.0,
        cancel_on_timeout=True,
        cancel_on_kill=False,
    )


def test_round_trip_through_the_trigger_model():
    original = make_trigger()
    row = Trigger.from_object(original)  # what the scheduler stores: classpath + encrypted kwargs
    restored = import_string(row.classpath)(**row.kwargs)  # what the triggerer rebuilds
    assert isinstance(restored, EachlabsPredictionTrigger)
    assert restored.serialize() == original.serialize()


def test_serialized_kwargs_hold_no_secret_and_are_plain_json():
    classpath, kwargs = make_trigger().serialize()
    assert classpath == "airflow_runway.triggers.prediction.EachlabsPredictionTrigger"
    assert set(kwargs) == {
        "prediction_id",
        "eachlabs_conn_id",
        "poll_interval",
        "max_poll_interval",
        "expected_duration",
        "spread",
        "deadline",
        "started_at",
        "cancel_on_timeout",
        "cancel_on_kill",
    }
    json.dumps(kwargs)  # nothing that needs a custom encoder
    assert not any("key" in name or "password" in name or "token" in name for name in kwargs)
