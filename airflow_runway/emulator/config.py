"""The emulator's run-time settings."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OUTPUT_SHAPES = ("string", "list", "object", "none")
FAILURE_STATUSES = ("failed", "error")
CANCEL_STATUSES = ("cancelled", "canceled")
CREATE_HTTP_STATUSES = (200, 201)


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulated Eachlabs API behaves. Every field can be changed at run time.

    The "dialect" fields (``output_shape``, ``failure_status``, ``cancel_status``, ``output_size``) are applied
    when a response is rendered, so changing them affects existing predictions too; ``duration`` is captured by
    each prediction when it is created.

    :param api_key: the key the contract endpoints accept (``X-API-Key`` or ``Authorization: Bearer``);
        ``None`` disables the check.
    :param duration: emulated seconds from creation to ``success`` (the API's typical Runway time is 833 s).
    :param speed: emulated seconds per real second (``100`` turns 833 s into 8.33 s).
    :param max_in_flight: unfinished predictions allowed before a create answers 429; ``None`` means no cap.
    :param output_size: when set, the output video is padded with a top-level ``free`` box to exactly this
        many bytes (it stays a valid MP4); ``None`` serves the bare sample video.
    :param output_shape: ``output`` on success: ``"string"`` (the URL), ``"list"`` ([URL]), ``"object"``
        (``{"video": URL}``) or ``"none"`` (``null``: a success without an output, to test that it is refused).
    :param failure_status: the status of a failed prediction: ``"failed"`` or ``"error"``.
    :param cancel_status: the status of a cancelled prediction: ``"cancelled"`` or ``"canceled"``.
    :param payment_required: when true every create answers 402 (balance too low).
    :param require_version: when true a create without ``version`` answers 422 (the older docs' reading).
    :param create_http_status: the HTTP status of a successful create: 200 or 201 (both are documented).
    """

    api_key: str | None = "test-key"
    duration: float = 833.0
    speed: float = 1.0
    max_in_flight: int | None = 10
    output_size: int | None = None
    output_shape: str = "string"
    failure_status: str = "failed"
    cancel_status: str = "cancelled"
    payment_required: bool = False
    require_version: bool = False
    create_http_status: int = 200

    def __post_init__(self) -> None:
        # Coerce ints to floats (JSON has one number type) and reject everything else, so a bad admin call fails
        # loudly instead of corrupting the emulator's arithmetic.
        for name in ("duration", "speed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.duration < 0:
            raise ValueError(f"duration must be >= 0, got {self.duration!r}")
        if self.speed <= 0:
            raise ValueError(f"speed must be > 0, got {self.speed!r}")
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key):
            raise ValueError("api_key must be a non-empty string or None")
        for name in ("max_in_flight", "output_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer or None, got {value!r}")
        _check_choice("output_shape", self.output_shape, OUTPUT_SHAPES)
        _check_choice("failure_status", self.failure_status, FAILURE_STATUSES)
        _check_choice("cancel_status", self.cancel_status, CANCEL_STATUSES)
        _check_choice("create_http_status", self.create_http_status, CREATE_HTTP_STATUSES)
        for name in ("payment_required", "require_version"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a boolean, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    def updated(self, changes: Mapping[str, Any]) -> EmulatorConfig:
        """Return a copy with ``changes`` applied.

        :raises ValueError: for an unknown field or an invalid value.
        """
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown emulator setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **dict(changes))


def _check_choice(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed or isinstance(value, bool):
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
