"""A connection saved from Airflow's connection form, as the API server receives it, works with the hook.

The form (Airflow 3.3's UI) builds the connection's ``extra`` from the extra fields the API server describes
(``/ui/connections/hook_meta``, :class:`HookMetaService`): one key per field, its ``value`` as served. The API
server serves ``***`` instead of the value of a field whose name Airflow's secrets masker considers sensitive,
so a form saved untouched stores ``***`` there.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from airflow_runway.hooks.eachlabs import EachlabsHook

pytestmark = pytest.mark.integration

RUNWAY_INPUT = {"promptText": "a lighthouse", "model": "gen3a_turbo", "ratio": "16:9", "duration": "5"}


def form_extra_fields() -> dict[str, Any]:
    """The ``eachlabs`` extra fields exactly as the API server serves them to the connection form."""
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    (meta,) = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "eachlabs"]
    return meta.model_dump(mode="json")["extra_fields"]


def save_from_form(monkeypatch: pytest.MonkeyPatch, emulator: Any, extra: dict[str, Any]) -> None:
    """POST the form's body (the REST API's request model), then make it ``eachlabs_default`` for the hook."""
    from airflow.api_fastapi.core_api.datamodels.connections import ConnectionBody

    body = ConnectionBody(
        connection_id="eachlabs_default",
        conn_type="eachlabs",
        host=emulator.url,
        password=emulator.api_key,
        extra=json.dumps(extra),
    )
    conn = {"conn_type": body.conn_type, "host": body.host, "password": body.password, "extra": body.extra}
    monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_DEFAULT", json.dumps(conn))


def test_the_form_prefills_every_extra_with_its_default_not_a_mask():
    fields = form_extra_fields()
    assert {name: spec["value"] for name, spec in fields.items()} == {
        name: spec["schema"]["default"] for name, spec in fields.items()
    }
    assert "***" not in json.dumps(fields)


def test_a_connection_saved_untouched_from_the_form_works(emulator, monkeypatch):
    form_extra = {name: spec["value"] for name, spec in form_extra_fields().items()}  # what the form sends
    save_from_form(monkeypatch, emulator, form_extra)
    with EachlabsHook() as hook:
        pid = hook.create_prediction(model="runway", version="0.0.1", input=RUNWAY_INPUT)
    assert emulator.prediction(pid)["auth_scheme"] == "x-api-key"
    assert emulator.stats()["create_requests"] == 1


def test_a_connection_saved_with_the_old_masked_field_still_works(emulator, monkeypatch, caplog):
    """Saved from the form before the rename: ``auth_header`` stored as ``***``."""
    save_from_form(
        monkeypatch,
        emulator,
        {"auth_header": "***", "rate_limit_per_minute": 60, "timeout": 30, "max_attempts": 5},
    )
    with caplog.at_level(logging.WARNING), EachlabsHook() as hook:
        pid = hook.create_prediction(model="runway", version="0.0.1", input=RUNWAY_INPUT)
    assert emulator.prediction(pid)["auth_scheme"] == "x-api-key"
    assert "masked placeholder" in caplog.text
    assert emulator.api_key not in caplog.text
