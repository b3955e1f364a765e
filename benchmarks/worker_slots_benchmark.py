"""Worker slots on a real deployment: the same N time-compressed predictions through five ways of waiting.

One LocalExecutor + PostgreSQL deployment from the e2e harness (``tests/fixtures/deployment.py``: api-server,
scheduler, dag-processor, two triggerers, the emulator and moto as processes of their own), whose executor is
``benchmarks/slot_timing_executor.py``: Airflow's LocalExecutor, whose worker processes append each workload's
busy interval to a JSONL file. Each mode is a DAG file of its own (``BODIES`` below), run N times at once (N DAG
runs), the same N and speed for each, after a warm-up run that puts one task on every worker process (not
measured). The full run's predictions are 400 s of real time (the API's 833 s compressed 2.1x; ``--real-seconds``):
a blocking mode's slot time is the prediction's length and ours is not, so the ratio between them is set by the
compression and is measured here near the real length, not extrapolated. ``--schedule`` lays the modes out in time:

* ``staggered`` (the full run's default): mode k+1's N runs are triggered once the emulator has seen mode k's N
  creates plus ``--settle`` seconds (10 s: ours' deferral exits are over), so no two modes' start-ups share the CPU,
  while the waits overlap: the part takes about 5 start-ups + one prediction + the tail (8.5 minutes with the
  deployment's start-up and warm-up) where one mode after another would take 5 predictions (~36 minutes);
* ``sequential``: one mode after another, each mode's runs waited for before the next mode's are triggered;
* ``concurrent`` (``--smoke``'s default): every mode's runs triggered at once.

When the modes overlap, the ``eachlabs`` pool has N slots per mode (ours' deferred tasks count in it) and the
executor N worker processes per mode (+2): the three blocking modes hold 3N for a whole prediction, and the
reschedule sensor's N pokes and our N resumes can come at the same moment. The emulator's in-flight cap is off;
it limits no request rate, so the seed's 1 s loops (N requests a second) are never answered 429. The modes:

* ``ours, deferrable``: :class:`RunwayGenerateVideoOperator` (creates, defers, resumes once to return);
* ``ours, deferrable=False``: the same operator waiting in its worker (the trigger's wait in the task process);
* ``seed's 1 s loop``: a ``@task`` that POSTs the create with ``requests`` then ``GET``s the status every second;
* ``HttpOperator + HttpSensor, reschedule``: the create, then ``HttpSensor(mode="reschedule")``, 30 s pokes;
* ``HttpOperator + HttpSensor, poke``: the same sensor in poke mode, 5 s pokes.

Measured per mode: worker slot-seconds (the sum of the executor's busy intervals: process start-up included,
unlike a task instance's ``running`` time), task starts (workloads the executor ran), API requests (the emulator's
per-prediction counts: creates, status reads, cancels), and wall time (the mode's first trigger to its last run's
end). Every task sits in the ``eachlabs`` pool. Each workload's slot time is split by its task log's timestamps
(:func:`phases`): boot (fork and interpreter until the task process' first line), parse (DAG bundle and file, start-up
details), code (``execute`` until the deferral, ``execute_complete``, a poke), exit (the deferral or XCom push, the
process' exit, the final state report). ``slow_exits`` counts workloads whose exit took ~5 s: Airflow 3.3's
supervisor (``_monitor_subprocess``) can read the task process' EOF on every socket before the process can be
reaped; it then ``select()``s on no sockets for ``[workers] min_heartbeat_interval`` (5 s) before it looks again
(with ``--stack-env AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL=1`` none take 5 s).

Ending the task in the trigger (``TaskSuccessEvent``, the ``end_from_trigger`` pattern) would remove the resume
workload (one task start and its slot time per prediction). Evaluated against the spend-safety contract
(``airflow_runway/ledger.py``, ``events.py``, ``operators/prediction.py``) on Airflow 3.3.2, and not adopted:

* XComs can be pushed: ``TaskSuccessEvent(xcoms={...})`` is written by ``handle_event_submit`` (``models/trigger.py``),
  so the result, ``video_url`` and ``predict_times`` (the history passed in at deferral) could be; a video is not
  thrown away on that path.
* Rule 7 cannot be kept: a success must delete the task's ``task_state_store`` record (``PredictionLedger.succeeded``)
  so that a user's clear makes a new video. A trigger cannot reach ``task_state_store`` in 3.3: the trigger runner's
  messages (``ToTriggerSupervisor`` in ``jobs/triggerer_job_runner.py``) cover connections, variables, XComs and the
  asset state store only. Left behind, the ``created`` record makes a cleared task return the old video (the e2e
  test ``test_clearing_a_succeeded_task_makes_a_new_prediction_and_video`` would fail); deleting it before the
  deferral would let a retry after a lost wait pay for a second prediction (rule 5).
* Failures must resume in the worker anyway: ``TaskFailedEvent`` goes through ``is_eligible_to_retry()``, so a
  non-retryable failure (rejected input, moderation, a timeout) would be retried with a new paid prediction where
  the operator fails with ``AirflowFailException``; ``check_result`` (a success without a video URL) likewise.
* Listeners do not run for tasks ending in the trigger (``dagbag.py`` warns); the key is not involved either way.

    python benchmarks/worker_slots_benchmark.py             # N=10, 400 s predictions (speed 2.1), staggered, ~9 min
    python benchmarks/worker_slots_benchmark.py --smoke     # N=2, 6 s predictions, every mode at once, ~1 minute
    python benchmarks/worker_slots_benchmark.py --real-seconds 70 --schedule sequential --out bench-results

Exits non-zero when a mode's runs do not all succeed. ``AIRFLOW_RUNWAY_KEEP_STACK_LOGS=1`` keeps the stack's logs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _path in (str(REPO), str(Path(__file__).resolve().parent)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from tests.fixtures import postgres  # noqa: E402
from tests.fixtures.deployment import PREDICTION_SECONDS, Deployment, deployment  # noqa: E402

EXECUTOR = "benchmarks.slot_timing_executor.SlotTimingLocalExecutor"
SLOTS_FILE_ENV = "AIRFLOW_RUNWAY_BENCH_SLOTS_FILE"
HTTP_CONN_ID = "eachlabs_http"
POOL = "eachlabs"
TERMINAL = ("success", "failed")


@dataclass(frozen=True)
class Mode:
    key: str
    dag_id: str
    label: str


MODES = (
    Mode("deferrable", "bench_slots_deferrable", "ours, deferrable"),
    Mode("sync", "bench_slots_sync", "ours, deferrable=False"),
    Mode("seed_loop", "bench_slots_seed_loop", "seed's 1 s loop (@task + requests)"),
    Mode("http_reschedule", "bench_slots_http_reschedule", "HttpOperator + HttpSensor, reschedule"),
    Mode("http_poke", "bench_slots_http_poke", "HttpOperator + HttpSensor, poke"),
)
BY_KEY = {mode.key: mode for mode in MODES}


#: How the modes' runs are laid out in time (see the module docstring).
SCHEDULES = ("staggered", "sequential", "concurrent")


@dataclass(frozen=True)
class Settings:
    """One run's sizes. Poll intervals are real seconds (not compressed): only the prediction is compressed."""

    predictions: int
    real_seconds: float  # a prediction's real duration: the API's 833 s divided by the speed
    reschedule_interval: float  # HttpSensor poke_interval in reschedule mode
    poke_interval: float  # HttpSensor poke_interval in poke mode
    operator: dict[str, Any]  # our operator's poll settings
    schedule: str  # one of SCHEDULES
    settle: float  # staggered: seconds after a mode's last create before the next mode's runs are triggered
    run_timeout: float

    @property
    def speed(self) -> float:
        return PREDICTION_SECONDS / self.real_seconds

    @property
    def overlapping(self) -> bool:
        """Whether several modes' runs are in flight at once (staggered, concurrent)."""
        return self.schedule != "sequential"

    def pool_slots(self, modes: int) -> int:
        """The ``eachlabs`` pool: N per mode in flight at once (deferred tasks count: ``include_deferred``)."""
        return self.predictions * (modes if self.overlapping else 1)

    def parallelism(self, modes: int) -> int:
        """LocalExecutor worker processes. Every blocking mode (``deferrable=False``, the seed's loop, the poke
        sensor) holds N at once for a whole prediction; when the modes overlap, those 3N, the reschedule sensor's
        N pokes (its N runs poke together) and our N resumes can all be running at one moment: N per mode, the
        pool's size, plus two spare."""
        return max(8, self.pool_slots(modes) + 2)


