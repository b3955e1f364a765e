"""Validation of the Runway model's input, run before any paid request is made.

Every check fails with :class:`RunwayInputError` (an ``AirflowFailException``: retrying cannot fix bad input)
naming the field, the value and what is allowed.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from airflow.sdk.exceptions import AirflowFailException

#: The Eachlabs model and version that serve Runway.
EACHLABS_MODEL = "runway"
EACHLABS_VERSION = "0.0.1"

MAX_PROMPT_CHARS = 1000
RATIOS = ("16:9", "9:16", "1280:768", "768:1280")
DURATIONS = (5, 10)
SEED_MAX = 4_294_967_295
#: ``gen3a_turbo`` is the seed's model; newer Runway models (``gen4_turbo``, ...) pass through unchanged.
MODEL_PATTERN = re.compile(r"^gen[0-9][a-z0-9_.]*$")
MAX_DATA_URI_BYTES = 5 * 1024 * 1024
#: Input keys the typed parameters own; ``extra_input`` may add others but not override these.
TYPED_KEYS = frozenset({"model", "ratio", "duration", "watermark", "seed", "promptText", "promptImage"})
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")
#: Raw bytes that still fit in a 5 MB data URI once base64-encoded (4/3 growth) with its header.
MAX_IMAGE_FILE_BYTES = (MAX_DATA_URI_BYTES - 64) * 3 // 4


class RunwayInputError(AirflowFailException):
    """The Runway input is invalid; raised before any request is sent."""

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"Invalid Runway input {field}={shown}: {allowed}")
        self.field = field


def _as_int(field: str, value: Any, allowed: str) -> int:
    if isinstance(value, bool):
        raise RunwayInputError(field, value, allowed)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise RunwayInputError(field, value, allowed)


def _as_bool(field: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise RunwayInputError(field, value, "must be a boolean (True/False or 'true'/'false')")


def sniff_image_type(data: bytes) -> str | None:
    """Return the MIME type of a JPEG, PNG or WebP image from its magic bytes, else ``None``."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _check_data_uri(uri: str) -> str:
    match = re.match(r"^data:(image/[a-z0-9.+-]+);base64,", uri)
    if not match or match.group(1) not in IMAGE_TYPES:
        raise RunwayInputError(
            "prompt_image", uri, f"a data URI must be 'data:<type>;base64,...' with a type in {IMAGE_TYPES}"
        )
    if len(uri) > MAX_DATA_URI_BYTES:
        raise RunwayInputError(
            "prompt_image", uri[:40], f"a data URI may be at most 5 MB; this one is {len(uri):,} bytes"
        )
    try:
        data = base64.b64decode(uri[match.end() :], validate=True)
    except ValueError:  # binascii.Error
        raise RunwayInputError("prompt_image", uri[:40], "the data URI's payload is not valid base64") from None
    if not data:
        raise RunwayInputError("prompt_image", uri[:40], "the data URI holds no image")
    return uri


def _read_image(path: Any, source: str) -> str:
    """Read a local or object-storage image (anything with ``stat()`` and ``read_bytes()``) as a data URI."""
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_FILE_BYTES:
            raise RunwayInputError(
                "prompt_image",
                source,
                f"the image is {size:,} bytes; at most {MAX_IMAGE_FILE_BYTES:,} bytes fit the 5 MB data URI limit",
            )
        data = path.read_bytes()
    except RunwayInputError:
        raise
    except Exception as error:  # any storage backend's error: the message says which file and why
        raise RunwayInputError("prompt_image", source, f"the image could not be read: {error}") from error
    mime = sniff_image_type(data)
    if mime is None:
        raise RunwayInputError("prompt_image", source, f"the file is not an image of type {IMAGE_TYPES}")
    return _check_data_uri(f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}")


