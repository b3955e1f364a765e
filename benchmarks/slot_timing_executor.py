"""A LocalExecutor that records when each of its worker slots is busy, for ``worker_slots_benchmark.py``.

Configured as ``[core] executor = benchmarks.slot_timing_executor.SlotTimingLocalExecutor`` on the benchmark's
deployment only (the repo root is on the components' ``PYTHONPATH``). It behaves exactly as Airflow's
``LocalExecutor``: the same worker processes run the same loop (``local_executor._run_worker``); the only
difference is that, inside each worker process, ``BaseExecutor.run_workload`` (which supervises one workload: fork
the task process, boot it, run the task code, report the outcome) is wrapped so the worker appends one JSON line
when it takes a workload and one when it is done with it, to the file named by ``AIRFLOW_RUNWAY_BENCH_SLOTS_FILE``::

    {"event": "start", "id"}
    {"event": "end", "id", "dag_id", "task_id", "run_id", "map_index", "try_number", "kind", "pid",
     "start", "end", "wall_start", "wall_end", "exit_code"}

(a DAG run is reported finished before its last worker is done: a reader waits until every start has its end).

``start``/``end`` are ``time.monotonic()`` (the machine's CLOCK_MONOTONIC, comparable across processes); the
interval is the time a worker slot was taken by that workload (the worker picks the next one right after).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

from airflow.executors import local_executor
from airflow.executors.base_executor import BaseExecutor
from airflow.executors.local_executor import LocalExecutor

SLOTS_FILE_ENV = "AIRFLOW_RUNWAY_BENCH_SLOTS_FILE"
_run_worker = local_executor._run_worker


def _write(record: dict[str, Any]) -> None:
    # One short line per write with O_APPEND: lines of concurrent workers never interleave.
    with open(os.environ[SLOTS_FILE_ENV], "a") as out:
        out.write(json.dumps(record, default=str) + "\n")


def _record(key: str, workload: Any, start: float, end: float, wall_start: float, exit_code: Any) -> None:
    ti = getattr(workload, "ti", None)
    record = {
        "event": "end",
        "id": key,
        "dag_id": getattr(ti, "dag_id", None),
        "task_id": getattr(ti, "task_id", None),
        "run_id": getattr(ti, "run_id", None),
        "map_index": getattr(ti, "map_index", None),
        "try_number": getattr(ti, "try_number", None),
        "kind": type(workload).__name__,
        "pid": os.getpid(),
        "start": start,
        "end": end,
        "wall_start": wall_start,
        "wall_end": wall_start + (end - start),
        "exit_code": exit_code,
    }
    _write(record)


def _timed_run_worker(*args: Any, **kwargs: Any) -> None:
    """The LocalExecutor's worker loop, with ``BaseExecutor.run_workload`` timed in this worker process only."""
    run_workload = BaseExecutor.run_workload

    def timed(workload: Any, **options: Any) -> Any:
        wall_start, start = time.time(), time.monotonic()
        key = uuid.uuid4().hex
        _write({"event": "start", "id": key})
        exit_code: Any = "exception"
        try:
            exit_code = run_workload(workload, **options)
            return exit_code
        finally:
            _record(key, workload, start, time.monotonic(), wall_start, exit_code)

    BaseExecutor.run_workload = staticmethod(timed)  # type: ignore[method-assign]
    _run_worker(*args, **kwargs)


class SlotTimingLocalExecutor(LocalExecutor):
    """Airflow's LocalExecutor whose worker processes record each workload's busy interval (see the module)."""

    def _spawn_worker(self) -> None:
        # LocalExecutor._spawn_worker starts ``local_executor._run_worker``: point it at the timed loop while it
        # starts the process (the scheduler's main thread spawns workers, one at a time).
        local_executor._run_worker = _timed_run_worker
        try:
            super()._spawn_worker()
        finally:
            local_executor._run_worker = _run_worker
