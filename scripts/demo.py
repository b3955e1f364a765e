"""Run the `runway_daily_video` example DAG end to end against the bundled emulator (``make demo``).

It starts the emulator (no key, no internet), gives Airflow a throw-away home with a SQLite metadata
database under ``.demo/``, creates the ``eachlabs`` pool the DAGs use, runs one DAG run with
``airflow dags test`` (deferred tasks run their trigger in-process), then checks that the stored video is a
playable MP4 and prints where it is.

Airflow's own output goes to ``.demo/airflow.log``. The story printed instead is read from what the run
leaves behind rather than from log lines: the predictions the emulator received and their status (its admin
API), and the task instances and XComs in the metadata database, watched while the run goes on (a deferral,
which ``airflow dags test`` never commits, is read from the task runner's log line).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import IO, Any
from urllib.request import urlopen

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / ".demo"
VIDEOS = DEMO / "videos"
AIRFLOW_HOME = DEMO / "airflow"
METADATA_DB = AIRFLOW_HOME / "airflow.db"
LOG = DEMO / "airflow.log"
API_KEY = "demo-key"  # the emulator's key: not a real Eachlabs key
DAG_ID = "runway_daily_video"
WATCH_EVERY = 0.1  # seconds between two looks at the emulator and the metadata DB
#: Task states worth a line; queued/scheduled come and go too fast to matter here.
TASK_STATES = {
    "running": "running",
    "deferred": "deferred (the worker slot is free; the trigger polls the prediction)",
    "success": "succeeded",
    "up_for_retry": "failed, will retry",
    "failed": "FAILED",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str) -> Any:
    with urlopen(url, timeout=2) as response:
        return json.load(response)


def wait_until_up(url: str, process: subprocess.Popen[bytes], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the emulator exited with code {process.returncode}: see {LOG}")
        try:
            get_json(f"{url}/_emulator/stats")
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the emulator did not answer at {url} within {seconds:.0f}s")


def airflow(env: dict[str, str], log: IO[bytes], *args: str) -> subprocess.Popen[bytes]:
    """Start ``airflow <args>`` with its output appended to the log."""
    log.write(f"\n+ airflow {' '.join(args)}\n".encode())
    log.flush()
    return subprocess.Popen([sys.executable, "-m", "airflow", *args], env=env, stdout=log, stderr=subprocess.STDOUT)


def airflow_ok(env: dict[str, str], log: IO[bytes], *args: str) -> None:
    if airflow(env, log, *args).wait() != 0:
        raise SystemExit(f"`airflow {' '.join(args)}` failed: see {LOG}")


@contextmanager
def metadata_db() -> Iterator[sqlite3.Connection]:
    """A read-only connection to the demo's metadata DB (Airflow writes it meanwhile)."""
    with closing(sqlite3.connect(f"file:{METADATA_DB}?mode=ro", uri=True, timeout=1)) as conn:
        yield conn


def last_dag_run_id() -> int:
    with metadata_db() as db:
        return int(db.execute("SELECT COALESCE(MAX(id), 0) FROM dag_run WHERE dag_id = ?", (DAG_ID,)).fetchone()[0])


class Story:
    """Prints what happens, once each, with the time since the DAG run was started."""

    def __init__(self, emulator_url: str, after_dag_run: int) -> None:
        self.emulator_url = emulator_url
        self.after_dag_run = after_dag_run
        self.start = time.monotonic()
        self.predictions: dict[str, str] = {}
        self.tries: dict[str, int] = {}  # task id -> its latest try number seen
        self.told: set[tuple[str, int, str]] = set()  # (task id, try number, state) already printed
        self.stored: dict[str, Any] | None = None
        self.deferred: list[str] = []  # deferral lines of this look, told after its predictions
        self.log_offset = LOG.stat().st_size

    def say(self, text: str) -> None:
        print(f"{time.monotonic() - self.start:6.1f}s  {text}", flush=True)

    def look(self) -> None:
        # Told in the order things happen: a task runs, creates its prediction, then defers.
        with suppress(sqlite3.OperationalError):  # locked by a write in progress: look again next time
            self._tasks()
        self._predictions()
        self._deferrals()
        for line in self.deferred:
            self.say(line)
        self.deferred.clear()

    def _predictions(self) -> None:
        for record in get_json(f"{self.emulator_url}/_emulator/predictions"):
            pid, status = record["id"], record["status"]
            if pid not in self.predictions:
                given = record["input"]
                self.say(
                    f"prediction {pid} created: {record['model']} {given.get('model')}, {given.get('ratio')}, "
                    f"{given.get('duration')} s, prompt {given.get('promptText')!r}"
                )
            elif self.predictions[pid] != status:
                detail = f"{record['elapsed']:.0f} s after create in emulated time"
                if record["terminal"] and record["metrics"]:
                    metrics = record["metrics"]
                    detail += f"; render time {metrics.get('predict_time')} s, cost {metrics.get('cost')}"
                self.say(f"prediction {pid} status: {status} ({detail})")
            self.predictions[pid] = status

    def _deferrals(self) -> None:
        # `airflow dags test` may keep the deferred state uncommitted while it runs the trigger in-process, so the
        # metadata DB may never show it: the task runner's own log line does.
        with LOG.open("rb") as log:
            log.seek(self.log_offset)
            lines = log.read().decode(errors="replace").splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines.pop()  # a line still being written: read it whole next time
        for line in lines:
            self.log_offset += len(line.encode())
            if "Pausing task as DEFERRED" in line:
                task = re.search(r"\btask_id=(\S+)", line)
                self._task_state(task.group(1) if task else "?", "deferred")

    def _task_state(self, task_id: str, state: str, try_number: int | None = None) -> None:
        """One line per task, try and state: the DB and the log may both show a deferral, and a task resumed
        after its deferral runs again within the same try."""
        if try_number is not None:
            self.tries[task_id] = try_number
        told = (task_id, self.tries.get(task_id, 0), state)
        if state in TASK_STATES and told not in self.told:
            self.told.add(told)
            line = f"task {task_id}: {TASK_STATES[state]}"
            if state == "deferred":
                self.deferred.append(line)
            else:
                self.say(line)

    def _tasks(self) -> None:
        with metadata_db() as db:
            rows = db.execute(
                "SELECT ti.task_id, ti.state, ti.try_number, r.id FROM task_instance ti JOIN dag_run r"
                " ON r.dag_id = ti.dag_id AND r.run_id = ti.run_id WHERE r.dag_id = ? AND r.id > ?",
                (DAG_ID, self.after_dag_run),
            ).fetchall()
            for task_id, state, try_number, _ in rows:
                self._task_state(task_id, state, try_number)
            if self.stored is None and rows:
                found = db.execute(
                    "SELECT value FROM xcom WHERE dag_run_id = ? AND task_id = 'store' AND key = 'return_value'",
                    (rows[0][3],),
                ).fetchone()
                if found:
                    self.stored = json.loads(found[0])
                    self.say(
                        f"stored {self.stored['uri']} ({self.stored['size']:,} bytes, "
                        f"sha256 {self.stored['sha256'][:12]}...)"
                    )


