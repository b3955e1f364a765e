"""Benchmark: EachlabsToObjectStorageOperator's streamed transfer against boto3, a naive copy and ``cp``.

Starts the Eachlabs emulator (serving a ``--size`` byte output, 1 GiB by default) in this process and a moto S3
server in a process of its own, creates a bucket, one succeeded prediction and a local file of the same size,
then runs each transfer in a fresh Python subprocess so that its peak RSS (``ru_maxrss``) is the transfer's alone:

* ``operator-s3``: ``EachlabsToObjectStorageOperator.execute`` streaming the output URL to ``s3://bucket/...``.
* ``boto3-s3``: boto3's own ``upload_fileobj`` of the local file to the same server (the goal: within 1.25x).
* ``naive-s3``: ``requests.get(url).content`` then ``put_object`` (the whole body in memory).
* ``operator-local``: the operator streaming the output URL to a ``file://`` destination.
* ``cp-local``: a plain ``cp`` of the local file into the same directory (the goal: within 1.25x).
* ``download-only``: the output URL streamed (1 MiB chunks) and hashed in line, stored nowhere: the cost of
  receiving and hashing one after the other (the operator hashes on a thread of its own, alongside the write).
* ``receive-only``: the output URL streamed and dropped, neither hashed nor stored: what receiving over loopback
  HTTP alone costs, the floor under any transfer from the API.

Each child sets up (imports, clients) before it reports ready; the clocks start at the parent's go. A
local-disk run's go comes as a ballast file of the same size is deleted, so that every mode writes into
just-freed memory (see ``run``: on a ballooned VM, memory freed a while ago costs ~8x to write into).

Run from the repository root::

    .venv/bin/python benchmarks/transfer_benchmark.py                 # 1 GiB
    .venv/bin/python benchmarks/transfer_benchmark.py --size 256MiB --block-size 16MiB

Only loopback addresses are used; every server is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
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
MODES = ("operator-s3", "boto3-s3", "naive-s3", "operator-local", "cp-local", "download-only", "receive-only")
READY = "ready"
_UNITS = {"": 1, "B": 1, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3}


def parse_size(text: str) -> int:
    """``"1GiB"``, ``"256MiB"``, ``"500MB"`` or a plain byte count."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*", text, flags=re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").upper()])


def max_rss_bytes() -> int:
    """Peak resident set size of this process: ``VmHWM`` on Linux (``ru_maxrss`` keeps the parent's peak across
    ``fork`` + ``exec``, so a big parent would hide the child's own), ``ru_maxrss`` elsewhere."""
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of this process, or of process ``pid`` (Linux only; 0.0 elsewhere)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------- child side


def ready_then_start() -> tuple[float, float]:
    """Tell the parent this transfer is set up, wait for its go, and start the clocks (wall, CPU)."""
    print(READY, flush=True)
    sys.stdin.readline()
    return time.perf_counter(), cpu_seconds()


def child(mode: str, url: str, endpoint: str, bucket: str, block_size: int | None, local: str, out: str) -> Any:
    """Run one transfer in this (fresh) process and measure it."""
    baseline = max_rss_bytes()
    if mode.startswith("operator"):
        from airflow.sdk import ObjectStoragePath
        from airflow.sdk.execution_time.context import OutletEventAccessors

        from airflow_runway.transfers.eachlabs_to_object_storage import EachlabsToObjectStorageOperator

        destination = f"s3://{bucket}/operator/" if mode == "operator-s3" else f"file://{out}/operator/"
        dest_conn_id = CONN_ID if mode == "operator-s3" else None
        # Resolve the filesystem first, as the boto3 mode builds its client first: the growth measured is then
        # the transfer's, not the import of the S3 stack (s3fs, aiobotocore: ~60 MiB).
        fs = ObjectStoragePath(destination, conn_id=dest_conn_id).fs
        if mode == "operator-s3":
            fs.ls(bucket)
        op = EachlabsToObjectStorageOperator(
            task_id="store",
            source=url,
            destination=destination,
            dest_conn_id=dest_conn_id,
            allow_insecure_http=True,  # the emulator serves http://127.0.0.1 ...
            allow_private_network=True,  # ... a loopback address, which the transfer refuses by default
            max_size_bytes=64 * 1024**3,
            block_size=block_size,
        )
        baseline = max_rss_bytes()
        start, cpu = ready_then_start()
        size = int(op.execute({"outlet_events": OutletEventAccessors()})["size"])
    elif mode in ("download-only", "receive-only"):
        import hashlib

        import requests

        start, cpu = ready_then_start()
        digest, size = hashlib.sha256(), 0
        with requests.get(url, stream=True, timeout=600) as response:
            for chunk in response.iter_content(chunk_size=1024 * 1024):
                if mode == "download-only":
                    digest.update(chunk)
                size += len(chunk)
    elif mode == "cp-local":
        os.makedirs(f"{out}/cp", exist_ok=True)
        start, cpu = ready_then_start()
        subprocess.run(["cp", local, f"{out}/cp/video.mp4"], check=True)
        size = os.path.getsize(f"{out}/cp/video.mp4")
    else:
        import boto3
        import requests

        client = boto3.client(
            "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET
        )
        baseline = max_rss_bytes()
        start, cpu = ready_then_start()
        if mode == "boto3-s3":
            with open(local, "rb") as file:
                client.upload_fileobj(file, bucket, "boto3/video.mp4")
            size = os.path.getsize(local)
        else:
            body = requests.get(url, timeout=600).content
            client.put_object(Bucket=bucket, Key="naive/video.mp4", Body=body, ContentType="video/mp4")
            size = len(body)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    return {"mode": mode, "size": size, "wall": wall, "cpu": cpu, "baseline_rss": baseline, "peak_rss": max_rss_bytes()}


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


