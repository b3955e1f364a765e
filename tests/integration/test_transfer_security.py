"""The transfer's network safety over real loopback HTTP: no internal addresses unless opted in (every hop,
checked after DNS resolution, on the connection actually made), no ``~/.netrc``, ``Retry-After`` as a date.

Loopback servers stand for the hosts involved: a :class:`RecordingServer` on ``127.0.0.2`` plays an allowed
("public") host where a test needs one, by allowing exactly that address in the policy; ``127.0.0.1`` plays the
internal target.
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from airflow.sdk import DAG
from airflow.sdk.execution_time.context import OutletEventAccessors
from fsspec.implementations.local import LocalFileSystem

from airflow_runway.transfers import DownloadRejectedError, EachlabsToObjectStorageOperator
from airflow_runway.transfers._atomic_write import AtomicWrite
from airflow_runway.transfers._download import SourceDownloader
from airflow_runway.transfers._network import AddressPolicy, AddressRefusedError
from airflow_runway.transfers._source import Source, UrlSecrets
from tests.fixtures.emulator import succeeded_prediction
from tests.fixtures.recording import Canned, RecordingServer

pytestmark = pytest.mark.integration

VIDEO = Canned(body=b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 4096, headers={"Content-Type": "video/mp4"})
ALLOWED_HOST = "127.0.0.2"  # the stand-in for a public host: the only non-public address a test policy allows


def downloader(policy: AddressPolicy, **overrides: Any) -> SourceDownloader:
    settings: dict[str, Any] = {
        "log": logging.getLogger(__name__),
        "secrets": UrlSecrets(mask=lambda secret: None),
        "allow_insecure_http": True,
        "address_policy": policy,
        "max_size_bytes": 10 * 1024**2,
        "allowed_content_types": ("video/*",),
        "max_redirects": 5,
        "max_attempts": 1,
        "retry_wait": 0.01,
        "retry_max_wait": 0.05,
        "connect_timeout": 5.0,
        "read_timeout": 5.0,
        "chunk_size": 64 * 1024,
    }
    return SourceDownloader(**{**settings, **overrides})


def download(policy: AddressPolicy, url: str, target: Path, **overrides: Any) -> int:
    """Download ``url`` to ``target`` with ``policy``; returns the size stored."""
    writer, content = downloader(policy, **overrides).download(
        Source(url=url, prediction_id=None),
        lambda: AtomicWrite(LocalFileSystem(), str(target), transactional=False, block_size=None),
    )
    writer.commit()
    return content.size


def execute(op: EachlabsToObjectStorageOperator) -> dict[str, Any]:
    context = {"ds": "2026-11-24", "outlet_events": OutletEventAccessors(), "params": {}}
    op.render_template_fields(cast(Any, context))
    return op.execute(cast(Any, context))


def store_task(source: Any, destination: Path, **kwargs: Any) -> EachlabsToObjectStorageOperator:
    kwargs.setdefault("retry_wait", 0.01)
    kwargs.setdefault("retry_max_wait", 0.05)
    with DAG(dag_id=f"transfer_{uuid.uuid4().hex[:8]}", schedule=None):
        return EachlabsToObjectStorageOperator(
            task_id="store", source=source, destination=f"file://{destination}/", **kwargs
        )


@pytest.fixture
def internal() -> Iterator[RecordingServer]:
    """An "internal" service on 127.0.0.1 that would hand out its data to whoever asks."""
    with RecordingServer("127.0.0.1", canned=VIDEO) as server:
        yield server


# ---- 12. no server-side request forgery -------------------------------------------------------------------------


def test_a_redirect_from_an_allowed_host_to_loopback_is_refused(internal, tmp_path):
    redirect = Canned(status=302, body=b"", headers={"Location": f"{internal.url}/metadata.mp4"})
    allow_origin = AddressPolicy(allowed_networks=(ipaddress.ip_network(f"{ALLOWED_HOST}/32"),))
    with RecordingServer(ALLOWED_HOST, canned=redirect) as origin:
        with pytest.raises(AddressRefusedError, match=r"Refusing to connect to 127\.0\.0\.1: not a public address"):
            download(allow_origin, f"{origin.url}/video.mp4", tmp_path / "v.mp4")
        assert len(origin.received) == 1
        assert internal.received == []  # never connected to
        assert not (tmp_path / "v.mp4").exists()

        # The opt-in (allow_private_network=True) follows the same redirect.
        assert download(AddressPolicy.from_flag(True), f"{origin.url}/video.mp4", tmp_path / "v.mp4") == len(VIDEO.body)
        assert len(internal.received) == 1


def test_the_connection_goes_to_the_checked_address_not_a_second_lookup(tmp_path):
    """DNS rebinding: the name resolves to an allowed address first, to loopback afterwards."""
    with (
        RecordingServer(ALLOWED_HOST, canned=VIDEO) as allowed,
        RecordingServer("127.0.0.1", port=allowed.port, canned=VIDEO) as internal,
    ):
        lookups: list[str] = []

        def rebinding_dns(host: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
            address = ALLOWED_HOST if not lookups else "127.0.0.1"
            lookups.append(address)
            return socket.getaddrinfo(address, port, socket.AF_INET, socket.SOCK_STREAM)

        policy = AddressPolicy(allowed_networks=(ipaddress.ip_network(f"{ALLOWED_HOST}/32"),), resolve=rebinding_dns)
        url = f"http://cdn.rebind.test:{allowed.port}/video.mp4"
        assert download(policy, url, tmp_path / "v.mp4") == len(VIDEO.body)
        assert lookups == [ALLOWED_HOST]  # one lookup, and the connection went to its (checked) answer
        assert internal.received == []
        (received,) = allowed.received
        assert received.header("Host") == f"cdn.rebind.test:{allowed.port}"  # the name is kept for the server

        # A second lookup answers loopback: refused before any connection.
        with pytest.raises(AddressRefusedError, match=r"cdn\.rebind\.test \(it resolves to 127\.0\.0\.1\)"):
            download(policy, url, tmp_path / "w.mp4")
        assert internal.received == []


def test_a_name_resolving_to_loopback_is_refused_by_default(emulator, tmp_path):
    """``localhost`` resolves to loopback through the hosts file: the check applies to the address, not the name."""
    prediction = succeeded_prediction(emulator)
    port = emulator.url.rsplit(":", 1)[1]
    url = f"http://localhost:{port}/v1/outputs/{prediction['prediction_id']}.mp4"
    op = store_task(url, tmp_path, allow_private_network=False)
    with pytest.raises(DownloadRejectedError, match=r"Refusing to connect to localhost \(it resolves to"):
        execute(op)
    assert emulator.stats()["output_requests"] == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("configured", ["False", None])
def test_the_default_comes_from_the_airflow_config_and_refuses_loopback(emulator, tmp_path, monkeypatch, configured):
    if configured is None:
        monkeypatch.delenv("AIRFLOW__RUNWAY__ALLOW_PRIVATE_NETWORK")  # unset: the provider's default, False
    else:
        monkeypatch.setenv("AIRFLOW__RUNWAY__ALLOW_PRIVATE_NETWORK", configured)
    prediction = succeeded_prediction(emulator)
    op = store_task(prediction, tmp_path)
    with pytest.raises(DownloadRejectedError, match=r"Refusing to connect to 127\.0\.0\.1: not a public address"):
        execute(op)
    assert emulator.stats()["output_requests"] == 0


def test_the_config_opt_in_allows_the_emulator(emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__RUNWAY__ALLOW_PRIVATE_NETWORK", "True")
    prediction = succeeded_prediction(emulator)
    result = execute(store_task(prediction, tmp_path))
    assert result["uploaded"] is True
    assert emulator.stats()["output_requests"] == 1


def test_each_redirect_hop_is_checked(emulator, tmp_path):
    """The emulator's ``redirect`` fault on the output route, to another internal address: refused at that hop."""
    prediction = succeeded_prediction(emulator)
    allow_emulator_only = AddressPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),))
    with RecordingServer("127.0.0.3", canned=VIDEO) as other:
        emulator.inject(route="output", kind="redirect", status=307, location=f"{other.url}/latest/meta-data")
        with pytest.raises(AddressRefusedError, match=r"Refusing to connect to 127\.0\.0\.3: not a public address"):
            download(allow_emulator_only, prediction["video_url"], tmp_path / "v.mp4")
        assert other.received == []
    assert emulator.stats()["output_requests"] == 1  # the first hop was allowed, and answered the redirect