def check_playable(path: Path) -> str:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return f"{stream.codec_context.name} {stream.width}x{stream.height}, {frames} frames decoded"


def run_dag(env: dict[str, str], log: IO[bytes], emulator_url: str) -> bool:
    """Run the DAG once, telling its story; ``True`` when ``airflow dags test`` succeeded."""
    story = Story(emulator_url, last_dag_run_id())
    conf = {"destination": f"file://{VIDEOS}/daily/"}
    print(f"{0.0:6.1f}s  DAG run of {DAG_ID} started (airflow dags test, conf {json.dumps(conf)})", flush=True)
    process = airflow(env, log, "dags", "test", DAG_ID, "-c", json.dumps(conf))
    while process.poll() is None:
        story.look()
        time.sleep(WATCH_EVERY)
    story.look()
    story.say(f"DAG run {'succeeded' if process.returncode == 0 else 'FAILED'}")
    return process.returncode == 0


def airflow_env(emulator_url: str) -> dict[str, str]:
    """Airflow's settings for the demo: its own home and SQLite DB, the repo's DAGs, the emulator's connection."""
    return {
        **os.environ,
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{METADATA_DB}",
        "AIRFLOW_CONN_EACHLABS_DEFAULT": json.dumps(
            {"conn_type": "eachlabs", "host": emulator_url, "password": API_KEY}
        ),
        # The emulator's output URLs are on loopback, which the transfer refuses unless told otherwise.
        "AIRFLOW__RUNWAY__ALLOW_PRIVATE_NETWORK": "True",
        # The example DAGs poll every 10 s by default; the emulated video is ready in about 4 s.
        "RUNWAY_POLL_INTERVAL": "1",
    }


def main() -> int:
    VIDEOS.mkdir(parents=True, exist_ok=True)
    AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    before = set(VIDEOS.rglob("*.mp4"))
    with LOG.open("wb") as log:
        print(f"airflow-runway demo: the {DAG_ID} example DAG against the local Eachlabs emulator at {url}")
        print(f"Full Airflow log: {LOG}")
        # 833 s, the typical Runway time, played 200x faster: the prediction takes about 4 s.
        emulator = subprocess.Popen(
            [sys.executable, "-m", "airflow_runway.emulator", "--port", str(port), "--api-key", API_KEY,
             "--duration", "833", "--speed", "200"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_until_up(url, emulator)
            env = airflow_env(url)
            airflow_ok(env, log, "db", "migrate")
            airflow_ok(
                env, log, "pools", "set", "eachlabs", "10", "Eachlabs in-flight predictions", "--include-deferred"
            )
            print(f"Airflow ready: metadata DB {METADATA_DB} migrated, pool 'eachlabs' (10 slots, deferred included)")
            succeeded = run_dag(env, log, url)
        finally:
            emulator.terminate()
            emulator.wait(timeout=10)
    written = sorted(set(VIDEOS.rglob("*.mp4")) - before, key=lambda p: p.stat().st_mtime)
    if not succeeded or not written:
        print(f"FAILED: {'no new MP4 under ' + str(VIDEOS) if succeeded else 'the DAG run failed'}: see {LOG}")
        return 1
    video = written[-1]
    print(f"\nVideo written to {video} ({video.stat().st_size:,} bytes): {check_playable(video)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
