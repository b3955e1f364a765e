"""The emulator's create-body validation: the statuses and bodies the contract documents, field by field."""

from __future__ import annotations

import base64
import json

import pytest

from airflow_runway.emulator.validation import (
    MAX_DATA_URI_BYTES,
    SEED_MAX,
    RequestRejected,
    cost_of,
    parse_create_body,
)

RUNWAY_INPUT = {
    "ratio": "16:9",
    "duration": "10",
    "watermark": "false",
    "model": "gen3a_turbo",
    "seed": None,
    "promptText": "A lighthouse in a storm",
    "promptImage": "https://example.com/first_frame.png",
}


def body(**overrides: object) -> bytes:
    """A ``runway`` create body whose input is the contract example with ``overrides``."""
    model_input = {**RUNWAY_INPUT, **overrides}
    return json.dumps({"model": "runway", "version": "0.0.1", "input": model_input}).encode()


def rejected(raw: bytes, **kwargs: bool) -> RequestRejected:
    with pytest.raises(RequestRejected) as info:
        parse_create_body(raw, **kwargs)
    return info.value


def test_the_contract_example_is_accepted():
    raw = json.dumps(
        {
            "model": "runway",
            "version": "0.0.1",
            "input": RUNWAY_INPUT,
            "webhook_url": "https://hooks.example.com/x",
            "webhook_secret": "s3cret",
        }
    ).encode()
    parsed = parse_create_body(raw)
    assert parsed.model == "runway"
    assert parsed.version == "0.0.1"
    assert parsed.input == RUNWAY_INPUT
    assert parsed.webhook_url == "https://hooks.example.com/x"
    assert parsed.webhook_secret == "s3cret"


@pytest.mark.parametrize("raw", [b"not json", b"{", b"\xff\xfe", b"", b"[1, 2]", b'"runway"'])
def test_a_body_that_is_not_a_json_object_is_400(raw):
    error = rejected(raw)
    assert error.status == 400
    assert error.body["error"] == "Invalid JSON body"


@pytest.mark.parametrize("payload", [{"input": {}}, {"model": "", "input": {}}, {"model": 3, "input": {}}])
def test_missing_model_is_400_with_the_documented_message(payload):
    error = rejected(json.dumps(payload).encode())
    assert (error.status, error.body) == (400, {"error": "model field is required"})


@pytest.mark.parametrize(
    "payload", [{"model": "mochi-1"}, {"model": "mochi-1", "input": "text"}, {"model": "ray", "input": [1]}]
)
def test_missing_or_non_object_input_is_422(payload):
    assert rejected(json.dumps(payload).encode()).status == 422


def test_version_is_optional_unless_the_older_reading_is_selected():
    raw = json.dumps({"model": "runway", "input": RUNWAY_INPUT}).encode()
    assert parse_create_body(raw).version is None
    error = rejected(raw, require_version=True)
    assert (error.status, error.body["error"]) == (422, "version field is required")


@pytest.mark.parametrize("model", ["mochi-1", "ltx-video", "ray", "video-crafter", "gen4-turbo"])
def test_other_models_accept_any_object_input(model):
    raw = json.dumps({"model": model, "version": "0.0.1", "input": {"prompt": "x", "ratio": "4:3", "seed": -5}})
    assert parse_create_body(raw.encode()).input["ratio"] == "4:3"


@pytest.mark.parametrize(
    ("overrides", "field", "value"),
    [
        ({"promptText": "x" * 1001}, "promptText", "1001"),
        ({"promptText": 42}, "promptText", "42"),
        ({"promptText": None, "promptImage": None}, "promptText", "null"),
        ({"promptText": "   ", "promptImage": None}, "promptText", "'   '"),
        ({"promptImage": "http://example.com/a.png"}, "promptImage", "http://example.com/a.png"),
        ({"promptImage": "ftp://example.com/a.png"}, "promptImage", "ftp://"),
        ({"promptImage": "data:image/gif;base64,R0lGOD"}, "promptImage", "data:image/gif"),
        ({"promptImage": "data:image/png;base64,@@@notbase64"}, "promptImage", "base64"),
        ({"model": "gen3a-turbo!"}, "model", "gen3a-turbo!"),
        ({"model": "runway"}, "model", "'runway'"),
        ({"model": "Gen3a_turbo"}, "model", "Gen3a_turbo"),
        ({"ratio": "4:3"}, "ratio", "4:3"),
        ({"ratio": "16/9"}, "ratio", "16/9"),
        ({"duration": 7}, "duration", "7"),
        ({"duration": "7"}, "duration", "'7'"),
        ({"duration": 10.0}, "duration", "10.0"),
        ({"duration": True}, "duration", "true"),
        ({"watermark": "yes"}, "watermark", "yes"),
        ({"watermark": 1}, "watermark", "1"),
        ({"seed": -1}, "seed", "-1"),
        ({"seed": SEED_MAX + 1}, "seed", str(SEED_MAX + 1)),
        ({"seed": "42"}, "seed", "'42'"),
        ({"seed": True}, "seed", "true"),
        ({"seed": 1.5}, "seed", "1.5"),
    ],
)
def test_invalid_runway_input_is_400_naming_field_and_value(overrides, field, value):
    error = rejected(body(**overrides))
    assert error.status == 400
    assert error.body["error"] == "Invalid input for model"
    assert error.body["details"].startswith(field)
    assert value in error.body["details"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"duration": 5},
        {"duration": "5"},
        {"duration": 10},
        {"watermark": True},
        {"watermark": "true"},
        {"seed": 0},
        {"seed": SEED_MAX},
        {"ratio": "9:16"},
        {"ratio": "1280:768"},
        {"ratio": "768:1280"},
        {"model": "gen4_turbo"},
        {"model": "gen3a_turbo.v2"},
        {"promptText": None},
        {"promptImage": None},
        {"promptText": "x" * 1000},
        {"promptImage": "data:image/webp;base64," + base64.b64encode(b"RIFF....WEBP").decode()},
        {"promptImage": "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8\xff").decode()},
    ],
)
def test_valid_runway_variants_are_accepted(overrides):
    parse_create_body(body(**overrides))


def test_absent_optional_runway_fields_take_defaults():
    parse_create_body(json.dumps({"model": "runway", "input": {"promptText": "hello"}}).encode())


def test_data_uri_limit_is_5_mb_of_uri():
    header = "data:image/png;base64,"
    payload_len = (MAX_DATA_URI_BYTES - len(header)) // 4 * 4
    at_limit = header + "A" * payload_len
    parse_create_body(body(promptImage=at_limit))
    error = rejected(body(promptImage=at_limit + "AAAA"))
    assert error.body["details"].startswith("promptImage") and "5 MB" in error.body["details"]


@pytest.mark.parametrize("field", ["webhook_url", "webhook_secret"])
def test_webhook_fields_must_be_strings(field):
    raw = json.dumps({"model": "ray", "input": {}, field: 5}).encode()
    assert rejected(raw).status == 422


def test_webhook_url_must_be_http():
    raw = json.dumps({"model": "ray", "input": {}, "webhook_url": "file:///etc/passwd"}).encode()
    assert rejected(raw).status == 422


def test_runway_cost_is_per_second_of_video():
    assert cost_of("runway", {"duration": "5"}) == 0.25
    assert cost_of("runway", {"duration": 10}) == 0.5
    assert cost_of("mochi-1", {}) > 0