def test_through_a_proxy_the_name_is_checked_before_the_request(tmp_path, monkeypatch):
    """A proxy connects for us: the source's host is checked as resolved here; the proxy itself is trusted."""
    with RecordingServer("127.0.0.1", canned=VIDEO) as proxy:
        for name in ("HTTP_PROXY", "http_proxy"):
            monkeypatch.setenv(name, proxy.url)  # NO_PROXY lists 127.0.0.1, localhost and ::1 only
        url = "http://127.0.0.5:8080/video.mp4"
        with pytest.raises(AddressRefusedError, match=r"Refusing to connect to 127\.0\.0\.5"):
            download(AddressPolicy.from_flag(False), url, tmp_path / "v.mp4")
        assert proxy.received == []

        # Allowing the target's address is enough: the proxy's own (loopback) address is not checked.
        target_only = AddressPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.5/32"),))
        assert download(target_only, url, tmp_path / "v.mp4") == len(VIDEO.body)
        (received,) = proxy.received
        assert received.target == url  # the request went through the proxy


# ---- 11. no ~/.netrc in the download ----------------------------------------------------------------------------


def test_the_download_never_sends_netrc_credentials(internal, tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login netrc-user password netrc-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    (tmp_path / "out").mkdir()
    result = execute(store_task(f"{internal.url}/video.mp4", tmp_path / "out"))  # loopback: the session opts in
    assert result["size"] == len(VIDEO.body)
    (received,) = internal.received
    assert received.header("Authorization") is None


# ---- 15. Retry-After as an HTTP date ----------------------------------------------------------------------------


def test_retry_after_given_as_an_http_date_is_honoured(tmp_path):
    when = email.utils.formatdate(time.time() + 3, usegmt=True)  # 2 to 3 s from now (the date has whole seconds)
    busy = Canned(status=503, body=b"busy", headers={"Retry-After": when, "Content-Type": "text/plain"})
    with RecordingServer("127.0.0.1", canned=VIDEO, then=[busy]) as server:
        op = store_task(f"{server.url}/video.mp4", tmp_path, max_attempts=2, retry_wait=0.01, retry_max_wait=30.0)
        assert execute(op)["size"] == len(VIDEO.body)
    first, second = server.received
    assert second.at - first.at >= 1.5  # the date's wait, not the 0.01 s backoff
