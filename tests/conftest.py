"""Session set-up and shared fixtures.

Fixtures (all opt-in: a test pays only for what it names):

``airflow_db``           (session) a fresh PostgreSQL database with Airflow's schema; yields its SQLAlchemy URL.
``emulator``             (function) the Eachlabs emulator, reset to its initial settings for each test.
``eachlabs_connection``  (function) ``eachlabs_default`` pointing at ``emulator`` (env var); yields the conn id.
``hook_factory``         (function) ``hook_factory(**kwargs)`` builds an ``EachlabsHook``.
``moto_s3``              (session) a moto S3 server on loopback (:class:`tests.fixtures.s3.MotoS3Server`).
``s3_bucket``            (function) a fresh bucket on it plus the ``aws_moto`` connection (:class:`S3Bucket`).
``dags_folder``          (session) the session's dags folder (the ``dags-folder`` bundle ``dag.test()`` parses);
                         the repo's ``dags/`` is linked into it as ``project/``.
``dag_from_source``      (function) ``dag_from_source(dag_id, source)`` writes a DAG file there, returns its DAG.
``project_dag``          (function) ``project_dag(dag_id)`` loads one of the repo's example DAGs from there.
Both DAG fixtures include ``airflow_db``: call ``.test()`` on what they return (see tests/fixtures/dags.py for why
a DAG must be in the dags folder).

Connections in plain pytest: outside a running task, Airflow 3.2+'s Task SDK resolves ``BaseHook.get_connection``
and ``await BaseHook.aget_connection`` through ``ensure_secrets_backend_loaded()``, which (no ``SUPERVISOR_COMMS``,
no ``_AIRFLOW_PROCESS_CONTEXT``) falls back to the environment-variables backend plus any configured external
backend, never the metadata DB and never an API server. An ``AIRFLOW_CONN_<ID>`` env var set with monkeypatch is
therefore all a hook needs; it is read on every lookup (the SDK's connection cache is only enabled in the DAG
processor), so each test sees its own value. Inside ``dag.test()`` the task's lookups go through the in-process
execution API, whose first backend is the same environment-variables backend.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import dags, postgres, s3, session_env

# Runs when pytest loads this file: before any test module (or tests/*/conftest.py) is imported, hence before
# the session's first `import airflow` -- which is when Airflow reads AIRFLOW_HOME and the database URL.
SESSION_ENV = session_env.configure()
session_env.install_network_guard()
dags.link_project_dags(SESSION_ENV.dags_folder)

EACHLABS_CONN_ID = "eachlabs_default"
MOTO_CONN_ID = "aws_moto"


def pytest_unconfigure(config: pytest.Config) -> None:
    session_env.cleanup(SESSION_ENV)


# ---- Airflow metadata database ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[str]:
    """Create the session's database (``airflow_runway_test_<pid>``), build Airflow's schema once, drop it at the end.

    Starts the local PostgreSQL cluster if it is down. Every test of the session that asks for this fixture shares
    the database: use unique DAG ids (or clean up) where runs could collide.
    """
    postgres.ensure_running(SESSION_ENV.pg_server_url)
    postgres.create_database(SESSION_ENV.pg_server_url, SESSION_ENV.db_name)
    try:
        postgres.init_airflow_db()
        yield SESSION_ENV.db_url
    finally:
        postgres.dispose_orm()
        postgres.drop_database(SESSION_ENV.pg_server_url, SESSION_ENV.db_name)


@pytest.fixture(scope="session")
def dags_folder() -> Path:
    return SESSION_ENV.dags_folder


@pytest.fixture
def dag_from_source(airflow_db: str) -> Iterator[Callable[[str, str], Any]]:
    written: list[Path] = []

    def make(dag_id: str, source: str) -> Any:
        path, dag = dags.write_dag(SESSION_ENV.dags_folder, dag_id, source)
        written.append(path)
        return dag

    yield make
    for path in written:
        path.unlink(missing_ok=True)


@pytest.fixture
def project_dag(airflow_db: str) -> Callable[..., Any]:
    """``project_dag(dag_id, file=None)``: an example DAG from the repo's ``dags/<file or dag_id>.py``."""

    def load(dag_id: str, file: str | None = None) -> Any:
        return dags.load_dag(SESSION_ENV.dags_folder / "project" / (file or f"{dag_id}.py"), dag_id)

    return load


# ---- Eachlabs emulator ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def emulator_config() -> Any:
    """The emulator's settings at the start of every test."""
    from airflow_runway.emulator import EmulatorConfig

    # 10 emulated seconds at 100x: a prediction succeeds 0.1 s after creation unless a test configures otherwise.
    return EmulatorConfig(api_key="test-key", duration=10, speed=100)


@pytest.fixture(scope="session")
def emulator_server(emulator_config: Any) -> Iterator[Any]:
    from airflow_runway.emulator import EmulatorServer

    with EmulatorServer(emulator_config, port=0) as server:
        yield server


@pytest.fixture
def emulator(emulator_server: Any, emulator_config: Any) -> Any:
    """The session's emulator with no predictions, faults or counters, and its initial settings back."""
    emulator_server.reset()  # reset() keeps settings: put the initial ones back too
    emulator_server.configure(**dataclasses.asdict(emulator_config))
    return emulator_server


@pytest.fixture
def eachlabs_connection(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """``eachlabs_default`` = the emulator's URL and key, as an ``AIRFLOW_CONN_EACHLABS_DEFAULT`` env var."""
    conn = {"conn_type": "eachlabs", "host": emulator.url, "password": emulator.api_key}
    monkeypatch.setenv(f"AIRFLOW_CONN_{EACHLABS_CONN_ID.upper()}", json.dumps(conn))
    return EACHLABS_CONN_ID


@pytest.fixture
def hook_factory() -> Callable[..., Any]:
    """``hook_factory(**kwargs)`` -> ``EachlabsHook(**kwargs)`` (the default connection unless told otherwise)."""
    from airflow_runway.hooks.eachlabs import EachlabsHook

    return lambda **kwargs: EachlabsHook(**kwargs)


# ---- S3 (moto server) -------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[s3.MotoS3Server]:
    server = s3.MotoS3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_s3: s3.MotoS3Server, monkeypatch: pytest.MonkeyPatch) -> s3.S3Bucket:
    """A new empty bucket and the ``aws_moto`` connection (key/secret + ``endpoint_url`` extra) that reaches it."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{MOTO_CONN_ID.upper()}", moto_s3.connection_json())
    return s3.create_bucket(moto_s3, MOTO_CONN_ID)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"AIRFLOW_HOME={os.environ['AIRFLOW_HOME']} (metadata DB, when used: {SESSION_ENV.db_name})"]
