"""The UI plugin: how Airflow finds it, the byte ranges it serves, and what it reads from rendered fields."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.testclient import TestClient

from airflow_runway.get_provider_info import get_provider_info
from airflow_runway.ui import media
from airflow_runway.ui.plugin import RunwayVideosPlugin
from airflow_runway.ui.records import describe_input


def test_plugin_is_declared_in_the_provider_info_and_as_an_entry_point():
    (declared,) = get_provider_info()["plugins"]
    assert declared == {"name": "runway_videos", "plugin-class": "airflow_runway.ui.plugin.RunwayVideosPlugin"}
    (entry,) = [e for e in entry_points(group="airflow.plugins") if e.name == "runway_videos"]
    assert entry.load() is RunwayVideosPlugin


def test_providers_manager_and_plugins_manager_load_the_plugin():
    from airflow import plugins_manager
    from airflow.providers_manager import ProvidersManager

    assert "airflow_runway.ui.plugin.RunwayVideosPlugin" in {p.plugin_class for p in ProvidersManager().plugins}
    plugins_manager.ensure_plugins_loaded()
    if hasattr(plugins_manager, "_get_plugins"):  # Airflow >= 3.3: cached loader
        plugins, errors = plugins_manager._get_plugins()
    else:  # Airflow 3.2: module globals
        plugins, errors = plugins_manager.plugins, plugins_manager.import_errors
    assert [p for p in plugins or [] if isinstance(p, RunwayVideosPlugin)], errors
    views = {view["url_route"]: view for view in RunwayVideosPlugin.external_views}
    assert views["runway-videos"]["destination"] == "nav"
    assert views["runway-video"]["destination"] == "task_instance"
    for placeholder in ("{DAG_ID}", "{RUN_ID}", "{TASK_ID}", "{MAP_INDEX}"):
        assert placeholder in views["runway-video"]["href"]
    (app,) = RunwayVideosPlugin.fastapi_apps
    assert app["url_prefix"] == "/runway"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, 999)),
        ("bytes=990-5000", (990, 999)),  # clipped to the end
        ("bytes=-10", (990, 999)),  # the last 10 bytes
        ("bytes=-5000", (0, 999)),
        ("bytes=0-1,5-6", None),  # several ranges: the whole body is a valid answer
        ("items=0-1", None),
    ],
)
def test_parse_range(header, expected):
    byte_range = media.parse_range(header, 1000)
    assert (byte_range and (byte_range.start, byte_range.end)) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5-4", "bytes=-0"])
def test_unsatisfiable_range_is_416(header):
    with pytest.raises(HTTPException) as raised:
        media.parse_range(header, 1000)
    assert raised.value.status_code == 416
    assert raised.value.headers == {"Content-Range": "bytes */1000"}


@pytest.fixture
def stored_file(tmp_path: Path) -> tuple[TestClient, bytes]:
    body = bytes(range(256)) * 1200  # 300 KiB: more than one read chunk
    (tmp_path / "video.mp4").write_bytes(body)
    app = FastAPI()

    @app.get("/media")
    def serve(request: Request):
        return media.stream_stored_copy((tmp_path / "video.mp4").as_uri(), None, request.headers.get("range"))

    @app.get("/gone")
    def gone(request: Request):
        return media.stream_stored_copy((tmp_path / "missing.mp4").as_uri(), None, None)

    return TestClient(app), body


def test_stored_copy_whole_and_ranges(stored_file):
    client, body = stored_file
    whole = client.get("/media")
    assert (whole.status_code, whole.content) == (200, body)
    assert whole.headers["accept-ranges"] == "bytes"
    part = client.get("/media", headers={"Range": "bytes=262140-262150"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 262140-262150/{len(body)}"
    assert part.content == body[262140:262151]
    assert client.get("/media", headers={"Range": f"bytes={len(body)}-"}).status_code == 416
    assert client.get("/gone").status_code == 404


@pytest.mark.parametrize("url", ["http://cdn.example.com/v.mp4", "file:///etc/passwd", "ftp://127.0.0.1/v.mp4"])
def test_output_url_must_be_https_or_loopback_http(url):
    with pytest.raises(HTTPException):
        media.check_output_url(url)
    media.check_output_url("https://cdn.example.com/v.mp4?X-Amz-Signature=abc")
    media.check_output_url("http://127.0.0.1:8089/v1/outputs/x.mp4")


def test_describe_input_reads_the_typed_operators_fields():
    rendered = {
        "model": "runway",
        "version": "0.0.1",
        "input": {},
        "prompt_text": "a lighthouse",
        "runway_model": "gen4_turbo",
        "ratio": "9:16",
        "duration": "5",
        "seed": "42",
    }
    assert describe_input(rendered) == {
        "prompt": "a lighthouse",
        "model": "gen4_turbo",
        "ratio": "9:16",
        "duration": "5",
        "seed": "42",
    }


def test_describe_input_reads_a_generic_input_and_a_model_field():
    generic = {"model": "runway", "input": {"promptText": "a fox", "model": "gen3a_turbo", "ratio": "16:9"}}
    assert describe_input(generic)["prompt"] == "a fox" and describe_input(generic)["model"] == "gen3a_turbo"
    # Template fields named after the constructor's arguments: ``model`` is then Runway's model.
    assert describe_input({"prompt_text": "x", "model": "gen4_turbo"})["model"] == "gen4_turbo"
    assert describe_input({})["seed"] is None
