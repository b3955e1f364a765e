"""Run the `runway_daily_video` example DAG end to end against the bundled emulator (``make demo``).

It starts the emulator (no key, no internet), gives Airflow a throw-away home with a SQLite metadata
database under ``.demo/``, creates the ``eachlabs`` pool the DAGs use, runs one DAG run with
``airflow dags test`` (deferred tasks run their trigger in-process), then checks that the stored video is a
playable MP4 and prints where it is.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / ".demo"
VIDEOS = DEMO / "videos"
API_KEY = "demo-key"  # the emulator's key: not a real Eachlabs key
DAG_ID = "runway_daily_video"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the emulator exited with code {process.returncode}")
        try:
            with urlopen(f"{url}/_emulator/stats", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the emulator did not answer at {url} within {seconds:.0f}s")


def airflow(env: dict[str, str], *args: str) -> None:
    print("+ airflow", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "airflow", *args], env=env, check=True)


def check_playable(path: Path) -> str:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return f"{stream.codec_context.name} {stream.width}x{stream.height}, {frames} frames decoded"


def main() -> int:
    VIDEOS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # 833 s, the typical Runway time, played 200x faster: the prediction takes about 4 s.
    emulator = subprocess.Popen(
        [sys.executable, "-m", "airflow_runway.emulator", "--port", str(port), "--api-key", API_KEY,
         "--duration", "833", "--speed", "200"],
    )  # fmt: skip
    try:
        wait_until_up(url, emulator)
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(DEMO / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{DEMO / 'airflow' / 'airflow.db'}",
            "AIRFLOW_CONN_EACHLABS_DEFAULT": json.dumps({"conn_type": "eachlabs", "host": url, "password": API_KEY}),
            # The emulator's output URLs are on loopback, which the transfer refuses unless told otherwise.
            "AIRFLOW__RUNWAY__ALLOW_PRIVATE_NETWORK": "True",
            # The example DAGs poll every 10 s by default; the emulated video is ready in about 4 s.
            "RUNWAY_POLL_INTERVAL": "1",
        }
        airflow(env, "db", "migrate")
        airflow(env, "pools", "set", "eachlabs", "10", "Eachlabs in-flight predictions", "--include-deferred")
        before = set(VIDEOS.rglob("*.mp4"))
        conf = {"destination": f"file://{VIDEOS}/daily/"}
        airflow(env, "dags", "test", DAG_ID, "-c", json.dumps(conf))
        written = sorted(set(VIDEOS.rglob("*.mp4")) - before, key=lambda p: p.stat().st_mtime)
        if not written:
            print(f"FAILED: no new MP4 under {VIDEOS}", file=sys.stderr)
            return 1
        video = written[-1]
        print(f"\nVideo written to {video} ({video.stat().st_size:,} bytes): {check_playable(video)}")
        return 0
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