def settings_for(
    smoke: bool,
    predictions: int | None = None,
    real_seconds: float | None = None,
    schedule: str | None = None,
    settle: float | None = None,
) -> Settings:
    if schedule is not None and schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if smoke:
        real = real_seconds or 6.0
        return Settings(
            predictions=predictions or 2,
            real_seconds=real,
            reschedule_interval=3.0,
            poke_interval=2.0,
            operator={"poll_interval": 1, "max_poll_interval": 2, "expected_duration": real},
            schedule=schedule or "concurrent",
            settle=2.0 if settle is None else settle,
            run_timeout=240.0,
        )
    real = real_seconds or 400.0
    return Settings(
        predictions=predictions or 10,
        real_seconds=real,
        reschedule_interval=30.0,
        poke_interval=5.0,
        # The operator's defaults (a poll every 5 s around the expected finish, at most 120 s apart before),
        # with the expected duration a deployment learns from metrics.predict_time: the compressed one.
        operator={"expected_duration": real},
        schedule=schedule or "staggered",
        settle=10.0 if settle is None else settle,
        run_timeout=real * 1.5 + 180,
    )


#: What every mode's DAG file starts with; ``__SETTINGS__`` becomes a JSON string literal. One file per mode, so
#: a task parses only its own DAG and imports (as in a real deployment).
COMMON = '''
"""A worker-slot benchmark mode (generated by benchmarks/worker_slots_benchmark.py)."""

import json

import pendulum
from airflow.sdk import DAG

S = json.loads(__SETTINGS__)
FAILED = ("failed", "error", "cancelled", "canceled")


def prompt(dag_id):
    return "bench " + dag_id + " {{ run_id }}."


def create_body(prompt_text):
    return {
        "model": "runway",
        "version": "0.0.1",
        "input": {
            "promptText": prompt_text,
            "model": "gen3a_turbo",
            "ratio": "16:9",
            "duration": "5",
            "watermark": "false",
        },
    }


def dag(dag_id):
    return DAG(
        dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=S["predictions"],
        max_active_tasks=2 * S["predictions"],
        tags=["benchmark"],
    )
'''

