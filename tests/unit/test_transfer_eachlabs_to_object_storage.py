"""EachlabsToObjectStorageOperator against a scripted HTTP source on loopback, local files and moto S3.

The source here is a tiny stdlib server whose every answer is scripted (status, type, length, truncation,
redirects), so each check of the operator is driven exactly; the integration tests use the project emulator.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest
from airflow.sdk import Asset, AssetAlias, ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_runway.transfers import DownloadError, DownloadRejectedError, EachlabsToObjectStorageOperator
from airflow_runway.transfers import eachlabs_to_object_storage as transfer_module
from airflow_runway.transfers.eachlabs_to_object_storage import SIDECAR_SUFFIX, redact_url

SIGNATURE = "X-Amz-Signature=deadbeefcafe0123456789&Expires=99"


# ---------------------------------------------------------------------------------------------- HTTP source


@dataclass
class Route:
    """How the source answers one path."""

    body: bytes = b""
    content_type: str | None = "video/mp4"
    status: int = 200
    #: "auto" sends the real length, None sends none (body ends at connection close), an int lies.
    content_length: int | str | None = "auto"
    #: close the connection after this many body bytes.
    truncate_after: int | None = None
    #: answer the first N requests with ``fail_status`` (and ``retry_after``) instead.
    fail_first: int = 0
    fail_status: int = 503
    retry_after: str | None = None
    redirect_to: str | None = None
    #: requests after this one (1-based) are answered normally even when truncating.
    truncate_times: int = 10**9
    requests: int = field(default=0, compare=False)


class SourceServer:
    """A loopback HTTP server with scripted routes; counts the requests per path."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                route = routes.get(path)
                if route is None:
                    self.send_error(404)
                    return
                route.requests += 1
                if route.requests <= route.fail_first:
                    self.send_response(route.fail_status)
                    if route.retry_after is not None:
                        self.send_header("Retry-After", route.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if route.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", route.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(route.status)
                if route.content_type is not None:
                    self.send_header("Content-Type", route.content_type)
                if route.content_length == "auto":
                    self.send_header("Content-Length", str(len(route.body)))
                elif route.content_length is not None:
                    self.send_header("Content-Length", str(route.content_length))
                self.end_headers()
                body = route.body
                if route.truncate_after is not None and route.requests <= route.truncate_times:
                    body = body[: route.truncate_after]
                try:
                    self.wfile.write(body)
                    self.wfile.flush()
                except OSError:
                    pass
                if route.truncate_after is not None:
                    self.connection.shutdown(socket.SHUT_RDWR)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def add(self, path: str, route: Route) -> str:
        self.routes[path] = route
        return f"{self.url}{path}?{SIGNATURE}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def source() -> Iterator[SourceServer]:
    server = SourceServer()
    yield server
    server.close()


def video(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(f"video-{seed}".encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(op: EachlabsToObjectStorageOperator, outlet_events: OutletEventAccessors | None = None) -> dict[str, Any]:
    """Execute as a worker would after templating: with a context holding the outlet event accessors."""
    context = {"outlet_events": outlet_events if outlet_events is not None else OutletEventAccessors()}
    return op.execute(cast(Any, context))


def operator(**kwargs: Any) -> EachlabsToObjectStorageOperator:
    kwargs.setdefault("task_id", f"store_{uuid.uuid4().hex[:8]}")
    kwargs.setdefault("allow_insecure_http", True)
    kwargs.setdefault("retry_wait", 0.01)
    kwargs.setdefault("retry_max_wait", 0.05)
    return EachlabsToObjectStorageOperator(**kwargs)


def result_of(prediction_id: str | None, url: str) -> dict[str, Any]:
    return {"prediction_id": prediction_id, "status": "success", "video_url": url, "outputs": [url], "metrics": {}}


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


# ---------------------------------------------------------------------------------------------- local files


def test_streams_to_a_local_directory_named_after_the_prediction(source: SourceServer, tmp_path: Path):
    body = video(300_000)
    url = source.add("/v1/outputs/pred-1.mp4", Route(body=body))
    out = tmp_path / "videos"
    result = run(operator(source=result_of("pred-1", url), destination=f"file://{out}/", chunk_size=4096))

    stored = out / "pred-1.mp4"
    assert stored.read_bytes() == body
    assert result == {
        "uri": f"file://{stored}",
        "sha256": sha(body),
        "size": len(body),
        "content_type": "video/mp4",
        "prediction_id": "pred-1",
        "source_url": f"{source.url}/v1/outputs/pred-1.mp4",
        "uploaded": True,
    }
    sidecar = json.loads((out / f"pred-1.mp4{SIDECAR_SUFFIX}").read_text())
    assert sidecar == {
        "sha256": sha(body),
        "size": len(body),
        "source_url": f"{source.url}/v1/outputs/pred-1.mp4",
        "prediction_id": "pred-1",
        "content_type": "video/mp4",
    }
    assert listing(out) == ["pred-1.mp4", f"pred-1.mp4{SIDECAR_SUFFIX}"]  # no temporary sibling left


def test_plain_url_source_keeps_the_signature_out_of_logs_results_and_sidecar(
    source: SourceServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
):
    masked: list[str] = []
    monkeypatch.setattr(transfer_module, "mask_secret", lambda secret, name=None: masked.append(secret))
    caplog.set_level(logging.INFO)  # Airflow's default task log level (urllib3 logs full URLs at DEBUG)
    url = source.add("/files/clip%20one.mp4", Route(body=video(1000), content_type="video/mp4; codecs=avc1"))
    result = run(operator(source=url, destination=f"{tmp_path}/"))

    assert result["uri"] == f"file://{tmp_path}/clip one.mp4"
    assert result["prediction_id"] is None
    assert result["content_type"] == "video/mp4"
    everything = caplog.text + "".join(capsys.readouterr()) + json.dumps(result)
    everything += (tmp_path / f"clip one.mp4{SIDECAR_SUFFIX}").read_text()
    assert "deadbeefcafe" not in everything
    assert "Streaming" in everything
    assert masked == [SIGNATURE]  # and Airflow's secrets masker redacts it from any other log line


def test_templated_destination_and_a_conn_id_free_local_path(source: SourceServer, tmp_path: Path):
    url = source.add("/v1/outputs/p.mp4", Route(body=video(10)))
    op = operator(source=result_of("p", url), destination=f"file://{tmp_path}/{{{{ ds }}}}/{{{{ params.n }}}}.mp4")
    op.render_template_fields(cast(Any, {"ds": "2026-11-24", "params": {"n": 3}}))
    assert run(op)["uri"] == f"file://{tmp_path}/2026-11-24/3.mp4"
    assert (tmp_path / "2026-11-24" / "3.mp4").read_bytes() == video(10)


def test_object_storage_path_destination(source: SourceServer, tmp_path: Path):
    url = source.add("/v1/outputs/p.mp4", Route(body=video(10)))
    (tmp_path / "existing_dir").mkdir()
    result = run(operator(source=result_of("p", url), destination=ObjectStoragePath(f"file://{tmp_path}/existing_dir")))
    assert result["uri"] == f"file://{tmp_path}/existing_dir/p.mp4"


def test_rerun_for_the_same_prediction_does_not_download_again(source: SourceServer, tmp_path: Path):
    body = video(50_000)
    route = Route(body=body)
    url = source.add("/v1/outputs/pred-2.mp4", route)
    first = run(operator(source=result_of("pred-2", url), destination=f"{tmp_path}/"))
    stat = (tmp_path / "pred-2.mp4").stat()

    second = run(operator(source=result_of("pred-2", url), destination=f"{tmp_path}/"))
    assert route.requests == 1
    assert second == {**first, "uploaded": False}
    after = (tmp_path / "pred-2.mp4").stat()
    assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)


def test_same_content_from_another_prediction_is_hashed_but_not_rewritten(source: SourceServer, tmp_path: Path):
    body = video(40_000)
    run(operator(source=result_of("a", source.add("/a.mp4", Route(body=body))), destination=f"{tmp_path}/v.mp4"))
    stat = (tmp_path / "v.mp4").stat()

    route_b = Route(body=body)
    result = run(operator(source=result_of("b", source.add("/b.mp4", route_b)), destination=f"{tmp_path}/v.mp4"))
    assert route_b.requests == 1  # downloaded while hashing
    assert result["uploaded"] is False
    after = (tmp_path / "v.mp4").stat()
    assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert json.loads((tmp_path / f"v.mp4{SIDECAR_SUFFIX}").read_text())["prediction_id"] == "b"
    assert listing(tmp_path) == ["v.mp4", f"v.mp4{SIDECAR_SUFFIX}"]


def test_changed_content_replaces_the_object_and_its_sidecar(source: SourceServer, tmp_path: Path):
    run(operator(source=result_of("a", source.add("/a.mp4", Route(body=video(100)))), destination=f"{tmp_path}/v.mp4"))
    new = video(200, seed=1)
    result = run(
        operator(source=result_of("b", source.add("/b.mp4", Route(body=new))), destination=f"{tmp_path}/v.mp4")
    )
    assert result["uploaded"] is True
    assert (tmp_path / "v.mp4").read_bytes() == new
    assert json.loads((tmp_path / f"v.mp4{SIDECAR_SUFFIX}").read_text())["sha256"] == sha(new)


def test_an_object_that_no_longer_matches_its_sidecar_is_downloaded_again(source: SourceServer, tmp_path: Path):
    body = video(1000)
    route = Route(body=body)
    url = source.add("/p.mp4", route)
    run(operator(source=result_of("p", url), destination=f"{tmp_path}/v.mp4"))
    (tmp_path / "v.mp4").write_bytes(b"tampered")
    result = run(operator(source=result_of("p", url), destination=f"{tmp_path}/v.mp4"))
    assert route.requests == 2
    assert result["uploaded"] is True
    assert (tmp_path / "v.mp4").read_bytes() == body


def test_existing_object_without_sidecar_is_replaced(source: SourceServer, tmp_path: Path):
    (tmp_path / "v.mp4").write_bytes(b"old")
    body = video(500)
    result = run(
        operator(source=result_of("p", source.add("/p.mp4", Route(body=body))), destination=f"{tmp_path}/v.mp4")
    )
    assert result["uploaded"] is True
    assert (tmp_path / "v.mp4").read_bytes() == body


def test_source_dying_mid_stream_leaves_nothing_and_is_transient(source: SourceServer, tmp_path: Path):
    route = Route(body=video(200_000), truncate_after=50_000)
    url = source.add("/p.mp4", route)
    out = tmp_path / "out"
    with pytest.raises(DownloadError) as excinfo:
        run(operator(source=result_of("p", url), destination=f"{out}/", max_attempts=3, chunk_size=1024))
    assert not isinstance(excinfo.value, AirflowFailException)  # Airflow's task retries still apply
    assert route.requests == 3
    assert "deadbeefcafe" not in str(excinfo.value)
    assert listing(out) == []  # no final object, no .partial sibling, no sidecar


def test_a_truncated_attempt_is_retried_from_scratch(source: SourceServer, tmp_path: Path):
    body = video(100_000)
    route = Route(body=body, truncate_after=30_000, truncate_times=1)
    result = run(operator(source=result_of("p", source.add("/p.mp4", route)), destination=f"{tmp_path}/"))
    assert route.requests == 2
    assert result["sha256"] == sha(body)
    assert (tmp_path / "p.mp4").read_bytes() == body
    assert listing(tmp_path) == ["p.mp4", f"p.mp4{SIDECAR_SUFFIX}"]


@pytest.mark.parametrize(("status", "retry_after"), [(503, None), (429, "0"), (500, None), (408, None)])
def test_transient_statuses_are_retried(source: SourceServer, tmp_path: Path, status: int, retry_after: str | None):
    route = Route(body=video(100), fail_first=2, fail_status=status, retry_after=retry_after)
    result = run(operator(source=result_of("p", source.add("/p.mp4", route)), destination=f"{tmp_path}/"))
    assert route.requests == 3
    assert result["uploaded"] is True


def test_transient_faults_exhaust_the_attempts(source: SourceServer, tmp_path: Path):
    route = Route(body=video(100), fail_first=10, fail_status=502)
    with pytest.raises(DownloadError, match="HTTP 502"):
        run(operator(source=result_of("p", source.add("/p.mp4", route)), destination=f"{tmp_path}/", max_attempts=2))
    assert route.requests == 2
    assert listing(tmp_path) == []


@pytest.mark.parametrize("status", [403, 404, 410, 401])
def test_permanent_statuses_fail_at_once(source: SourceServer, tmp_path: Path, status: int):
    route = Route(body=b"denied", status=status, content_type="text/plain")
    with pytest.raises(DownloadRejectedError, match=f"HTTP {status}") as excinfo:
        run(operator(source=result_of("p", source.add("/p.mp4", route)), destination=f"{tmp_path}/"))
    assert isinstance(excinfo.value, AirflowFailException)
    assert route.requests == 1
    assert "deadbeefcafe" not in str(excinfo.value)
    assert listing(tmp_path) == []


def test_connection_refused_is_transient(tmp_path: Path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/p.mp4?{SIGNATURE}"
    with pytest.raises(DownloadError, match="Cannot reach") as excinfo:
        run(operator(source=url, destination=f"{tmp_path}/", max_attempts=2))
    assert not isinstance(excinfo.value, AirflowFailException)
    assert "deadbeefcafe" not in str(excinfo.value)


def test_content_length_over_the_limit_fails_before_writing(source: SourceServer, tmp_path: Path):
    route = Route(body=video(5000))
    with pytest.raises(DownloadRejectedError, match="over max_size_bytes=4096"):
        run(operator(source=source.add("/p.mp4", route), destination=f"{tmp_path}/", max_size_bytes=4096))
    assert route.requests == 1
    assert listing(tmp_path) == []


def test_body_without_content_length_is_counted_while_streaming(source: SourceServer, tmp_path: Path):
    route = Route(body=video(50_000), content_length=None)
    with pytest.raises(DownloadRejectedError, match="larger than max_size_bytes=10000"):
        run(operator(source=source.add("/p.mp4", route), destination=f"{tmp_path}/", max_size_bytes=10_000))
    assert route.requests == 1
    assert listing(tmp_path) == []


def test_body_without_content_length_under_the_limit_is_stored(source: SourceServer, tmp_path: Path):
    body = video(9_000)
    route = Route(body=body, content_length=None)
    result = run(operator(source=source.add("/p.mp4", route), destination=f"{tmp_path}/", max_size_bytes=10_000))
    assert result["size"] == len(body)


def test_content_length_announcing_more_than_is_sent_is_a_truncation(source: SourceServer, tmp_path: Path):
    route = Route(body=video(1000), content_length=5000)
    with pytest.raises(DownloadError):
        run(operator(source=source.add("/p.mp4", route), destination=f"{tmp_path}/", max_attempts=1))
    assert listing(tmp_path) == []


@pytest.mark.parametrize("content_type", ["text/html", "application/json; charset=utf-8", None])
def test_wrong_content_type_fails_at_once(source: SourceServer, tmp_path: Path, content_type: str | None):
    route = Route(body=b"<html>", content_type=content_type)
    with pytest.raises(DownloadRejectedError, match="Content-Type"):
        run(operator(source=source.add("/p.mp4", route), destination=f"{tmp_path}/"))
    assert route.requests == 1
    assert listing(tmp_path) == []


def test_allowed_content_types_are_configurable(source: SourceServer, tmp_path: Path):
    url = source.add("/p.mp4", Route(body=b"x" * 10, content_type="application/octet-stream"))
    op = operator(source=url, destination=f"{tmp_path}/", allowed_content_types=("video/*", "application/octet-stream"))
    assert run(op)["content_type"] == "application/octet-stream"


@pytest.mark.parametrize("url", ["http://example.com/v.mp4", "http://10.0.0.5/v.mp4", "http://[fe80::1]/v.mp4"])
def test_plain_http_from_a_network_host_is_refused_by_default(tmp_path: Path, url: str):
    op = EachlabsToObjectStorageOperator(task_id="store", source=url, destination=f"{tmp_path}/")
    assert op.allow_insecure_http is False
    with pytest.raises(DownloadRejectedError, match="allow_insecure_http"):
        run(op)  # refused before any connection is attempted (the test session blocks non-loopback sockets)
    assert list(tmp_path.iterdir()) == []


def test_plain_http_from_loopback_is_accepted_by_default(source: SourceServer, tmp_path: Path):
    route = Route(body=video(10))
    op = EachlabsToObjectStorageOperator(
        task_id="store", source=source.add("/p.mp4", route), destination=f"{tmp_path}/"
    )
    assert op.allow_insecure_http is False
    assert run(op)["size"] == 10
    assert route.requests == 1


@pytest.mark.parametrize("url", ["ftp://example.com/v.mp4", "file:///etc/passwd", "s3://bucket/v.mp4"])
def test_non_http_sources_are_refused(tmp_path: Path, url: str):
    with pytest.raises(DownloadRejectedError, match="Refusing"):
        run(operator(source=url, destination=f"{tmp_path}/"))


def test_redirects_are_followed_within_the_limit(source: SourceServer, tmp_path: Path):
    body = video(100)
    final = source.add("/final.mp4", Route(body=body))
    hop = source.add("/hop.mp4", Route(redirect_to=final))
    result = run(
        operator(source=result_of("p", source.add("/start.mp4", Route(redirect_to=hop))), destination=f"{tmp_path}/")
    )
    assert result["sha256"] == sha(body)
    assert result["source_url"] == f"{source.url}/start.mp4"


def test_too_many_redirects_fail(source: SourceServer, tmp_path: Path):
    source.add("/loop.mp4", Route(redirect_to="/loop.mp4"))
    with pytest.raises(DownloadRejectedError, match="max_redirects=2"):
        run(operator(source=f"{source.url}/loop.mp4", destination=f"{tmp_path}/", max_redirects=2))
    assert source.routes["/loop.mp4"].requests == 3


def test_redirect_to_a_disallowed_scheme_is_refused(source: SourceServer, tmp_path: Path):
    source.add("/r.mp4", Route(redirect_to="file:///etc/passwd"))
    with pytest.raises(DownloadRejectedError, match="Refusing"):
        run(operator(source=f"{source.url}/r.mp4", destination=f"{tmp_path}/"))


def test_result_without_an_output_url_fails(tmp_path: Path):
    with pytest.raises(DownloadRejectedError, match="no output URL"):
        run(
            operator(
                source={"prediction_id": "p", "status": "failed", "video_url": None, "outputs": []},
                destination=f"{tmp_path}/",
            )
        )


def test_file_name_is_required_when_the_url_has_none(source: SourceServer, tmp_path: Path):
    with pytest.raises(AirflowFailException, match="file name"):
        run(operator(source=f"{source.url}/", destination=f"{tmp_path}/"))


def test_outputs_list_is_used_when_video_url_is_missing(source: SourceServer, tmp_path: Path):
    url = source.add("/p.mp4", Route(body=b"v" * 10))
    result = run(operator(source={"prediction_id": "p", "outputs": [url]}, destination=f"{tmp_path}/"))
    assert result["uri"].endswith("/p.mp4")


def test_asset_and_alias_outlets_receive_the_stored_object(source: SourceServer, tmp_path: Path):
    body = video(64)
    url = source.add("/p.mp4", Route(body=body))
    asset = Asset("videos", uri="s3://media/runway/")
    alias = AssetAlias("runway-videos")
    events = OutletEventAccessors()
    result = run(operator(source=result_of("p", url), destination=f"{tmp_path}/", outlets=[asset, alias]), events)

    expected = {k: result[k] for k in ("uri", "sha256", "size", "content_type", "prediction_id", "source_url")}
    expected["dest_conn_id"] = None  # local files: no connection to read them back with
    assert events[asset].extra == expected
    (alias_event,) = events[alias].asset_alias_events
    assert alias_event.dest_asset_key.uri == result["uri"]
    assert alias_event.extra == expected


def test_invalid_arguments_are_rejected_at_parse_time():
    with pytest.raises(ValueError, match="max_size_bytes"):
        EachlabsToObjectStorageOperator(task_id="t", source="https://x/y.mp4", destination="/tmp/", max_size_bytes=0)
    with pytest.raises(ValueError, match="max_attempts"):
        EachlabsToObjectStorageOperator(task_id="t", source="https://x/y.mp4", destination="/tmp/", max_attempts=0)


def test_redact_url():
    assert (
        redact_url("https://user:pw@cdn.example.com:8443/a/b.mp4?sig=1#frag") == "https://cdn.example.com:8443/a/b.mp4"
    )


# ---------------------------------------------------------------------------------------------- S3 (moto)


class S3Requests(logging.Handler):
    """The S3 requests moto's server logs (werkzeug's access log), as ``(method, path-with-query)``."""

    _LINE = re.compile(r'"(?:\x1b\[[\d;]*m)*([A-Z]+) (\S+) HTTP/')

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = self._LINE.search(record.getMessage())
        if match:
            self.seen.append((match.group(1), match.group(2)))

    def writes(self, key_part: str) -> list[tuple[str, str]]:
        return [(m, p) for m, p in self.seen if m in ("PUT", "POST") and key_part in p]


@dataclass
class S3:
    bucket: str
    conn_id: str
    client: Any
    log: S3Requests


@pytest.fixture
def s3(s3_bucket: Any) -> Iterator[S3]:
    """The shared moto server's fresh bucket, its ``aws_moto`` connection and a log of the requests it serves."""
    handler = S3Requests()
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.INFO)
    werkzeug.addHandler(handler)
    yield S3(bucket=s3_bucket.name, conn_id=s3_bucket.conn_id, client=s3_bucket.server.client(), log=handler)
    werkzeug.removeHandler(handler)
    werkzeug.setLevel(level)


def keys(s3: S3) -> list[str]:
    return sorted(o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket).get("Contents", []))


def open_uploads(s3: S3) -> list[str]:
    return [u["Key"] for u in s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])]


