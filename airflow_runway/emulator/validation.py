"""Validation of create requests as the Eachlabs API performs it (independent of the client's own checks)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MAX_PROMPT_CHARS = 1000
MAX_DATA_URI_BYTES = 5 * 1024 * 1024
RATIOS = ("16:9", "9:16", "1280:768", "768:1280")
DURATIONS = (5, 10)
SEED_MAX = 4_294_967_295
RUNWAY_MODEL_PATTERN = re.compile(r"^gen[0-9][a-z0-9_.]*$")
DATA_URI_PATTERN = re.compile(r"^data:image/(jpeg|png|webp);base64,")


@dataclass(frozen=True)
class CreateRequest:
    """A create body that passed validation."""

    model: str
    version: str | None
    input: dict[str, Any]
    webhook_url: str | None
    webhook_secret: str | None


class RequestRejected(Exception):
    """A create request the API answers with an error status.

    :param status: the HTTP status to answer with.
    :param body: the JSON body to answer with.
    """

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


def _invalid(details: str) -> RequestRejected:
    return RequestRejected(400, {"error": "Invalid input for model", "details": details})


def _show(value: Any) -> str:
    shown = json.dumps(value) if not isinstance(value, str) else repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def parse_create_body(raw: bytes, *, require_version: bool = False) -> CreateRequest:
    """Check a ``POST /v1/prediction/`` body the way the API does.

    :param raw: the request body as received.
    :param require_version: reject a body without ``version`` (the older docs' reading).
    :raises RequestRejected: with the status and body the API answers (400, 422).
    """
    try:
        body = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, ValueError) as error:
        raise RequestRejected(400, {"error": "Invalid JSON body", "details": str(error)}) from None
    if not isinstance(body, Mapping):
        raise RequestRejected(400, {"error": "Invalid JSON body", "details": "the body must be a JSON object"})
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise RequestRejected(400, {"error": "model field is required"})
    version = body.get("version")
    if version is not None and not isinstance(version, str):
        raise RequestRejected(422, {"error": "version must be a string", "details": f"version={_show(version)}"})
    if require_version and not version:
        raise RequestRejected(422, {"error": "version field is required"})
    model_input = body.get("input")
    if not isinstance(model_input, Mapping):
        raise RequestRejected(
            422,
            {"error": "input field is required and must be an object", "details": f"input={_show(model_input)}"},
        )
    webhook_url = body.get("webhook_url")
    webhook_secret = body.get("webhook_secret")
    for name, value in (("webhook_url", webhook_url), ("webhook_secret", webhook_secret)):
        if value is not None and not isinstance(value, str):
            raise RequestRejected(422, {"error": f"{name} must be a string", "details": f"{name}={_show(value)}"})
    if webhook_url and urlsplit(webhook_url).scheme not in ("http", "https"):
        raise RequestRejected(422, {"error": "webhook_url must be an http(s) URL", "details": _show(webhook_url)})
    if model == "runway":
        validate_runway_input(model_input)
    return CreateRequest(
        model=model,
        version=version,
        input=dict(model_input),
        webhook_url=webhook_url or None,
        webhook_secret=webhook_secret or None,
    )


def validate_runway_input(model_input: Mapping[str, Any]) -> None:
    """Check the ``input`` of the Eachlabs ``runway`` model; absent optional fields take the API's defaults.

    :raises RequestRejected: 400 ``Invalid input for model`` whose ``details`` name the field and the value.
    """
    prompt_text = model_input.get("promptText")
    prompt_image = model_input.get("promptImage")
    if prompt_text is not None:
        if not isinstance(prompt_text, str):
            raise _invalid(f"promptText must be a string, got {_show(prompt_text)}")
        if len(prompt_text) > MAX_PROMPT_CHARS:
            raise _invalid(f"promptText must be at most {MAX_PROMPT_CHARS} characters, got {len(prompt_text)}")
    if prompt_image is not None:
        _check_prompt_image(prompt_image)
    has_text = isinstance(prompt_text, str) and bool(prompt_text.strip())
    if not has_text and not prompt_image:
        raise _invalid(f"promptText is required unless promptImage is given, got promptText={_show(prompt_text)}")

    if "model" in model_input:
        runway_model = model_input["model"]
        if not isinstance(runway_model, str) or not RUNWAY_MODEL_PATTERN.match(runway_model):
            raise _invalid(f"model must be a Runway model such as 'gen3a_turbo', got {_show(runway_model)}")
    if "ratio" in model_input and model_input["ratio"] not in RATIOS:
        raise _invalid(f"ratio must be one of {', '.join(RATIOS)}, got {_show(model_input['ratio'])}")
    if "duration" in model_input:
        duration = model_input["duration"]
        if _as_int(duration) not in DURATIONS:
            raise _invalid(f"duration must be 5 or 10, got {_show(duration)}")
    if "watermark" in model_input:
        watermark = model_input["watermark"]
        if not isinstance(watermark, bool) and watermark not in ("true", "false"):
            raise _invalid(f"watermark must be a boolean or 'true'/'false', got {_show(watermark)}")
    if "seed" in model_input:
        seed = model_input["seed"]
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX):
            raise _invalid(f"seed must be null or an integer from 0 to {SEED_MAX}, got {_show(seed)}")


def _as_int(value: Any) -> int | None:
    """An int, or a string of decimal digits, as an int; anything else (bools, floats) as ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _check_prompt_image(value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise _invalid(f"promptImage must be an https URL or a data URI, got {_show(value)}")
    if value.startswith("data:"):
        match = DATA_URI_PATTERN.match(value)
        if not match:
            raise _invalid(
                f"promptImage data URI must start with data:image/(jpeg|png|webp);base64, got {_show(value[:40])}"
            )
        if len(value) > MAX_DATA_URI_BYTES:
            raise _invalid(f"promptImage data URI must be at most 5 MB, got {len(value)} bytes")
        try:
            base64.b64decode(value[match.end() :], validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("promptImage data URI does not hold valid base64") from None
        return
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.netloc:
        raise _invalid(f"promptImage must be an https URL or a data URI, got {_show(value)}")


def cost_of(model: str, model_input: Mapping[str, Any]) -> float:
    """The emulated cost in USD of a finished prediction (Runway bills per second of video)."""
    if model == "runway":
        seconds = _as_int(model_input.get("duration", 10)) or 10
        return round(0.05 * seconds, 4)
    return 0.1
