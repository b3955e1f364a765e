"""A local emulator of the Eachlabs prediction API, faithful to ``/work/shared/eachlabs-api.md``.

It lets the demo run and the tests pass with no API key and no internet::

    from airflow_runway.emulator import EmulatorConfig, EmulatorServer

    with EmulatorServer(EmulatorConfig(api_key="test-key", duration=10, speed=100)) as emu:
        emu.url                                   # the base URL for an Airflow connection's host
        emu.inject(route="get", kind="http", status=503, times=2, retry_after=1)
        emu.stats()["gets"]

Contract endpoints: ``POST /v1/prediction[/]``, ``GET /v1/prediction/{id}[/]``,
``POST /v1/prediction/{id}/cancel[/]`` and ``GET /v1/outputs/{id}.mp4`` (a real MP4 rendered with PyAV).
Admin endpoints under ``/_emulator/``: ``config``, ``reset``, ``stats``, ``faults``, ``predictions[/{id}]``,
``advance``. Run it standalone with ``python -m airflow_runway.emulator --help``.
"""

from airflow_runway.emulator.config import EmulatorConfig
from airflow_runway.emulator.server import EmulatorClient, EmulatorError, EmulatorServer

__all__ = ["EmulatorClient", "EmulatorConfig", "EmulatorError", "EmulatorServer"]