def test_s3_happy_path_through_the_connection(source: SourceServer, s3: S3):
    body = video(12 * 1024 * 1024 + 123)
    url = source.add("/v1/outputs/pred-s3.mp4", Route(body=body))
    result = run(
        operator(
            source=result_of("pred-s3", url),
            destination=f"s3://{s3.bucket}/runway/2026-11-24/",
            dest_conn_id=s3.conn_id,
            block_size=5 * 1024 * 1024,
        )
    )
    key = "runway/2026-11-24/pred-s3.mp4"
    assert result["uri"] == f"s3://{s3.bucket}/{key}"  # no conn_id@ in the URI
    assert keys(s3) == [key, key + SIDECAR_SUFFIX]
    stored = s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    assert sha(stored) == sha(body) == result["sha256"]
    assert json.loads(s3.client.get_object(Bucket=s3.bucket, Key=key + SIDECAR_SUFFIX)["Body"].read())["size"] == len(
        body
    )
    parts = [p for m, p in s3.log.writes(key) if m == "PUT" and "partNumber" in p and SIDECAR_SUFFIX not in p]
    assert len(parts) == 3  # streamed as a multipart upload, 5 MiB parts
    assert open_uploads(s3) == []


def test_s3_rerun_does_not_upload_again(source: SourceServer, s3: S3):
    body = video(100_000)
    route = Route(body=body)
    url = source.add("/v1/outputs/pred-r.mp4", route)
    kwargs = {"destination": f"s3://{s3.bucket}/v/", "dest_conn_id": s3.conn_id}
    run(operator(source=result_of("pred-r", url), **kwargs))
    head = s3.client.head_object(Bucket=s3.bucket, Key="v/pred-r.mp4")
    writes_before = len(s3.log.writes("/v/"))

    again = run(operator(source=result_of("pred-r", url), **kwargs))
    assert again["uploaded"] is False
    assert route.requests == 1  # not even downloaded
    assert len(s3.log.writes("/v/")) == writes_before  # no PUT/POST to the object or its sidecar
    head_after = s3.client.head_object(Bucket=s3.bucket, Key="v/pred-r.mp4")
    assert (head_after["ETag"], head_after["LastModified"]) == (head["ETag"], head["LastModified"])