def run_child(mode: str, args: list[str], env: dict[str, str], ballast: Path | None = None) -> dict[str, Any]:
    """Run one transfer in a fresh process; ``ballast``, a file deleted just as the transfer starts, if given."""
    command = [sys.executable, __file__, "--child", mode, *args]
    # stderr to a file: a child that logs more than a pipe holds before it is ready would otherwise block.
    with (
        tempfile.TemporaryFile("w+") as errors,
        subprocess.Popen(
            command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True
        ) as process,
    ):
        assert process.stdin is not None and process.stdout is not None
        for line in iter(process.stdout.readline, ""):
            if line.strip() == READY:
                if ballast is not None:
                    ballast.unlink()
                break
        with contextlib.suppress(BrokenPipeError):
            process.stdin.write("go\n")
            process.stdin.flush()
        stdout, _ = process.communicate(timeout=3600)
        errors.seek(0)
        stderr = errors.read()
    if process.returncode != 0:
        print(f"  {mode} failed:\n{stderr[-4000:]}", file=sys.stderr, flush=True)
        return {"mode": mode, "error": " ".join((stderr or stdout).strip().splitlines()[-1:]) or "failed"}
    return dict(json.loads(stdout.strip().splitlines()[-1]))


def write_local_file(path: Path, size: int) -> None:
    """A local file of ``size`` random bytes: the source of ``boto3-s3`` and ``cp-local``."""
    block = os.urandom(8 * 1024**2)
    with open(path, "wb") as file:
        remaining = size
        while remaining:
            remaining -= file.write(block[: min(remaining, len(block))])


def row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One mode's row: its fastest run's throughput, and the largest RSS growth of all its runs."""
    mib = 1024**2
    failed = [r for r in runs if "error" in r]
    if failed:
        return {"mode": failed[0]["mode"], "error": failed[0]["error"]}
    best = min(runs, key=lambda r: r["wall"])
    local = best["mode"] == "cp-local"
    return {
        "mode": best["mode"],
        "MiB/s": round(best["size"] / mib / best["wall"], 1),
        "wall_s": round(best["wall"], 2),
        "runs": len(runs),
        "rss_growth_MiB": None if local else round(max(r["peak_rss"] - r["baseline_rss"] for r in runs) / mib, 1),
        "peak_rss_MiB": None if local else round(max(r["peak_rss"] for r in runs) / mib, 1),
    }


def describe(result: dict[str, Any]) -> str:
    """One run's throughput, RSS growth and CPU seconds (the transfer's process, moto's, this process's: the
    emulator), printed as it ends: the table keeps only each mode's fastest run."""
    mib = 1024**2
    growth = (result["peak_rss"] - result["baseline_rss"]) / mib
    return (
        f"{result['mode']}: {result['size'] / mib / result['wall']:.1f} MiB/s, RSS growth {growth:.1f} MiB,"
        f" CPU s: transfer {result['cpu']:.2f}, moto {result['moto_cpu']:.2f}, emulator {result['emulator_cpu']:.2f}"
    )


def goals(rows: list[dict[str, Any]]) -> dict[str, bool]:
    """The issue's goals: S3 within 1.25x of boto3, RSS growth under 64 MiB, local within 1.25x of ``cp``."""
    by = {r["mode"]: r for r in rows if "error" not in r}
    out: dict[str, bool] = {}
    if {"operator-s3", "boto3-s3"} <= by.keys():
        ours, boto = by["operator-s3"]["MiB/s"], by["boto3-s3"]["MiB/s"]
        out[f"S3: {ours} MiB/s within 1.25x of boto3 upload_fileobj {boto} MiB/s"] = ours * 1.25 >= boto
        growth = by["operator-s3"]["rss_growth_MiB"]
        out[f"S3: peak RSS growth {growth} MiB < 64 MiB"] = growth < 64
    if {"operator-local", "cp-local"} <= by.keys():
        ours, cp = by["operator-local"]["MiB/s"], by["cp-local"]["MiB/s"]
        out[f"local: {ours} MiB/s within 1.25x of cp {cp} MiB/s"] = ours * 1.25 >= cp
    return out