#: Each mode's DAG, written the way a user would (``__KEY__`` becomes the mode's key).
BODIES = {
    "ours": """
from airflow_runway.operators.runway import RunwayGenerateVideoOperator

with dag(S["dags"]["__KEY__"]) as bench:
    RunwayGenerateVideoOperator(
        task_id="generate",
        prompt_text=prompt(S["dags"]["__KEY__"]),
        duration=5,
        pool=S["pool"],
        deferrable="__KEY__" == "deferrable",
        **S["operator"],
    )
""",
    "seed_loop": '''
import time

import requests
from airflow.sdk import BaseHook, task
from airflow.sdk.exceptions import AirflowFailException

with dag(S["dags"]["seed_loop"]) as bench:

    @task(task_id="generate", pool=S["pool"])
    def generate(prompt_text):
        """The seed's recipe: create, then read the status every second until it is final."""
        conn = BaseHook.get_connection("eachlabs_default")
        headers = {"X-API-Key": conn.password}
        created = requests.post(
            f"{conn.host}/v1/prediction/", json=create_body(prompt_text), headers=headers, timeout=30
        )
        created.raise_for_status()
        prediction_id = created.json()["predictionID"]
        while True:
            response = requests.get(f"{conn.host}/v1/prediction/{prediction_id}", headers=headers, timeout=30)
            response.raise_for_status()
            prediction = response.json()
            if prediction["status"] == "success":
                return prediction["output"]
            if prediction["status"] in FAILED:
                raise AirflowFailException(f"prediction {prediction_id} {prediction['status']}")
            time.sleep(1)

    generate(prompt(S["dags"]["seed_loop"]))
''',
    "http": """
from airflow.providers.http.operators.http import HttpOperator
from airflow.providers.http.sensors.http import HttpSensor
from airflow.sdk.exceptions import AirflowFailException


def finished(response):
    status = response.json()["status"]
    if status in FAILED:
        raise AirflowFailException(f"prediction {status}")
    return status == "success"


with dag(S["dags"]["__KEY__"]) as bench:
    create = HttpOperator(
        task_id="create",
        http_conn_id=S["http_conn_id"],
        endpoint="/v1/prediction/",
        method="POST",
        data=json.dumps(create_body(prompt(S["dags"]["__KEY__"]))),
        headers={"Content-Type": "application/json"},
        response_filter=lambda response: response.json()["predictionID"],
        pool=S["pool"],
    )
    wait = HttpSensor(
        task_id="wait",
        http_conn_id=S["http_conn_id"],
        endpoint="/v1/prediction/{{ ti.xcom_pull(task_ids='create') }}",
        method="GET",
        response_check=finished,
        mode=S["sensor_mode"]["__KEY__"],
        poke_interval=S["sensor_interval"]["__KEY__"],
        timeout=S["sensor_timeout"],
        pool=S["pool"],
    )
    create >> wait
""",
}
BODY_OF = {
    "deferrable": "ours",
    "sync": "ours",
    "seed_loop": "seed_loop",
    "http_reschedule": "http",
    "http_poke": "http",
}


#: Not measured: a task on every LocalExecutor worker process at once, before the modes. A worker's first workload
#: pays one-off imports (~3 s each under load, seen in the task log between "Pre Execute" and "DAG bundles
#: loaded"); in a long-running deployment the workers are warm, and without this the first mode would pay for all.
WARMUP_DAG_ID = "bench_slots_warmup"
WARMUP = """
import time

from airflow.sdk import task

with DAG(WARMUP_DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
         max_active_tasks=S["warmup_tasks"], tags=["benchmark"]) as warmup:

    @task
    def warm(index):
        time.sleep(3)

    warm.expand(index=list(range(S["warmup_tasks"])))
""".replace("WARMUP_DAG_ID", repr(WARMUP_DAG_ID))