def test_s3_identical_content_is_discarded_not_committed(source: SourceServer, s3: S3):
    body = video(6 * 1024 * 1024)  # over one part, so the second run has a multipart upload to abort
    kwargs = {"destination": f"s3://{s3.bucket}/same.mp4", "dest_conn_id": s3.conn_id, "block_size": 5 * 1024 * 1024}
    run(operator(source=result_of("a", source.add("/a.mp4", Route(body=body))), **kwargs))
    s3.log.seen.clear()

    result = run(operator(source=result_of("b", source.add("/b.mp4", Route(body=body))), **kwargs))
    assert result["uploaded"] is False
    video_writes = [(m, p) for m, p in s3.log.writes("/same.mp4") if SIDECAR_SUFFIX not in p]
    # The multipart upload was started and its part sent, then aborted: never completed.
    assert not any(m == "POST" and "uploadId=" in p for m, p in video_writes)
    assert any(m == "DELETE" and "uploadId=" in p and SIDECAR_SUFFIX not in p for m, p in s3.log.seen)
    assert open_uploads(s3) == []
    sidecar = json.loads(s3.client.get_object(Bucket=s3.bucket, Key="same.mp4" + SIDECAR_SUFFIX)["Body"].read())
    assert sidecar["prediction_id"] == "b"


