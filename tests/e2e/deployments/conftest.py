"""``make e2e``: the example DAGs on two real Airflow deployments (LocalExecutor, CeleryExecutor), every component
a process of its own, under faults and load (see tests/fixtures/deployment.py and tests/fixtures/scenarios.py).

The ``deployment`` fixture (module scope, one parameter per executor) starts a deployment, runs every scenario on
it, scans it for the canary key, tears it down, then hands the tests the outcomes to assert on. The table of
outcomes is written to ``build/e2e/report.md`` and printed at the end of the session.

Deselected from ``make test`` (``-m "not deployment"`` in pyproject's addopts); ``make e2e`` selects it.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import postgres
from tests.fixtures.deployment import deployment
from tests.fixtures.scenarios import Orchestra, table

BUILD = Path(__file__).resolve().parents[3] / "build" / "e2e"
REPORT = BUILD / "report.md"
WORK = BUILD / "work"
_TABLES: list[str] = []
EXECUTORS = {"local": "LocalExecutor", "celery": "CeleryExecutor"}


def pytest_configure(config: pytest.Config) -> None:
    # A SIGTERM (CI cancelling the job, `timeout`) becomes KeyboardInterrupt, so the fixture's teardown still stops
    # every process the deployment started, by process id.
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/e2e/deployments/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.deployment)


@pytest.fixture(autouse=True)
def _metadata_db() -> None:
    """Overrides tests/e2e's session database: each deployment builds its own."""


@pytest.fixture(scope="module", params=list(EXECUTORS))
def deployed(request: pytest.FixtureRequest) -> Iterator[Orchestra]:
    name = str(request.param)
    pg_server_url = os.environ.get("AIRFLOW_RUNWAY_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432")
    postgres.ensure_running(pg_server_url)
    WORK.mkdir(parents=True, exist_ok=True)
    begin = time.monotonic()
    # Not pytest's tmp_path: concurrent pytest sessions of the same user prune each other's old basetemp dirs.
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=WORK))
    with deployment(name, EXECUTORS[name], workdir, pg_server_url) as running:
        orchestra = Orchestra(running)
        orchestra.timings["start-up (schema + every component healthy)"] = time.monotonic() - begin
        try:
            orchestra.fault_phase()
            orchestra.load_phase()
            running.sampler.stopped.set()
            running.scan_live_secrets()
            running.scan_stored_secrets()
        finally:
            orchestra.timings["deployment total"] = time.monotonic() - begin
            title = f"{name}: {EXECUTORS[name]}, 2 triggerers" + (", 2 Celery workers" if name == "celery" else "")
            _TABLES.append(table(title, orchestra))
            REPORT.parent.mkdir(parents=True, exist_ok=True)
            REPORT.write_text("\n".join(_TABLES))
    yield orchestra  # torn down already: the tests assert on what the scenarios collected


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _TABLES:
        terminalreporter.section("e2e deployments")
        terminalreporter.write("\n".join(_TABLES))
        terminalreporter.write(f"\n(written to {REPORT})\n")
