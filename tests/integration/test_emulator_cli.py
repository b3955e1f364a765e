"""``python -m airflow_runway.emulator``: prints its URL when listening, obeys its flags, stops on SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from airflow_runway.emulator import EmulatorClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10


def launch(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "airflow_runway.emulator", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def started() -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = launch(
        *("--host", "127.0.0.1", "--port", "0", "--api-key", "cli-key", "--duration", "5", "--speed", "1"),
        *("--output-shape", "object", "--cancel-status", "canceled", "--max-in-flight", "none"),
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.stderr else url
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=TIMEOUT)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_with_its_flags_and_stops_cleanly(started, signum):
    proc, url = started
    client = EmulatorClient(url)
    try:
        config = client.config()
        assert (config.api_key, config.duration, config.output_shape) == ("cli-key", 5.0, "object")
        assert config.max_in_flight is None and config.cancel_status == "canceled"
        response = requests.post(
            f"{url}/v1/prediction/",
            json={"model": "ray", "version": "0.0.1", "input": {"prompt": "x"}},
            headers={"Authorization": "Bearer cli-key"},
            timeout=TIMEOUT,
        )
        pid = response.json()["predictionID"]
        client.advance(5)
        body = requests.get(f"{url}/v1/prediction/{pid}", headers={"X-API-Key": "cli-key"}, timeout=TIMEOUT).json()
        assert body["output"] == {"video": f"{url}/v1/outputs/{pid}.mp4"}
        assert client.stats()["creates"] == 1
    finally:
        client.close()
    proc.send_signal(signum)
    assert proc.wait(timeout=TIMEOUT) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/_emulator/stats", timeout=TIMEOUT)


def test_cli_fails_cleanly_when_the_port_is_taken():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = launch("--port", str(busy.getsockname()[1]))
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 1
    assert stdout == ""
    assert "eachlabs emulator:" in stderr
