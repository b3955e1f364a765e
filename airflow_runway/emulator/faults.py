"""Scripted faults: what they look like, how they are queued, and the bodies they answer with."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

ROUTES = ("create", "get", "cancel", "output", "any")

#: Kinds that answer (or drop) the request before the endpoint runs; valid on every route.
EARLY_KINDS = ("http", "redirect", "reset", "slow", "malformed", "malformed_json_object")
#: Kinds that act on the create itself; valid on route ``create`` only.
CREATE_KINDS = ("reset_after_create", "slow_after_create", "fail_prediction")
#: Kinds that alter the video download; valid on route ``output`` only.
OUTPUT_KINDS = ("truncate", "content_type")
KINDS = EARLY_KINDS + CREATE_KINDS + OUTPUT_KINDS

FAILURE_SHAPES = ("object", "string", "logs")
REDIRECT_STATUSES = (301, 302, 303, 307, 308)

_FIELDS: dict[str, frozenset[str]] = {
    "http": frozenset({"status", "retry_after", "body"}),
    "redirect": frozenset({"status", "location"}),
    "reset": frozenset(),
    "slow": frozenset({"delay"}),
    "malformed": frozenset({"body"}),
    "malformed_json_object": frozenset({"body"}),
    "reset_after_create": frozenset(),
    "slow_after_create": frozenset({"delay"}),
    "fail_prediction": frozenset({"error_code", "error_message", "shape", "at_once"}),
    "truncate": frozenset({"after_bytes"}),
    "content_type": frozenset({"value", "body"}),
}


@dataclass
class Fault:
    """One scripted fault, applied to the next ``times`` requests on ``route``.

    Only the parameters of its ``kind`` are meaningful; see :func:`parse_fault` for the JSON form.
    """

    kind: str
    route: str
    times: int = 1
    status: int = 500
    retry_after: float | None = None
    body: Any = None
    delay: float = 0.0
    error_code: str = "PROVIDER_REJECTED"
    error_message: str = "The provider rejected the request"
    shape: str = "object"
    at_once: bool = False
    after_bytes: int = 0
    value: str = "text/html"
    location: str = ""
    applied: int = field(default=0, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The fault's JSON form, with the parameters of its kind and how often it is still due."""
        out: dict[str, Any] = {"kind": self.kind, "route": self.route, "times": self.times, "applied": self.applied}
        for name in sorted(_FIELDS[self.kind]):
            out[name] = getattr(self, name)
        return out


def _number(spec: Mapping[str, Any], name: str, default: float | None, *, minimum: float = 0) -> float | None:
    value = spec.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ValueError(f"fault {name} must be a number >= {minimum}, got {value!r}")
    return float(value)


def _default_route(kind: str) -> str:
    if kind in CREATE_KINDS:
        return "create"
    if kind in OUTPUT_KINDS:
        return "output"
    return "any"


