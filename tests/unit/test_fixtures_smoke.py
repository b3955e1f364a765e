"""Smoke tests of the shared test infrastructure (tests/conftest.py, tests/fixtures/)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.fixtures import session_env


def test_session_runs_in_a_throwaway_airflow_home():
    from airflow.configuration import conf

    home = Path(os.environ["AIRFLOW_HOME"])
    assert home.name.startswith("airflow-runway-test-home-") and home.is_dir()
    assert conf.getboolean("core", "load_examples") is False
    assert conf.getboolean("core", "unit_test_mode") is True
    assert conf.get("database", "sql_alchemy_conn").endswith(f"/airflow_runway_test_{os.getpid()}")


def test_only_loopback_connections_are_allowed():
    assert socket.socket.connect.__name__ == "connect" and socket.socket.connect.__module__ == session_env.__name__
    assert session_env._is_loopback("127.0.0.1") and session_env._is_loopback("::1")
    assert session_env._is_loopback("127.8.9.10") and session_env._is_loopback("localhost")
    assert not session_env._is_loopback("10.0.0.1")
    assert not session_env._is_loopback("8.8.8.8")
    assert not session_env._is_loopback("example.com")


def test_airflow_db_is_a_migrated_postgres_database(airflow_db):
    from airflow import settings
    from sqlalchemy import inspect, text

    engine = settings.engine
    assert engine is not None and airflow_db.startswith("postgresql") and engine.dialect.name == "postgresql"
    tables = set(inspect(engine).get_table_names())
    assert {"connection", "slot_pool", "dag_run", "task_instance", "alembic_version"} <= tables
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pool FROM slot_pool")).scalars().all() == ["default_pool"]


def test_dag_test_runs_a_deferred_task_inline(dag_from_source):
    """dag.test() on the session DB: a deferrable sensor's trigger runs in-process, then the task resumes."""
    from airflow.utils.state import DagRunState

    dag = dag_from_source(
        "fixtures_smoke_deferral",
        """
        from datetime import timedelta

        from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor
        from airflow.sdk import DAG, task

        with DAG("fixtures_smoke_deferral", schedule=None) as dag:
            wait = TimeDeltaSensor(task_id="wait", delta=timedelta(seconds=0.5), deferrable=True)

            @task
            def after() -> str:
                return "done"

            wait >> after()
        """,
    )
    dag_run = dag.test()
    assert dag_run.state == DagRunState.SUCCESS
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states == {"wait": "success", "after": "success"}


def test_s3_bucket_round_trips_through_object_storage_path(s3_bucket):
    path = s3_bucket.path("videos/clip.mp4")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    assert path.exists() and path.read_bytes().startswith(b"\x00\x00\x00\x18ftyp")
    assert s3_bucket.keys() == ["videos/clip.mp4"]  # really stored on the moto server
    assert s3_bucket.read("videos/clip.mp4") == path.read_bytes()


async def test_eachlabs_connection_resolves_sync_and_async(eachlabs_connection, emulator):
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(eachlabs_connection)
    aconn = await BaseHook.aget_connection(eachlabs_connection)
    for c in (conn, aconn):
        assert (c.conn_type, c.host, c.password) == ("eachlabs", emulator.url, "test-key")


def test_emulator_is_reset_between_tests_first(emulator):
    emulator.configure(duration=999)
    emulator.inject(route="get", kind="http", status=503)


def test_emulator_is_reset_between_tests_second(emulator):
    assert emulator.config.duration == 10 and emulator.pending_faults() == []
    assert emulator.stats().get("creates", 0) == 0


def test_missing_connection_is_not_found():
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    with pytest.raises(AirflowNotFoundException):
        BaseHook.get_connection("no_such_connection")