COLUMNS = ("mode", "MiB/s", "wall_s", "runs", "rss_growth_MiB", "peak_rss_MiB", "error")


def run(
    size: int, block_size: int | None = None, modes: tuple[str, ...] = MODES, repeat: int = 1
) -> list[dict[str, Any]]:
    """Every mode ``repeat`` times, interleaved, side by side on this machine; the rows of the table.

    The machine may be shared: each row keeps its fastest run (and the largest RSS growth of all its runs).
    """
    sys.path.insert(0, str(REPO))
    import boto3

    from airflow_runway.emulator import EmulatorConfig, EmulatorServer

    # Under the repository, not /tmp: the local-disk modes must write to a disk, and /tmp may be a tmpfs.
    scratch = REPO / ".bench-tmp"
    scratch.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="transfer-benchmark-", dir=scratch) as home:
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
        local = Path(home) / "local-video.mp4"
        write_local_file(local, size)
        out = Path(home) / "out"
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
                config = EmulatorConfig(api_key="bench-key", duration=1, speed=100, output_size=size)
                with EmulatorServer(config, port=0) as emulator:
                    url = succeeded_prediction(emulator)
                    name = url.rsplit("/", 1)[1]
                    args = ["--url", url, "--endpoint", endpoint, "--bucket", bucket, "--local", str(local)]
                    args += ["--out", str(out)] + (["--block-size", str(block_size)] if block_size else [])
                    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
                    for mode in [mode for _ in range(repeat) for mode in modes]:
                        print(f"  transfer: {mode} ...", file=sys.stderr, flush=True)
                        # On a VM whose balloon reports free pages to the host (virtio-balloon free page
                        # reporting), memory freed a second or more ago is handed back, and writing a file into
                        # it costs ~8x (this machine: ~600 against ~4,900 MiB/s). `cp` starts in milliseconds,
                        # into the pages of the file just deleted; the operator's process needs seconds to import
                        # Airflow. So each local-disk run starts the moment a ballast file of the same size is
                        # deleted: every mode writes into just-freed pages, as on a machine without a balloon.
                        ballast = None
                        if mode.endswith("-local"):
                            ballast = Path(home) / "ballast"
                            write_local_file(ballast, size)
                        servers_cpu = cpu_seconds(), cpu_seconds(moto.pid)
                        result = run_child(mode, args, env, ballast)
                        result["emulator_cpu"] = cpu_seconds() - servers_cpu[0]
                        result["moto_cpu"] = cpu_seconds(moto.pid) - servers_cpu[1]
                        results[mode].append(result)
                        if "error" not in result:
                            print(f"    {describe(result)}", file=sys.stderr, flush=True)
                        if "error" in result or mode in ("download-only", "receive-only"):
                            continue
                        if mode.endswith("-s3"):
                            key = f"operator/{name}" if mode == "operator-s3" else f"{mode.split('-')[0]}/video.mp4"
                            stored = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
                            client.delete_object(Bucket=bucket, Key=key)  # keep moto's memory for the next run
                        else:
                            stored_path = out / ("operator" if mode == "operator-local" else "cp")
                            stored_file = stored_path / (name if mode == "operator-local" else "video.mp4")
                            stored = stored_file.stat().st_size
                            stored_file.unlink()
                        assert stored == size, f"{mode} stored {stored} bytes, not {size}"
            finally:
                moto.terminate()
                moto.wait(timeout=30)
    return [row(runs) for runs in results.values()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=1024**3, help="output size (default 1GiB)")
    parser.add_argument("--block-size", type=parse_size, default=None, help="operator's upload part size")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--repeat", type=int, default=1, help="runs per mode, interleaved; the fastest is kept")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    for hidden in ("--url", "--endpoint", "--bucket", "--local", "--out"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(
            json.dumps(child(args.child, args.url, args.endpoint, args.bucket, args.block_size, args.local, args.out))
        )
        return 0

    rows = run(args.size, args.block_size, tuple(args.modes), args.repeat)
    sys.path.insert(0, str(Path(__file__).parent))
    from table import print_table

    print(f"\nTransfer of {args.size / 1024**2:,.0f} MiB (emulator over loopback HTTP, moto S3 in its own process)\n")
    print_table(rows, COLUMNS)
    for goal, met in goals(rows).items():
        print(f"  {'met' if met else 'NOT MET'}: {goal}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