def resolve_prompt_image(value: Any, conn_id: str | None = None) -> str:
    """Turn ``prompt_image`` into what the API accepts: an https URL or a ``data:`` URI.

    :param value: an ``https://`` URL (sent as is), a ``data:image/...;base64,`` URI, a local path (``str``,
        ``Path`` or ``file://`` URL), or an object-storage path (``s3://...``, ``gs://...``, an
        ``ObjectStoragePath``); the last two are read and sent as a data URI with their real MIME type.
    :param conn_id: the Airflow connection used to read an object-storage path.
    """
    from airflow.sdk import ObjectStoragePath

    if isinstance(value, ObjectStoragePath):
        return _read_image(value, str(value))
    if isinstance(value, PathLike):
        return _read_image(Path(value), str(value))
    if not isinstance(value, str) or not value.strip():
        raise RunwayInputError("prompt_image", value, "must be an https URL, a data URI or a file path")
    value = value.strip()
    if value.startswith("data:"):
        return _check_data_uri(value)
    scheme = urlsplit(value).scheme.lower()
    if scheme == "https":
        return value
    if scheme == "http":
        raise RunwayInputError("prompt_image", value, "image URLs must use https")
    if scheme in ("", "file") or len(scheme) == 1:  # a one-letter scheme is a Windows drive
        return _read_image(Path(urlsplit(value).path if scheme == "file" else value), value)
    return _read_image(ObjectStoragePath(value, conn_id=conn_id), value)


def build_runway_input(
    *,
    prompt_text: str | None,
    prompt_image: str | None,
    model: str,
    ratio: str,
    duration: int | str,
    watermark: bool | str,
    seed: int | str | None,
    extra_input: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Validate the Runway parameters and build the Eachlabs ``input`` object.

    ``prompt_image`` must already be resolved (see :func:`resolve_prompt_image`). ``duration`` and
    ``watermark`` are sent as strings, as in the API's own example.
    """
    if prompt_text is not None and not isinstance(prompt_text, str):
        raise RunwayInputError("prompt_text", prompt_text, "must be a string")
    if prompt_text is not None and not prompt_text.strip():
        prompt_text = None
    if prompt_text is None and not prompt_image:
        raise RunwayInputError("prompt_text", prompt_text, "a prompt_text or a prompt_image is required")
    if prompt_text is not None and len(prompt_text) > MAX_PROMPT_CHARS:
        raise RunwayInputError(
            "prompt_text", prompt_text, f"at most {MAX_PROMPT_CHARS} characters, got {len(prompt_text)}"
        )
    if not isinstance(model, str) or not MODEL_PATTERN.match(model):
        raise RunwayInputError("model", model, "a Runway model name such as 'gen3a_turbo' or 'gen4_turbo'")
    if ratio not in RATIOS:
        raise RunwayInputError("ratio", ratio, f"one of {', '.join(RATIOS)}")
    allowed_durations = "5 or 10 (seconds)"
    duration_s = _as_int("duration", duration, allowed_durations)
    if duration_s not in DURATIONS:
        raise RunwayInputError("duration", duration, allowed_durations)
    watermark_b = _as_bool("watermark", watermark)
    seed_i: int | None = None
    if seed is not None and seed != "":
        allowed_seed = f"an integer from 0 to {SEED_MAX}, or None for a random seed"
        seed_i = _as_int("seed", seed, allowed_seed)
        if not 0 <= seed_i <= SEED_MAX:
            raise RunwayInputError("seed", seed, allowed_seed)
    payload: dict[str, Any] = {
        "model": model,
        "ratio": ratio,
        "duration": str(duration_s),
        "watermark": "true" if watermark_b else "false",
        "seed": seed_i,
    }
    if prompt_text is not None:
        payload["promptText"] = prompt_text
    if prompt_image:
        payload["promptImage"] = prompt_image
    if extra_input is not None and not isinstance(extra_input, Mapping):
        raise RunwayInputError("extra_input", extra_input, "must be a mapping (dict) of further input keys")
    if extra_input:
        clash = sorted(set(extra_input) & TYPED_KEYS)
        if clash:
            raise RunwayInputError("extra_input", dict(extra_input), f"must not override the typed parameters {clash}")
        payload.update(extra_input)
    return payload
