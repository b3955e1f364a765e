"""Runway input validation: every bad value fails before any request, naming field, value and what is allowed."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_runway.runway_input import (
    MAX_IMAGE_FILE_BYTES,
    RunwayInputError,
    build_runway_input,
    resolve_prompt_image,
    sniff_image_type,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 64

VALID = dict(
    prompt_text="A lighthouse in a storm",
    prompt_image=None,
    model="gen3a_turbo",
    ratio="16:9",
    duration=10,
    watermark=False,
    seed=None,
)


def build(**overrides):
    return build_runway_input(**{**VALID, **overrides})


def test_valid_input_matches_the_contract_example():
    assert build() == {
        "model": "gen3a_turbo",
        "ratio": "16:9",
        "duration": "10",
        "watermark": "false",
        "seed": None,
        "promptText": "A lighthouse in a storm",
    }


def test_templated_strings_are_coerced():
    payload = build(duration="5", watermark="true", seed="42", ratio="1280:768", model="gen4_turbo")
    assert payload["duration"] == "5"
    assert payload["watermark"] == "true"
    assert payload["seed"] == 42
    assert payload["model"] == "gen4_turbo"


@pytest.mark.parametrize(
    ("overrides", "field", "allowed"),
    [
        ({"ratio": "4:3"}, "ratio", "16:9"),
        ({"duration": 7}, "duration", "5 or 10"),
        ({"duration": "ten"}, "duration", "5 or 10"),
        ({"duration": True}, "duration", "5 or 10"),
        ({"model": "sora"}, "model", "gen3a_turbo"),
        ({"seed": -1}, "seed", "4294967295"),
        ({"seed": 4_294_967_296}, "seed", "4294967295"),
        ({"seed": 1.5}, "seed", "4294967295"),
        ({"watermark": "maybe"}, "watermark", "boolean"),
        ({"prompt_text": "x" * 1001}, "prompt_text", "at most 1000"),
        ({"prompt_text": None}, "prompt_text", "required"),
        ({"prompt_text": "   "}, "prompt_text", "required"),
        ({"extra_input": {"seed": 3}}, "extra_input", "must not override"),
    ],
)
def test_invalid_values_name_field_value_and_allowed(overrides, field, allowed):
    with pytest.raises(RunwayInputError) as info:
        build(**overrides)
    assert isinstance(info.value, AirflowFailException)  # fails without Airflow retries
    assert info.value.field == field
    message = str(info.value)
    assert f"{field}=" in message
    assert allowed in message


def test_image_alone_is_enough_and_extra_keys_pass_through():
    payload = build(prompt_text=None, prompt_image="https://example.com/a.png", extra_input={"promptVideo": "v"})
    assert payload["promptImage"] == "https://example.com/a.png"
    assert "promptText" not in payload
    assert payload["promptVideo"] == "v"


@pytest.mark.parametrize(("data", "mime"), [(PNG, "image/png"), (JPEG, "image/jpeg"), (WEBP, "image/webp")])
def test_local_image_becomes_data_uri_with_real_mime(tmp_path: Path, data, mime):
    path = tmp_path / "frame.bin"  # the extension lies on purpose: the bytes decide
    path.write_bytes(data)
    uri = resolve_prompt_image(str(path))
    assert uri == f"data:{mime};base64,{base64.b64encode(data).decode()}"
    assert sniff_image_type(data) == mime
    assert resolve_prompt_image(path) == uri
    assert resolve_prompt_image(f"file://{path}") == uri


def test_object_storage_image_is_read_through_object_storage_path(tmp_path: Path):
    from airflow.sdk import ObjectStoragePath

    (tmp_path / "f.png").write_bytes(PNG)
    uri = resolve_prompt_image(ObjectStoragePath(f"file://{tmp_path}/f.png"))
    assert uri.startswith("data:image/png;base64,")


def test_https_and_data_uris_pass_through():
    assert resolve_prompt_image("https://cdn.example.com/x.jpg?sig=1") == "https://cdn.example.com/x.jpg?sig=1"
    data_uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert resolve_prompt_image(data_uri) == data_uri


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://example.com/a.png", "https"),
        ("data:image/gif;base64,R0lGOD", "data URI"),
        ("data:image/png;base64," + "A" * (5 * 1024 * 1024), "at most 5 MB"),
        ("data:image/png;base64,not base64!", "not valid base64"),  # issue 7, point 15
        ("data:image/png;base64,iVBORw0KGgo", "not valid base64"),  # truncated: bad padding
        ("data:image/png;base64,", "holds no image"),
        ("/definitely/not/here.png", "could not be read"),
        (42, "https URL"),
    ],
)
def test_bad_images_are_refused(value, expected):
    with pytest.raises(RunwayInputError, match=expected):
        resolve_prompt_image(value)


def test_oversize_and_non_image_files_are_refused(tmp_path: Path):
    big = tmp_path / "big.png"
    big.write_bytes(PNG + b"\x00" * MAX_IMAGE_FILE_BYTES)
    with pytest.raises(RunwayInputError, match="5 MB data URI limit"):
        resolve_prompt_image(str(big))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(RunwayInputError, match="not an image"):
        resolve_prompt_image(str(text))


@pytest.mark.parametrize("extra_input", ["clip.mp4", ["a", "b"], 3])
def test_a_non_mapping_extra_input_is_an_input_error(extra_input):
    """Issue 7, point 15: a plain ValueError would burn the task's retries; this fails at once."""
    with pytest.raises(RunwayInputError, match=r"extra_input.*mapping") as info:
        build(extra_input=extra_input)
    assert isinstance(info.value, AirflowFailException)
