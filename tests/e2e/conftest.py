"""DAG-level tests: every test here runs against the session's real PostgreSQL metadata database."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _metadata_db(airflow_db: str) -> None:
    """Create and migrate the database (once per session) before the first e2e test."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/e2e/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.e2e)