def dag_files(settings: Settings, parallelism: int) -> dict[str, str]:
    """File name -> source of every mode's DAG file, and the warm-up's."""
    values = {
        "predictions": settings.predictions,
        "dags": {mode.key: mode.dag_id for mode in MODES},
        "pool": POOL,
        "http_conn_id": HTTP_CONN_ID,
        "operator": settings.operator,
        "sensor_mode": {"http_reschedule": "reschedule", "http_poke": "poke"},
        "sensor_interval": {"http_reschedule": settings.reschedule_interval, "http_poke": settings.poke_interval},
        "sensor_timeout": settings.run_timeout,
        "warmup_tasks": parallelism,
    }
    common = COMMON.replace("__SETTINGS__", repr(json.dumps(values)))
    files = {f"{mode.dag_id}.py": common + BODIES[BODY_OF[mode.key]].replace("__KEY__", mode.key) for mode in MODES}
    files[f"{WARMUP_DAG_ID}.py"] = common + WARMUP
    return files


# ------------------------------------------------------------------------------------------------ measuring


def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass
class ModeRun:
    mode: Mode
    run_ids: list[str]
    started: float  # wall clock at the first trigger
    deadline: float  # monotonic: runs not finished by then are "timed out"
    states: dict[str, str]
    ends: dict[str, float]  # run id -> wall clock at its end_date

    @property
    def done(self) -> bool:
        return len(self.states) == len(self.run_ids)

    @property
    def ended(self) -> float | None:
        """Wall clock at the last run's end, once every run has ended."""
        return max(self.ends.values()) if self.ends and len(self.ends) == len(self.run_ids) else None


def marker(mode: Mode) -> str:
    """What the mode's prompts contain, and no other mode's (the emulator's predictions are found by it)."""
    return f"bench {mode.dag_id} "


def trigger_mode(d: Deployment, mode: Mode, settings: Settings) -> ModeRun:
    """Trigger the mode's N DAG runs at once."""
    d.unpause(mode.dag_id)
    started = time.time()
    run_ids = [d.trigger(mode.dag_id) for _ in range(settings.predictions)]
    return ModeRun(mode, run_ids, started, time.monotonic() + settings.run_timeout, {}, {})


def wait_runs(d: Deployment, runs: list[ModeRun], progress: Callable[[str], None], interval: float = 2.0) -> None:
    """Wait until every run of ``runs`` has ended (or its mode's deadline passed). One list request per mode per
    ``interval`` (a run's end is its ``end_date``, not when it was seen), so the API server stays out of the way."""
    while not all(run.done for run in runs):
        time.sleep(interval)
        for run in runs:
            if run.done:
                continue
            found = {r["dag_run_id"]: r for r in d.runs(run.mode.dag_id)}
            for run_id in run.run_ids:
                state = (found.get(run_id) or {}).get("state")
                if run_id not in run.states and state in TERMINAL:
                    run.states[run_id] = str(state)
                    run.ends[run_id] = _epoch(found[run_id].get("end_date")) or time.time()
            if time.monotonic() > run.deadline:
                for run_id in run.run_ids:
                    run.states.setdefault(run_id, "timed out")
            if run.done:
                wall = f"{run.ended - run.started:.0f} s" if run.ended else "timed out"
                progress(f"    {run.mode.label}: {sorted(set(run.states.values()))}, wall {wall}")


