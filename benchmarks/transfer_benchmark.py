"""Benchmark: EachlabsToObjectStorageOperator's streamed transfer against a naive download-then-upload.

Starts the Eachlabs emulator (serving a ``--size`` byte output, 1 GiB by default) in this process and a moto S3
server in a process of its own, creates a bucket and one succeeded prediction, then runs each transfer in a
fresh Python subprocess so that its peak RSS (``ru_maxrss``) is the transfer's alone:

* ``operator``: ``EachlabsToObjectStorageOperator.execute`` streaming the output URL to ``s3://bucket/...``.
* ``naive``: ``requests.get(url).content`` then ``put_object`` (the whole body in memory).

Run from the repository root::

    .venv/bin/python benchmarks/transfer_benchmark.py                 # 1 GiB
    .venv/bin/python benchmarks/transfer_benchmark.py --size 256MiB --block-size 8MiB

Only loopback addresses are used; every server is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONN_ID = "bench_s3"
REGION = "us-east-1"
KEY_ID = "bench"
SECRET = "bench-secret"
MODES = ("operator", "naive")
_UNITS = {"": 1, "B": 1, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3}


def parse_size(text: str) -> int:
    """``"1GiB"``, ``"256MiB"``, ``"500MB"`` or a plain byte count."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*", text, flags=re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").upper()])


def max_rss_bytes() -> int:
    """Peak resident set size of this process (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


# ---------------------------------------------------------------------------------------------- child side


def child(mode: str, url: str, endpoint: str, bucket: str, block_size: int | None) -> dict[str, Any]:
    """Run one transfer in this (fresh) process and measure it."""
    if mode == "operator":
        from airflow.sdk.execution_time.context import OutletEventAccessors

        from airflow_runway.transfers.eachlabs_to_object_storage import EachlabsToObjectStorageOperator

        op = EachlabsToObjectStorageOperator(
            task_id="store",
            source=url,
            destination=f"s3://{bucket}/operator/",
            dest_conn_id=CONN_ID,
            allow_insecure_http=True,  # the emulator serves http://127.0.0.1
            max_size_bytes=64 * 1024**3,
            block_size=block_size,
        )
        baseline = max_rss_bytes()
        start = time.perf_counter()
        result = op.execute({"outlet_events": OutletEventAccessors()})
        wall = time.perf_counter() - start
        size = int(result["size"])
    else:
        import boto3
        import requests

        client = boto3.client(
            "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET
        )
        baseline = max_rss_bytes()
        start = time.perf_counter()
        body = requests.get(url, timeout=600).content
        client.put_object(Bucket=bucket, Key="naive/video.mp4", Body=body, ContentType="video/mp4")
        wall = time.perf_counter() - start
        size = len(body)
    return {"mode": mode, "size": size, "wall": wall, "baseline_rss": baseline, "peak_rss": max_rss_bytes()}


# ---------------------------------------------------------------------------------------------- parent side


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto(log: Any) -> tuple[subprocess.Popen[bytes], str]:
    import requests

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(f"{endpoint}/moto-api/", timeout=1)
            return process, endpoint
        except requests.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.2)


def succeeded_prediction(emulator: Any) -> str:
    import requests

    headers = {"X-API-Key": emulator.api_key}
    body = {
        "model": "runway",
        "version": "0.0.1",
        "input": {
            "promptText": "benchmark",
            "ratio": "16:9",
            "duration": "5",
            "watermark": "false",
            "model": "gen3a_turbo",
            "seed": None,
        },
    }
    created = requests.post(f"{emulator.url}/v1/prediction/", headers=headers, json=body, timeout=30)
    created.raise_for_status()
    pid = created.json()["predictionID"]
    deadline = time.monotonic() + 60
    while (
        requests.get(f"{emulator.url}/v1/prediction/{pid}", headers=headers, timeout=30).json()["status"] != "success"
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"prediction {pid} did not succeed")
        time.sleep(0.1)
    return f"{emulator.url}/v1/outputs/{pid}.mp4"


def run_child(mode: str, url: str, endpoint: str, bucket: str, block_size: int | None, env: dict[str, str]) -> Any:
    command = [sys.executable, __file__, "--child", mode, "--url", url, "--endpoint", endpoint, "--bucket", bucket]
    if block_size:
        command += ["--block-size", str(block_size)]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600, check=False)
    process_wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"mode": mode, "error": (done.stderr or done.stdout).strip().splitlines()[-1:] or ["failed"]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall"] = process_wall
    return result


def print_table(results: list[dict[str, Any]], size: int) -> None:
    mib = 1024**2
    print(f"\nTransfer of {size / mib:,.0f} MiB: emulator (http, loopback) -> moto S3 (separate process)\n")
    header = f"{'mode':<10} {'wall s':>8} {'MiB/s':>8} {'peak RSS MiB':>13} {'RSS before MiB':>15} {'process s':>10}"
    print(header)
    print("-" * len(header))
    for r in results:
        if "error" in r:
            print(f"{r['mode']:<10} failed: {' '.join(r['error'])}")
            continue
        print(
            f"{r['mode']:<10} {r['wall']:>8.2f} {r['size'] / mib / r['wall']:>8.1f} {r['peak_rss'] / mib:>13.1f} "
            f"{r['baseline_rss'] / mib:>15.1f} {r['process_wall']:>10.2f}"
        )
    print(
        "\npeak RSS: ru_maxrss of the child process doing the transfer (imports included); RSS before: its peak "
        "just before the transfer started. 'wall s' times the transfer only; 'process s' the whole child."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=1024**3, help="output size (default 1GiB)")
    parser.add_argument("--block-size", type=parse_size, default=None, help="operator's upload part size")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(child(args.child, args.url, args.endpoint, args.bucket, args.block_size)))
        return 0

    sys.path.insert(0, str(REPO))
    import boto3

    from airflow_runway.emulator import EmulatorConfig, EmulatorServer

    with tempfile.TemporaryDirectory(prefix="transfer-benchmark-") as home:
        env = {
            **os.environ,
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        with open(Path(home) / "moto.log", "wb") as moto_log:
            moto, endpoint = start_moto(moto_log)
            try:
                env[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(
                    {
                        "conn_type": "aws",
                        "login": KEY_ID,
                        "password": SECRET,
                        "extra": {"endpoint_url": endpoint, "region_name": REGION},
                    }
                )
                client = boto3.client(
                    "s3",
                    endpoint_url=endpoint,
                    region_name=REGION,
                    aws_access_key_id=KEY_ID,
                    aws_secret_access_key=SECRET,
                )
                bucket = "benchmark"
                client.create_bucket(Bucket=bucket)
                config = EmulatorConfig(api_key="bench-key", duration=1, speed=100, output_size=args.size)
                with EmulatorServer(config, port=0) as emulator:
                    url = succeeded_prediction(emulator)
                    results = []
                    for mode in args.modes:
                        print(f"running {mode} ...", file=sys.stderr, flush=True)
                        results.append(run_child(mode, url, endpoint, bucket, args.block_size, env))
                        if "error" not in results[-1]:
                            key = "naive/video.mp4" if mode == "naive" else url.rsplit("/", 1)[1]
                            key = key if mode == "naive" else f"operator/{key}"
                            stored = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
                            assert stored == args.size, f"{mode} stored {stored} bytes, not {args.size}"
                            client.delete_object(Bucket=bucket, Key=key)  # keep moto's memory for the next run
            finally:
                moto.terminate()
                moto.wait(timeout=30)
    print_table(results, args.size)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