def parse_fault(spec: Any) -> Fault:
    """Build a :class:`Fault` from its JSON form, rejecting anything inconsistent.

    :raises ValueError: naming the offending key or value.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"a fault must be a JSON object, got {spec!r}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ValueError(f"fault kind must be one of {KINDS}, got {kind!r}")
    route = spec.get("route", _default_route(kind))
    if route not in ROUTES:
        raise ValueError(f"fault route must be one of {ROUTES}, got {route!r}")
    if kind in CREATE_KINDS and route != "create":
        raise ValueError(f"fault kind {kind!r} applies to route 'create' only, got {route!r}")
    if kind in OUTPUT_KINDS and route != "output":
        raise ValueError(f"fault kind {kind!r} applies to route 'output' only, got {route!r}")
    unknown = sorted(set(spec) - {"kind", "route", "times"} - _FIELDS[kind])
    if unknown:
        raise ValueError(f"fault kind {kind!r} does not take {', '.join(unknown)}")
    times = spec.get("times", 1)
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise ValueError(f"fault times must be an integer >= 1, got {times!r}")
    fault = Fault(kind=kind, route=route, times=times)
    if kind == "http":
        status = spec.get("status")
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError(f"an http fault needs a status from 400 to 599, got {status!r}")
        fault.status = status
        fault.retry_after = _number(spec, "retry_after", None)
    if kind == "redirect":
        status = spec.get("status", 302)
        if status not in REDIRECT_STATUSES or isinstance(status, bool):
            raise ValueError(f"a redirect fault's status must be one of {REDIRECT_STATUSES}, got {status!r}")
        location = spec.get("location")
        if not isinstance(location, str) or not location.strip():
            raise ValueError(f"a redirect fault needs a location (the URL it redirects to), got {location!r}")
        fault.status = status
        fault.location = location.strip()
    if kind in ("slow", "slow_after_create"):
        fault.delay = _number(spec, "delay", None) or 0.0
        if "delay" not in spec:
            raise ValueError(f"a {kind} fault needs a delay (seconds)")
    if kind == "fail_prediction":
        for name in ("error_code", "error_message"):
            if name in spec:
                if not isinstance(spec[name], str):
                    raise ValueError(f"fault {name} must be a string, got {spec[name]!r}")
                setattr(fault, name, spec[name])
        shape = spec.get("shape", "object")
        if shape not in FAILURE_SHAPES:
            raise ValueError(f"fault shape must be one of {FAILURE_SHAPES}, got {shape!r}")
        fault.shape = shape
        at_once = spec.get("at_once", False)
        if not isinstance(at_once, bool):
            raise ValueError(f"fault at_once must be a boolean, got {at_once!r}")
        fault.at_once = at_once
    if kind == "truncate":
        after = spec.get("after_bytes", 0)
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ValueError(f"fault after_bytes must be an integer >= 0, got {after!r}")
        fault.after_bytes = after
    if kind == "content_type":
        value = spec.get("value", "text/html")
        if not isinstance(value, str) or not value:
            raise ValueError(f"fault value must be a content type string, got {value!r}")
        fault.value = value
    if "body" in spec:
        fault.body = spec["body"]
    return fault


class FaultQueue:
    """Faults in the order they were scripted; a request takes the oldest one due on its route (or ``any``)."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, faults: list[Fault]) -> None:
        """Queue ``faults`` after those already queued."""
        self._faults.extend(faults)

    def take(self, route: str) -> Fault | None:
        """Consume one application of the oldest fault due on ``route``, if any."""
        for index, fault in enumerate(self._faults):
            if fault.route in (route, "any"):
                fault.times -= 1
                fault.applied += 1
                if fault.times <= 0:
                    del self._faults[index]
                return fault
        return None

    def pending(self) -> list[dict[str, Any]]:
        """The queued faults, oldest first."""
        return [fault.to_dict() for fault in self._faults]

    def clear(self) -> None:
        """Drop every queued fault."""
        self._faults.clear()


_PROXY_PAGE = (
    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def http_fault_body(route: str, status: int, retry_after: float | None) -> tuple[str, str]:
    """The default ``(content_type, body)`` of an injected HTTP error, shaped like the real API's.

    429 uses the older ``Rate limit exceeded`` form when a ``Retry-After`` goes with it and the newer
    ``too many requests`` form otherwise; 502/503/504 get the HTML page a reverse proxy sends.
    """
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    body: dict[str, Any]
    if status in (502, 503, 504):
        return "text/html", _PROXY_PAGE.format(code=status, reason=reason)
    if status == 429 and retry_after is not None:
        body = {"error": f"Rate limit exceeded. Please retry after {retry_after:g} seconds."}
    elif status == 429:
        body = {"status": 429, "error": "too many requests", "details": "too many predictions in flight"}
    elif status == 500 and route == "create":
        body = {"error": "Failed to create prediction"}
    elif status == 400:
        body = {"error": "Invalid input for model"}
    elif status == 401:
        body = {"error": "Invalid or missing API key"}
    elif status == 402:
        body = {"status": 402, "error": "payment required", "details": "insufficient balance"}
    elif status == 404:
        body = {"error": "Prediction not found"}
    else:
        body = {"error": reason}
    return "application/json", json.dumps(body)