def wait_creates(d: Deployment, run: ModeRun, settings: Settings, timeout: float = 180.0) -> float | None:
    """Seconds from the mode's first trigger until the emulator has seen its N creates (``None``: not all came)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(d.predictions(marker(run.mode))) >= settings.predictions:
            return time.time() - run.started
        time.sleep(0.5)
    return None


def read_slots(path: Path, timeout: float = 60.0) -> list[dict[str, Any]]:
    """The executor's finished workloads, once every workload it started is done (a DAG run is reported finished
    before its last worker has reaped the task process and returned)."""
    deadline = time.monotonic() + timeout
    while True:
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
        started = {r["id"] for r in records if r["event"] == "start"}
        ended = [r for r in records if r["event"] == "end"]
        if started <= {r["id"] for r in ended} or time.monotonic() > deadline:
            return ended
        time.sleep(0.5)


#: The task process' log lines that bound the phases of a workload (Airflow 3.3's task runner).
PRE_EXECUTE = "::group::Pre Execute"
POST_EXECUTE = "::group::Post Execute"
END_GROUP = "::endgroup::"
PHASES = ("boot", "parse", "code", "exit")


def _log_events(path: Path) -> list[tuple[float, str]]:
    """``(epoch seconds, event)`` of each JSON line of a task log, in order."""
    out: list[tuple[float, str]] = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError, AttributeError):
            item = json.loads(line)
            stamp = _epoch(item.get("timestamp"))
            if stamp is not None:
                out.append((stamp, str(item.get("event", ""))))
    return out


def phases(slot: dict[str, Any], events: list[tuple[float, str]]) -> dict[str, float]:
    """One workload's busy interval split by its task log lines (wall clock, the same machine):

    * ``boot``: slot taken until the task process' first line (``::group::Pre Execute``): the supervisor's fork,
      the interpreter and Airflow's imports;
    * ``parse``: until that group ends: DAG bundle, DAG file parse, the task's start-up details;
    * ``code``: until ``::group::Post Execute``: the operator's own code (``execute`` up to the deferral, or
      ``execute_complete``), or the sensor's poke;
    * ``exit``: the rest: XCom push or the deferral's trigger row, the process' exit, the final state report.
    """
    start, end = slot["wall_start"], slot["wall_end"]
    inside = [(t, e) for t, e in events if start - 0.05 <= t <= end + 0.05]
    marks = [start]
    for name in (PRE_EXECUTE, END_GROUP, POST_EXECUTE):
        after = [t for t, e in inside if e == name and t >= marks[-1]]
        marks.append(min(after) if after else marks[-1])
    marks.append(end)
    return {name: max(0.0, marks[i + 1] - marks[i]) for i, name in enumerate(PHASES)}


#: An ``exit`` phase this long is the supervisor's exit-detection race: it read the task process' EOF, but the
#: process was not reaped yet, so it slept in ``select()`` on no sockets for ``[workers] min_heartbeat_interval``.
SLOW_EXIT_S = 4.5


def workload_phases(d: Deployment, mode: Mode, slots: list[dict[str, Any]]) -> list[tuple[str, dict[str, float]]]:
    """``(kind, phases)`` of each workload: kind is the workload's rank within its task's try (``create`` for the
    first, ``resume`` for the second: our deferrable operator's ``execute`` and ``execute_complete``; a reschedule
    sensor's pokes are ``resume`` and ``other``)."""
    out: list[tuple[str, dict[str, float]]] = []
    by_task: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for slot in slots:
        by_task.setdefault((slot["run_id"], slot["task_id"], slot["try_number"]), []).append(slot)
    logs = d.stack.home / "logs" / f"dag_id={mode.dag_id}"
    for (run_id, task_id, try_number), workloads in by_task.items():
        workloads.sort(key=lambda s: s["start"])
        path = logs / f"run_id={run_id}" / f"task_id={task_id}" / f"attempt={try_number}.log"
        events = _log_events(path) if path.exists() else []
        for index, slot in enumerate(workloads):
            out.append(("create" if index == 0 else "resume" if index == 1 else "other", phases(slot, events)))
    return out


def summed(items: list[dict[str, float]]) -> dict[str, float]:
    return {name: round(sum(item[name] for item in items), 2) for name in PHASES}


def mode_row(d: Deployment, run: ModeRun, slots: list[dict[str, Any]], settings: Settings) -> dict[str, Any]:
    mine = [s for s in slots if s["dag_id"] == run.mode.dag_id]
    predictions = d.predictions(marker(run.mode))
    polls = sum(int(p.get("polls", 0)) for p in predictions)
    cancels = sum(int(p.get("cancel_requests", 0)) for p in predictions)
    slot_seconds = sum(s["end"] - s["start"] for s in mine)
    n = settings.predictions
    poll = {
        "deferrable": "ours: finish-aware, in the triggerer",
        "sync": "ours: finish-aware, in the worker",
        "seed_loop": "1 s",
        "http_reschedule": f"{settings.reschedule_interval:g} s",
        "http_poke": f"{settings.poke_interval:g} s",
    }[run.mode.key]
    per_workload = workload_phases(d, run.mode, mine)
    row: dict[str, Any] = {
        "mode": run.mode.label,
        "poll": poll,
        "slot_s": round(slot_seconds, 1),
        "slot_s_per_prediction": round(slot_seconds / n, 2),
        "task_starts": len(mine),
        "api_requests": len(predictions) + polls + cancels,
        "creates": len(predictions),
        "wall_s": round(run.ended - run.started, 1) if run.ended else None,
        "phases": summed([p for _, p in per_workload]),
        "slow_exits": sum(1 for _, p in per_workload if p["exit"] >= SLOW_EXIT_S),
    }
    row["startup_s"] = round(row["phases"]["boot"] + row["phases"]["parse"], 1)
    failed = {run_id: state for run_id, state in run.states.items() if state != "success"}
    if failed or len(predictions) != n:
        row["error"] = f"runs not successful: {failed}; {len(predictions)} creates for {n} predictions"
    if run.mode.key == "deferrable":
        kinds = sorted({kind for kind, _ in per_workload}, key=("create", "resume", "other").index)
        row["breakdown"] = {kind: summed([p for k, p in per_workload if k == kind]) for kind in kinds}
    row["workloads"] = [round(s["end"] - s["start"], 2) for s in sorted(mine, key=lambda s: s["start"])]
    return row


def run(
    smoke: bool,
    predictions: int | None = None,
    real_seconds: float | None = None,
    modes: list[str] | None = None,
    progress: Callable[[str], None] = print,
    stack_env: dict[str, str] | None = None,
    schedule: str | None = None,
    settle: float | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run the modes on one deployment; returns the table's rows and facts about the run (sizes, timings).

    ``schedule``: ``staggered`` (the full run's default), ``sequential`` or ``concurrent`` (the smoke's default);
    ``settle``: staggered, the seconds after a mode's N creates before the next mode is triggered.
    ``stack_env``: more Airflow settings for every component (an experiment, e.g.
    ``AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL``), recorded in the facts.
    """
    settings = settings_for(smoke, predictions, real_seconds, schedule, settle)
    chosen = [BY_KEY[key] for key in (modes or [m.key for m in MODES])]
    pg_server_url = os.environ.get("AIRFLOW_RUNWAY_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432")
    postgres.ensure_running(pg_server_url)
    base = REPO / ".bench-tmp"
    base.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="worker-slots-", dir=base))
    slots_file = workdir / "slots.jsonl"
    facts: dict[str, Any] = {
        "predictions": settings.predictions,
        "prediction_real_s": settings.real_seconds,
        "speed": round(settings.speed, 2),
        "reschedule_interval_s": settings.reschedule_interval,
        "poke_interval_s": settings.poke_interval,
        "operator": settings.operator,
        "schedule": settings.schedule,
        "settle_s": settings.settle,
        "parallelism": settings.parallelism(len(chosen)),
        "pool_slots": settings.pool_slots(len(chosen)),
        "stack_env": stack_env or {},
    }
    begin = time.monotonic()
    rows: list[dict[str, Any]] = []
    with deployment(
        "bench",
        "LocalExecutor",
        workdir,
        pg_server_url,
        extra_dags=dag_files(settings, settings.parallelism(len(chosen))),
        extra_env={
            "AIRFLOW__CORE__EXECUTOR": EXECUTOR,
            SLOTS_FILE_ENV: str(slots_file),
            "PYTHONPATH": str(REPO),
            # The executor pre-forks this many worker processes.
            "AIRFLOW__CORE__PARALLELISM": str(settings.parallelism(len(chosen))),
            **(stack_env or {}),
        },
    ) as d:
        facts["startup_s"] = round(time.monotonic() - begin, 1)
        d.sampler.stopped.set()  # the e2e sampler's REST polling is not needed here
        progress(f"    deployment up in {facts['startup_s']:.0f} s")
        runs = _measure(d, chosen, settings, progress, facts)
        slots = read_slots(slots_file)
        for mode_run in runs:
            rows.append(mode_row(d, mode_run, slots, settings))
    facts["total_s"] = round(time.monotonic() - begin, 1)
    return rows, facts


def _measure(
    d: Deployment, modes: list[Mode], settings: Settings, progress: Callable[[str], None], facts: dict[str, Any]
) -> list[ModeRun]:
    d.configure_speed(settings.real_seconds)
    # No in-flight cap: up to N x modes predictions are in flight at once. The emulator limits nothing else (no
    # request rate), so the seed's 1 s loops are never answered 429.
    d.emulator.configure(max_in_flight=None)
    slots = settings.pool_slots(len(modes))
    d.stack.request("PATCH", f"/api/v2/pools/{POOL}", {"name": POOL, "slots": slots, "include_deferred": True})
    # The HttpOperator/HttpSensor modes' connection: the emulator, its key as a header (the HttpHook sends the
    # connection's extra as headers), created the way a user would, once the emulator's URL is known.
    d.stack.request(
        "POST",
        "/api/v2/connections",
        {
            "connection_id": HTTP_CONN_ID,
            "conn_type": "http",
            "host": d.emulator.url,
            "extra": json.dumps({"X-API-Key": d.canary}),
        },
    )
    for dag_id in (WARMUP_DAG_ID, *(mode.dag_id for mode in modes)):
        d.wait_parsed(dag_id)
    began = time.monotonic()
    warm_run = d.trigger(WARMUP_DAG_ID)
    if d.wait_run(WARMUP_DAG_ID, warm_run, 300) != "success":
        raise RuntimeError(f"the warm-up run {warm_run} failed")
    facts["warmup_s"] = round(time.monotonic() - began, 1)
    progress(f"    warm-up (a task on every worker process, not measured) in {facts['warmup_s']:.0f} s")
    began = time.monotonic()
    runs: list[ModeRun] = []
    if settings.schedule == "concurrent":
        runs = [trigger_mode(d, mode, settings) for mode in modes]
        wait_runs(d, runs, progress)
    elif settings.schedule == "sequential":
        for mode in modes:
            runs.append(trigger_mode(d, mode, settings))
            wait_runs(d, runs[-1:], progress)
    else:
        # Staggered: the next mode's runs once this mode's N predictions are created and its start-ups (ours: the
        # deferral's exit) are over, so start-ups never share the CPU; the waits overlap.
        facts["creates_s"] = {}
        for index, mode in enumerate(modes):
            runs.append(trigger_mode(d, mode, settings))
            created = wait_creates(d, runs[-1], settings)
            facts["creates_s"][mode.key] = None if created is None else round(created, 1)
            offset = runs[-1].started - runs[0].started
            progress(
                f"    {mode.label}: {settings.predictions} runs triggered at +{offset:.0f} s, "
                + (f"created in {created:.0f} s" if created is not None else "NOT all created in time")
            )
            if index < len(modes) - 1:
                time.sleep(settings.settle)
        wait_runs(d, runs, progress)
    facts["measure_s"] = round(time.monotonic() - began, 1)
    return runs


# ------------------------------------------------------------------------------------------------ reporting

COLUMNS = (
    "mode",
    "poll",
    "slot_s",
    "slot_s_per_prediction",
    "x_ours",
    "task_starts",
    "startup_s",
    "slow_exits",
    "api_requests",
    "wall_s",
    "error",
)


def with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``x_ours``: each mode's slot-seconds over our deferrable mode's."""
    ours = next((r for r in rows if r["mode"] == BY_KEY["deferrable"].label and "error" not in r), None)
    for row in rows:
        if ours and ours["slot_s"] and "error" not in row:
            row["x_ours"] = round(row["slot_s"] / ours["slot_s"], 1)
    return rows


def goals(rows: list[dict[str, Any]]) -> dict[str, bool]:
    """The issue's goals: our slot-seconds at most 1/50 of the seed's loop and of the poke sensor; fewer task starts
    than the reschedule sensor."""
    good = {r["mode"]: r for r in rows if "error" not in r}
    ours = good.get(BY_KEY["deferrable"].label)
    out: dict[str, bool] = {}
    if ours is None:
        return {"our deferrable mode ran": False}
    for key in ("seed_loop", "http_poke"):
        other = good.get(BY_KEY[key].label)
        if other:
            out[
                f"slot-seconds {ours['slot_s']:g} <= 1/50 of {BY_KEY[key].label}'s {other['slot_s']:g} "
                f"(1/{other['slot_s'] / ours['slot_s']:.1f})"
            ] = ours["slot_s"] * 50 <= other["slot_s"]
    resched = good.get(BY_KEY["http_reschedule"].label)
    if resched:
        out[f"task starts {ours['task_starts']} < {resched['task_starts']} of {resched['mode']}"] = (
            ours["task_starts"] < resched["task_starts"]
        )
    return out


def notes(rows: list[dict[str, Any]], facts: dict[str, Any]) -> list[str]:
    """Where our worker time goes, the supervisor's slow exits, and the goals at the real duration (extrapolated,
    not measured)."""
    good = {r["mode"]: r for r in rows if "error" not in r}
    ours = good.get(BY_KEY["deferrable"].label)
    lines = [
        f"{facts['predictions']} predictions per mode, each {facts['prediction_real_s']:g} s of real time "
        f"(the API's {PREDICTION_SECONDS:g} s compressed {facts['speed']:g}x); poll intervals are not compressed; "
        f"modes {SCHEDULE_TEXT.get(facts.get('schedule', ''), facts.get('schedule'))}"
        + (f" (settle {facts['settle_s']:g} s)" if facts.get("schedule") == "staggered" else "")
        + f"; {facts.get('parallelism')} worker processes, pool of {facts.get('pool_slots')}; deployment start-up "
        f"{facts.get('startup_s')} s, warm-up {facts.get('warmup_s')} s, modes {facts.get('measure_s')} s, "
        f"whole part {facts.get('total_s')} s."
    ]
    if ours and "breakdown" in ours:
        b = ours["breakdown"]
        total = sum(sum(v.values()) for v in b.values()) or 1.0
        share = {
            "start-up (fork, boot, DAG parse)": sum(v["boot"] + v["parse"] for v in b.values()),
            "create (execute until the deferral)": b["create"]["code"],
            "resume (execute_complete)": b.get("resume", {}).get("code", 0.0),
            "exit (deferral/XCom, process exit, state report)": sum(v["exit"] for v in b.values()),
        }
        lines.append(
            f"where our deferrable mode's {ours['slot_s']:g} slot-s go: "
            + ", ".join(f"{name} {sec:.1f} s ({100 * sec / total:.0f}%)" for name, sec in share.items())
        )
        if "resume" in b:
            resume = sum(b["resume"].values())
            lines.append(
                f"end_from_trigger (TaskSuccessEvent) would save the resume workloads: {resume:.1f} s "
                f"({100 * resume / total:.0f}%) and {facts['predictions']} of {ours['task_starts']} task starts; not "
                f"adopted: an Airflow 3.3 trigger cannot reach task_state_store, so success could not close the "
                f"ledger record (a clear would return the old video), and TaskFailedEvent would retry non-retryable "
                f"failures with a new paid prediction (see the module docstring)"
            )
    slow = sum(r.get("slow_exits", 0) for r in good.values())
    if slow:
        lines.append(
            f"{slow} of {sum(r['task_starts'] for r in good.values())} workloads (all modes) spent ~5 s after their "
            f"task process' last line: Airflow's supervisor read the process' EOF before it could reap it, then "
            f"slept in select() on no sockets for [workers] min_heartbeat_interval (5 s)"
        )
    if ours:
        real = facts["prediction_real_s"]
        mine = ours["slot_s_per_prediction"]
        for key in ("seed_loop", "http_poke"):
            other = good.get(BY_KEY[key].label)
            if other:
                # A blocking mode's slot time grows with the prediction (its wait); ours does not.
                at_real = other["slot_s_per_prediction"] - real + PREDICTION_SECONDS
                lines.append(
                    f"at the real {PREDICTION_SECONDS:g} s (extrapolated, not measured): {BY_KEY[key].label} "
                    f"~{at_real:.0f} slot-s per prediction vs ours {mine:g} (1/{at_real / mine:.0f})"
                )
    return lines


SCHEDULE_TEXT = {
    "staggered": "staggered (the next mode's runs once the last one's predictions were all created; waits overlap)",
    "sequential": "one after another",
    "concurrent": "all at once",
}

BREAKDOWN_COLUMNS = ("workload", "boot", "parse", "code", "exit", "total", "per_task")


def breakdown_rows(rows: list[dict[str, Any]], predictions: int) -> list[dict[str, Any]]:
    """Our deferrable mode's slot seconds by workload and phase (see :func:`phases`), as table rows."""
    ours = next((r for r in rows if r["mode"] == BY_KEY["deferrable"].label and "breakdown" in r), None)
    if ours is None:
        return []
    names = {"create": "create (execute -> defer)", "resume": "resume (execute_complete)", "other": "other"}
    out = []
    for kind, values in ours["breakdown"].items():
        total = sum(values.values())
        out.append(
            {
                "workload": names[kind],
                **{k: round(v, 1) for k, v in values.items()},
                "total": round(total, 1),
                "per_task": round(total / predictions, 2),
            }
        )
    return out


def plot(rows: list[dict[str, Any]], title: str, path: Path) -> None:
    """Slot-seconds per mode (log scale), task starts and API requests, as horizontal bars."""
    import math

    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    good = [r for r in rows if "error" not in r]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), gridspec_kw={"width_ratios": [2, 1, 1]})
    names = [r["mode"] for r in good]
    colors = ["tab:green" if r["mode"].startswith("ours") else "tab:gray" for r in good]
    for ax, metric, log in zip(axes, ("slot_s", "task_starts", "api_requests"), (True, False, True), strict=True):
        values = [r[metric] or 0 for r in good]
        ax.barh(names, values, color=colors)
        for y, value in enumerate(values):
            ax.annotate(f"{value:g}", (value, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
        ax.set_title(f"{metric}{' (log)' if log else ''}", fontsize=10)
        if log and values and min(values) > 0:
            ax.set_xscale("log")
            ax.set_xlim(10 ** math.floor(math.log10(min(values))), 10 ** math.ceil(math.log10(max(values) * 2)))
            ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        else:
            ax.set_xlim(0, max(values or [1]) * 1.2)
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=8)
        if ax is not axes[0]:
            ax.set_yticklabels([])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def title(facts: dict[str, Any]) -> str:
    return (
        f"1. Worker slots (LocalExecutor + PostgreSQL; {facts['predictions']} predictions per mode, "
        f"{facts['prediction_real_s']:g} s each = {PREDICTION_SECONDS:g} s compressed {facts['speed']:g}x)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="N=2, ~6 s predictions, the modes at the same time")
    parser.add_argument("--predictions", type=int, help="N, predictions per mode (default 10; smoke 2)")
    parser.add_argument(
        "--real-seconds", type=float, help="a prediction's real duration, sets the speed (default 400; smoke 6)"
    )
    parser.add_argument(
        "--schedule", choices=SCHEDULES, help="how the modes' runs overlap (default staggered; smoke concurrent)"
    )
    parser.add_argument(
        "--settle", type=float, help="staggered: seconds after a mode's N creates before the next mode (default 10)"
    )
    parser.add_argument("--modes", nargs="+", choices=[m.key for m in MODES], help="a subset of the modes")
    parser.add_argument("--out", type=Path, help="write worker_slots.json and worker_slots.png here")
    parser.add_argument(
        "--stack-env", nargs="+", default=[], metavar="KEY=VALUE", help="more Airflow settings for the deployment"
    )
    args = parser.parse_args()
    from table import print_table

    stack_env = dict(item.split("=", 1) for item in args.stack_env)
    rows, facts = run(
        args.smoke,
        args.predictions,
        args.real_seconds,
        args.modes,
        stack_env=stack_env,
        schedule=args.schedule,
        settle=args.settle,
    )
    rows = with_ratios(rows)
    print(f"\n{title(facts)}\n")
    print_table(rows, COLUMNS)
    for goal, met in goals(rows).items():
        print(f"  {'met' if met else 'NOT MET'}: {goal}")
    for line in notes(rows, facts):
        print(f"  - {line}")
    if breakdown := breakdown_rows(rows, facts["predictions"]):
        print("\nOur deferrable mode's slot seconds by workload and phase (all tasks):\n")
        print_table(breakdown, BREAKDOWN_COLUMNS)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "worker_slots.json").write_text(json.dumps({"facts": facts, "rows": rows}, indent=2))
        plot(rows, title(facts), args.out / "worker_slots.png")
    return 0 if rows and all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
