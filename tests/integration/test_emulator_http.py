"""The emulator over real loopback HTTP: every endpoint, every fault kind, the limits and the counters."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
import requests

from airflow_runway.emulator import EmulatorClient, EmulatorConfig, EmulatorError, EmulatorServer
from airflow_runway.emulator.state import STAT_KEYS
from airflow_runway.models import PredictionStatus, parse_prediction

pytestmark = pytest.mark.integration

KEY = "test-key"
TIMEOUT = 10
HEADERS = {"X-API-Key": KEY}
RUNWAY_INPUT = {
    "ratio": "16:9",
    "duration": "10",
    "watermark": "false",
    "model": "gen3a_turbo",
    "seed": None,
    "promptText": "A lighthouse in a storm",
}
DEFAULTS = EmulatorConfig(api_key=KEY, duration=100.0, speed=1.0)


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer(DEFAULTS, host="127.0.0.1", port=0) as server:
        yield server


@pytest.fixture(autouse=True)
def fresh(emu: EmulatorServer) -> None:
    emu.configure(**DEFAULTS.to_dict())
    emu.reset()


def create(
    emu: EmulatorServer,
    payload: Any = None,
    *,
    headers: dict[str, str] | None = None,
    path: str = "/v1/prediction/",
    timeout: float = 10,
) -> requests.Response:
    if payload is None:
        payload = {"model": "runway", "version": "0.0.1", "input": RUNWAY_INPUT}
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return requests.post(
        emu.url + path,
        data=data,
        headers={"Content-Type": "application/json", **(HEADERS if headers is None else headers)},
        timeout=timeout,
    )


def create_id(emu: EmulatorServer, **kwargs: Any) -> str:
    response = create(emu, **kwargs)
    assert response.status_code == 200, response.text
    return str(response.json()["predictionID"])


def get(emu: EmulatorServer, pid: str, *, headers: dict[str, str] | None = None, suffix: str = "") -> requests.Response:
    return requests.get(
        f"{emu.url}/v1/prediction/{pid}{suffix}", headers=HEADERS if headers is None else headers, timeout=TIMEOUT
    )


def cancel(emu: EmulatorServer, pid: str, *, suffix: str = "") -> requests.Response:
    return requests.post(f"{emu.url}/v1/prediction/{pid}/cancel{suffix}", headers=HEADERS, timeout=TIMEOUT)


def finished_id(emu: EmulatorServer) -> str:
    pid = create_id(emu)
    emu.advance(DEFAULTS.duration)
    return pid


def decode_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


# ---- create / get / cancel ---------------------------------------------------------------------------------------


def test_prediction_lifecycle_follows_emulated_time(emu):
    response = create(emu)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success" and body["message"] == "Prediction created successfully"
    pid = body["predictionID"]
    seen = [get(emu, pid).json()["status"]]
    for step in (10, 10, 80):
        emu.advance(step)
        seen.append(get(emu, pid).json()["status"])
    assert seen == ["created", "starting", "processing", "success"]
    final = get(emu, pid).json()
    assert final["id"] == pid
    assert final["input"] == RUNWAY_INPUT
    assert final["output"] == f"{emu.url}/v1/outputs/{pid}.mp4"
    assert final["metrics"] == {"predict_time": 100.0, "cost": 0.5}
    assert final["urls"] == {"get": f"{emu.url}/v1/prediction/{pid}", "cancel": f"{emu.url}/v1/prediction/{pid}/cancel"}
    assert parse_prediction(final).status is PredictionStatus.SUCCEEDED


def test_speed_scales_real_time(emu):
    emu.configure(duration=1e-6, speed=1e6)  # done on the first poll without waiting
    pid = create_id(emu)
    assert get(emu, pid).json()["status"] == "success"


def test_create_may_answer_201(emu):
    emu.configure(create_http_status=201)
    assert create(emu).status_code == 201


@pytest.mark.parametrize("shape", ["list", "object"])
def test_output_shapes(emu, shape):
    emu.configure(output_shape=shape)
    pid = finished_id(emu)
    output = get(emu, pid).json()["output"]
    url = f"{emu.url}/v1/outputs/{pid}.mp4"
    assert output == ([url] if shape == "list" else {"video": url})


def test_trailing_slashes_are_tolerated_everywhere(emu):
    first = create_id(emu, path="/v1/prediction")
    second = create_id(emu, path="/v1/prediction/")
    assert get(emu, first).status_code == get(emu, first, suffix="/").status_code == 200
    assert cancel(emu, first).status_code == 200
    assert cancel(emu, second, suffix="/").status_code == 200
    assert emu.stats()["creates"] == 2 and emu.stats()["cancels"] == 2


def test_key_check_accepts_both_header_forms(emu):
    x_key = create_id(emu, headers={"X-API-Key": KEY})
    bearer = create_id(emu, headers={"Authorization": f"Bearer {KEY}"})
    assert emu.prediction(x_key)["auth_scheme"] == "x-api-key"
    assert emu.prediction(bearer)["auth_scheme"] == "bearer"
    assert get(emu, x_key, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"X-Api-Token": KEY}],
)
def test_missing_or_wrong_key_is_401_on_every_api_route(emu, headers):
    pid = create_id(emu)
    for response in (
        create(emu, headers=headers),
        get(emu, pid, headers=headers),
        requests.post(f"{emu.url}/v1/prediction/{pid}/cancel", headers=headers, timeout=TIMEOUT),
    ):
        assert response.status_code == 401
        assert response.json() == {"error": "Invalid or missing API key"}
    assert emu.stats()["creates"] == 1
    assert emu.prediction(pid)["phase"] == "created"


def test_key_check_can_be_disabled(emu):
    emu.configure(api_key=None)
    assert create(emu, headers={}).status_code == 200


@pytest.mark.parametrize(
    ("payload", "status", "error"),
    [
        (b"{not json", 400, "Invalid JSON body"),
        ({"version": "0.0.1", "input": {}}, 400, "model field is required"),
        ({"model": "runway", "version": "0.0.1"}, 422, "input field is required and must be an object"),
        ({"model": "runway", "input": {**RUNWAY_INPUT, "ratio": "4:3"}}, 400, "Invalid input for model"),
    ],
)
def test_create_validation_errors(emu, payload, status, error):
    response = create(emu, payload)
    assert response.status_code == status
    assert response.json()["error"] == error
    if error == "Invalid input for model":
        assert "ratio" in response.json()["details"] and "4:3" in response.json()["details"]
    assert emu.stats()["creates"] == 0 and emu.stats()["create_requests"] == 1


def test_other_models_take_any_input(emu):
    pid = create_id(emu, payload={"model": "mochi-1", "version": "0.0.1", "input": {"prompt": "x", "ratio": "4:3"}})
    assert emu.prediction(pid)["model"] == "mochi-1"
    emu.advance(DEFAULTS.duration)
    metrics = get(emu, pid).json()["metrics"]
    assert {"predict_time", "cost", "tier", "billed_seconds", "output_gb"} <= set(metrics)


def test_version_required_in_the_older_reading(emu):
    emu.configure(require_version=True)
    assert create(emu, {"model": "runway", "input": RUNWAY_INPUT}).status_code == 422


def test_payment_required_mode_is_402(emu):
    emu.configure(payment_required=True)
    response = create(emu)
    assert response.status_code == 402
    body = response.json()
    assert body["status"] == 402 and body["error"] == "payment required" and body["details"]
    assert emu.stats()["creates"] == 0


def test_in_flight_cap_is_429_until_a_prediction_finishes(emu):
    ids = [create_id(emu) for _ in range(10)]
    refused = create(emu)
    assert refused.status_code == 429
    assert "Retry-After" not in refused.headers
    assert refused.json()["status"] == 429 and refused.json()["error"] == "too many requests"
    assert emu.stats()["in_flight"] == 10
    assert cancel(emu, ids[0]).status_code == 200
    create_id(emu)
    assert create(emu).status_code == 429
    emu.advance(DEFAULTS.duration)
    assert emu.stats()["in_flight"] == 0
    create_id(emu)
    stats = emu.stats()
    assert (stats["creates"], stats["status_429"], stats["peak_in_flight"], stats["in_flight"]) == (12, 2, 10, 1)


def test_in_flight_cap_is_configurable(emu):
    emu.configure(max_in_flight=2)
    create_id(emu)
    create_id(emu)
    assert create(emu).status_code == 429
    emu.configure(max_in_flight=None)
    create_id(emu)


def test_get_unknown_is_404(emu):
    response = get(emu, "nope")
    assert response.status_code == 404
    assert response.json() == {"error": "Prediction not found"}


@pytest.mark.parametrize("cancel_status", ["cancelled", "canceled"])
def test_cancel_running_prediction(emu, cancel_status):
    emu.configure(cancel_status=cancel_status)
    pid = create_id(emu)
    response = cancel(emu, pid)
    assert response.status_code == 200
    assert response.json() == {
        "status": "cancelled",
        "message": "Prediction canceled successfully",
        "predictionID": pid,
    }
    emu.advance(1000)
    body = get(emu, pid).json()
    assert body["status"] == cancel_status
    assert parse_prediction(body).status is PredictionStatus.CANCELLED
    assert emu.prediction(pid)["status"] == cancel_status


def test_cancel_after_the_end_changes_nothing_and_unknown_is_404(emu):
    pid = finished_id(emu)
    assert cancel(emu, pid).status_code == 200
    assert get(emu, pid).json()["status"] == "success"
    missing = cancel(emu, "nope")
    assert missing.status_code == 404 and missing.json() == {"error": "Prediction not found"}


# ---- output ------------------------------------------------------------------------------------------------------


def test_output_is_a_playable_mp4(emu, tmp_path):
    pid = finished_id(emu)
    response = requests.get(get(emu, pid).json()["output"], timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "video/mp4"
    assert int(response.headers["Content-Length"]) == len(response.content) < 1_000_000
    path = tmp_path / "out.mp4"
    path.write_bytes(response.content)
    assert decode_frames(path) > 0
    assert emu.prediction(pid)["downloads"] == 1


def test_output_is_404_until_success_and_for_unknown_ids(emu):
    pid = create_id(emu)
    assert requests.get(f"{emu.url}/v1/outputs/{pid}.mp4", timeout=TIMEOUT).status_code == 404
    assert requests.get(f"{emu.url}/v1/outputs/nope.mp4", timeout=TIMEOUT).status_code == 404
    failed = emu.inject(kind="fail_prediction", at_once=True)
    assert failed[0]["route"] == "create"
    failed_id = create_id(emu)
    assert requests.get(f"{emu.url}/v1/outputs/{failed_id}.mp4", timeout=TIMEOUT).status_code == 404


def test_padded_output_has_the_exact_size_and_still_decodes(emu, tmp_path):
    pid = finished_id(emu)
    bare = requests.get(f"{emu.url}/v1/outputs/{pid}.mp4", timeout=TIMEOUT).content
    size = len(bare) + 3 * 1024 * 1024 + 7
    emu.configure(output_size=size)
    path = tmp_path / "padded.mp4"
    with requests.get(f"{emu.url}/v1/outputs/{pid}.mp4", stream=True, timeout=TIMEOUT) as response:
        assert int(response.headers["Content-Length"]) == size
        with path.open("wb") as out:
            for chunk in response.iter_content(256 * 1024):
                out.write(chunk)
    data = path.read_bytes()
    assert len(data) == size
    assert data[: len(bare)] == bare
    assert data[len(bare) : len(bare) + 8] == struct.pack(">I4s", size - len(bare), b"free")
    assert decode_frames(path) > 0
    assert emu.stats()["output_bytes"] == len(bare) + size


def test_output_supports_head_and_ranges(emu):
    pid = finished_id(emu)
    url = f"{emu.url}/v1/outputs/{pid}.mp4"
    whole = requests.get(url, timeout=TIMEOUT).content
    head = requests.head(url, timeout=TIMEOUT)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(whole) and not head.content
    part = requests.get(url, headers={"Range": "bytes=100-"}, timeout=TIMEOUT)
    assert part.status_code == 206
    assert part.content == whole[100:]
    assert part.headers["Content-Range"] == f"bytes 100-{len(whole) - 1}/{len(whole)}"
    assert requests.get(url, headers={"Range": "bytes=0-9"}, timeout=TIMEOUT).content == whole[:10]
    assert requests.get(url, headers={"Range": "bytes=-10"}, timeout=TIMEOUT).content == whole[-10:]
    assert requests.get(url, headers={"Range": f"bytes={len(whole)}-"}, timeout=TIMEOUT).status_code == 416


# ---- faults ------------------------------------------------------------------------------------------------------


def test_http_fault_with_retry_after_applies_times_then_clears(emu):
    pid = create_id(emu)
    emu.inject(route="get", kind="http", status=503, times=2, retry_after=1)
    responses = [get(emu, pid) for _ in range(3)]
    assert [r.status_code for r in responses] == [503, 503, 200]
    assert responses[0].headers["Retry-After"] == "1"
    assert responses[0].headers["Content-Type"].startswith("text/html")
    assert "503 Service Unavailable" in responses[0].text
    stats = emu.stats()
    assert (stats["gets"], stats["faults_applied"]) == (3, 2)
    assert emu.pending_faults() == []


def test_http_429_bodies_in_both_documented_forms(emu):
    emu.inject(
        [
            {"route": "create", "kind": "http", "status": 429, "retry_after": 60},
            {"route": "create", "kind": "http", "status": 429},
        ]
    )
    older, newer = create(emu), create(emu)
    assert older.status_code == newer.status_code == 429
    assert older.headers["Retry-After"] == "60"
    assert older.json() == {"error": "Rate limit exceeded. Please retry after 60 seconds."}
    assert "Retry-After" not in newer.headers
    assert newer.json()["status"] == 429 and newer.json()["error"] == "too many requests"
    assert emu.stats()["status_429"] == 2 and emu.stats()["creates"] == 0


def test_http_500_on_create_creates_nothing(emu):
    emu.inject(route="create", kind="http", status=500)
    response = create(emu)
    assert (response.status_code, response.json()) == (500, {"error": "Failed to create prediction"})
    assert emu.stats()["creates"] == 0 and emu.stats()["create_requests"] == 1


def test_http_fault_body_override(emu):
    pid = create_id(emu)
    emu.inject(
        [
            {"route": "get", "kind": "http", "status": 500, "body": {"error": "custom"}},
            {"route": "get", "kind": "http", "status": 502, "body": "plain words"},
        ]
    )
    assert get(emu, pid).json() == {"error": "custom"}
    second = get(emu, pid)
    assert second.status_code == 502 and second.text == "plain words"


def test_reset_drops_the_connection_without_a_response(emu):
    pid = create_id(emu)
    emu.inject(route="get", kind="reset")
    with pytest.raises(requests.ConnectionError):
        get(emu, pid)
    assert get(emu, pid).status_code == 200
    assert emu.stats()["gets"] == 2 and emu.stats()["faults_applied"] == 1


def test_reset_after_create_still_creates(emu):
    emu.inject(route="create", kind="reset_after_create")
    with pytest.raises(requests.ConnectionError):
        create(emu)
    assert emu.stats()["creates"] == 1
    (record,) = emu.predictions()
    assert record["model"] == "runway"


def test_slow_delays_the_answer(emu):
    pid = create_id(emu)
    emu.inject(route="get", kind="slow", delay=30)
    with pytest.raises(requests.Timeout):
        requests.get(f"{emu.url}/v1/prediction/{pid}", headers=HEADERS, timeout=0.3)
    emu.inject(route="get", kind="slow", delay=0.05)
    assert get(emu, pid).status_code == 200


def test_slow_after_create_creates_then_delays(emu):
    emu.inject(route="create", kind="slow_after_create", delay=30)
    with pytest.raises(requests.Timeout):
        create(emu, timeout=0.3)
    assert emu.stats()["creates"] == 1


def test_malformed_bodies(emu):
    pid = create_id(emu)
    emu.inject(route="get", kind="malformed")
    broken = get(emu, pid)
    assert broken.status_code == 200
    with pytest.raises(ValueError):
        broken.json()
    emu.inject(route="create", kind="malformed_json_object")
    incomplete = create(emu)
    assert incomplete.status_code == 200 and "predictionID" not in incomplete.json()


@pytest.mark.parametrize("shape", ["object", "string", "logs"])
def test_fail_prediction_at_the_normal_end(emu, shape):
    emu.configure(failure_status="error")
    emu.inject(
        route="create", kind="fail_prediction", error_code="PROVIDER_REJECTED", error_message="nope", shape=shape
    )
    pid = create_id(emu)
    healthy = create_id(emu)
    emu.advance(50)
    assert get(emu, pid).json()["status"] == "processing"
    emu.advance(50)
    body = get(emu, pid).json()
    assert body["status"] == "error"
    parsed = parse_prediction(body)
    assert parsed.status is PredictionStatus.FAILED and parsed.error_message == "nope"
    if shape == "object":
        assert body["output"] == {"error_code": "PROVIDER_REJECTED", "error_message": "nope"}
    assert get(emu, healthy).json()["status"] == "success"


def test_fail_prediction_at_once(emu):
    emu.inject(route="create", kind="fail_prediction", error_code="INPUT_VALIDATION_ERROR", at_once=True)
    pid = create_id(emu)
    assert get(emu, pid).json()["status"] == "failed"
    assert emu.stats()["in_flight"] == 0


def test_truncated_output_dies_mid_stream(emu):
    pid = finished_id(emu)
    emu.inject(route="output", kind="truncate", after_bytes=1000)
    received = bytearray()
    with requests.get(f"{emu.url}/v1/outputs/{pid}.mp4", stream=True, timeout=TIMEOUT) as response:
        declared = int(response.headers["Content-Length"])
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for chunk in response.iter_content(100):
                received += chunk
    assert len(received) == 1000 < declared


def test_output_content_type_fault(emu):
    pid = finished_id(emu)
    emu.inject(
        [
            {"route": "output", "kind": "content_type", "value": "text/html"},
            {"route": "output", "kind": "content_type", "value": "text/html", "body": "<html>expired</html>"},
        ]
    )
    wrong_type = requests.get(f"{emu.url}/v1/outputs/{pid}.mp4", timeout=TIMEOUT)
    assert wrong_type.headers["Content-Type"] == "text/html"
    assert wrong_type.content[4:8] == b"ftyp"
    page = requests.get(f"{emu.url}/v1/outputs/{pid}.mp4", timeout=TIMEOUT)
    assert page.headers["Content-Type"] == "text/html" and page.text == "<html>expired</html>"


def test_faults_apply_in_order_across_route_and_any(emu):
    pid = create_id(emu)
    emu.inject(
        [
            {"route": "get", "kind": "http", "status": 502},
            {"route": "any", "kind": "http", "status": 503},
            {"route": "cancel", "kind": "http", "status": 500},
        ]
    )
    assert cancel(emu, pid).status_code == 503  # the oldest fault due on "cancel" is the "any" one
    assert get(emu, pid).status_code == 502
    assert cancel(emu, pid).status_code == 500
    assert get(emu, pid).status_code == 200


def test_invalid_faults_and_settings_are_refused(emu):
    with pytest.raises(EmulatorError, match="truncate"):
        emu.inject(route="get", kind="truncate")
    with pytest.raises(EmulatorError, match="speed"):
        emu.configure(speed=0)
    assert emu.pending_faults() == []
    assert emu.config.speed == DEFAULTS.speed


# ---- counters and admin ------------------------------------------------------------------------------------------


def test_stats_count_every_contract_request_and_connection(emu):
    assert set(emu.stats()) == set(STAT_KEYS)
    with requests.Session() as session:
        pid = session.post(f"{emu.url}/v1/prediction/", json={"model": "ray", "input": {}}, headers=HEADERS).json()[
            "predictionID"
        ]
        for _ in range(4):
            session.get(f"{emu.url}/v1/prediction/{pid}", headers=HEADERS)
        session.post(f"{emu.url}/v1/prediction/{pid}/cancel", headers=HEADERS)
    assert emu.stats()["tcp_connections"] == 1
    emu.inject(route="output", kind="http", status=403)
    requests.get(f"{emu.url}/v1/outputs/{pid}.mp4", timeout=TIMEOUT)
    requests.get(f"{emu.url}/v1/prediction/{pid}", headers={}, timeout=TIMEOUT)
    stats = emu.stats()
    assert stats["tcp_connections"] == 3  # admin calls such as stats() are not counted
    assert (stats["creates"], stats["create_requests"], stats["gets"], stats["cancels"]) == (1, 1, 5, 1)
    assert stats["output_requests"] == 1 and stats["faults_applied"] == 1
    assert stats["requests"] == 8
    emu.reset()
    assert all(value == 0 for value in emu.stats().values())
    with pytest.raises(KeyError):
        emu.prediction(pid)


def test_prediction_record_for_assertions(emu):
    pid = create_id(
        emu,
        payload={
            "model": "runway",
            "version": "0.0.1",
            "input": RUNWAY_INPUT,
            "webhook_url": "http://127.0.0.1:9/hook",
        },
    )
    get(emu, pid)
    record = emu.prediction(pid)
    assert record["id"] == pid and record["version"] == "0.0.1" and record["input"] == RUNWAY_INPUT
    assert record["status"] == "created" and record["terminal"] is False
    assert record["polls"] == 1 and record["webhook_url"] == "http://127.0.0.1:9/hook"


def test_client_drives_the_same_admin_endpoints(emu):
    client = EmulatorClient(emu.url)
    try:
        assert client.configure(duration=5).duration == 5.0
        assert client.config().duration == 5.0
        client.inject(route="get", kind="http", status=500)
        assert len(client.pending_faults()) == 1
        client.clear_faults()
        assert client.pending_faults() == []
        pid = create_id(emu)
        assert client.prediction(pid)["id"] == pid
        client.advance(5)
        assert client.prediction(pid)["status"] == "success"
        assert client.stats()["creates"] == 1
        client.reset()
        assert client.stats()["creates"] == 0
    finally:
        client.close()


class _WebhookReceiver(http.server.BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []
    arrived = threading.Event()

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), raw))
        self.send_response(200)
        self.end_headers()
        type(self).arrived.set()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_webhook_delivers_the_final_prediction_signed(emu):
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _WebhookReceiver)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        payload = {
            "model": "runway",
            "version": "0.0.1",
            "input": RUNWAY_INPUT,
            "webhook_url": hook,
            "webhook_secret": "s3cret",
        }
        pid = create_id(emu, payload=payload)
        emu.advance(DEFAULTS.duration)
        assert _WebhookReceiver.arrived.wait(10), "no webhook arrived"
    finally:
        receiver.shutdown()
        receiver.server_close()
    ((headers, raw),) = _WebhookReceiver.received
    body = json.loads(raw)
    assert body["id"] == pid and body["status"] == "success"
    timestamp = headers["X-Webhook-Timestamp"]
    expected = hmac.new(b"s3cret", timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    assert headers["X-Webhook-Signature"] == f"sha256={expected}"
    assert emu.stats()["webhooks_sent"] == 1


# ---- lifecycle ---------------------------------------------------------------------------------------------------


def test_start_stop_and_port_conflicts():
    server = EmulatorServer(EmulatorConfig(api_key="k")).start()
    try:
        url = server.url
        assert requests.get(f"{url}/_emulator/stats", timeout=TIMEOUT).status_code == 200
        with pytest.raises(EmulatorError, match="could not start"):
            EmulatorServer(port=server.port).start()
    finally:
        server.stop()
    server.stop()
    with pytest.raises(EmulatorError, match="not running"):
        server.url  # noqa: B018
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/_emulator/stats", timeout=5)