def test_s3_source_dying_mid_stream_leaves_no_object_no_upload_no_sidecar(source: SourceServer, s3: S3):
    # Past one 5 MiB part, so a multipart upload is under way when the source dies.
    route = Route(body=video(9 * 1024 * 1024), truncate_after=7 * 1024 * 1024)
    url = source.add("/v1/outputs/dies.mp4", route)
    with pytest.raises(DownloadError):
        run(
            operator(
                source=result_of("dies", url),
                destination=f"s3://{s3.bucket}/d/",
                dest_conn_id=s3.conn_id,
                block_size=5 * 1024 * 1024,
                max_attempts=2,
            )
        )
    assert route.requests == 2
    assert any(m == "PUT" and "partNumber=1" in p for m, p in s3.log.writes("/d/dies.mp4"))
    assert keys(s3) == []
    assert open_uploads(s3) == []


def test_s3_oversize_body_without_length_is_aborted(source: SourceServer, s3: S3):
    route = Route(body=video(8 * 1024 * 1024), content_length=None)
    url = source.add("/big.mp4", route)
    with pytest.raises(DownloadRejectedError, match="larger than max_size_bytes"):
        run(
            operator(
                source=url,
                destination=f"s3://{s3.bucket}/big/",
                dest_conn_id=s3.conn_id,
                block_size=5 * 1024 * 1024,
                max_size_bytes=6 * 1024 * 1024,
            )
        )
    assert keys(s3) == []
    assert open_uploads(s3) == []


def test_s3_wrong_content_type_writes_nothing(source: SourceServer, s3: S3):
    url = source.add("/p.mp4", Route(body=b"<html/>", content_type="text/html"))
    with pytest.raises(DownloadRejectedError):
        run(operator(source=url, destination=f"s3://{s3.bucket}/x/", dest_conn_id=s3.conn_id))
    assert keys(s3) == []
    assert s3.log.writes("/x/") == []
