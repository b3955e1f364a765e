"""Triggerer scale: N concurrent prediction waits in one triggerer-like process, the emulator in another.

Each mode runs in a fresh Python process (the "triggerer") that starts ``--triggers`` waits at once in one event
loop and, after a warm-up, measures for ``--seconds``: CPU seconds (``time.process_time``, all its threads) per
minute and per status request, RSS, event-loop lag (lateness of a 10 ms tick, p50/p99), TCP connections the
emulator saw opened, and status requests per minute. The emulator runs in its own process, so its cost is not
counted; its renders last longer than the run, so every wait polls throughout.

* ``ours``: real :class:`~airflow_runway.triggers.prediction.EachlabsPredictionTrigger` objects: one shared
  keep-alive session and one request budget (``rate_limit_per_minute``) per connection; at the API's 60/min
  budget, and at a budget as large as the per-poll-session mode's demand (to compare CPU per request).
* ``per-poll session``: the way the dbt Cloud provider's trigger polls: per status request a connection lookup
  (``sync_to_async(get_connection)``) and a new ``aiohttp.ClientSession`` (so a new TCP connection), no shared
  budget, the same poll interval.

    python benchmarks/trigger_benchmark.py --triggers 1000 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
API_KEY = "bench-key"
RUNWAY_INPUT = {"promptText": "bench", "model": "gen3a_turbo", "ratio": "16:9", "duration": "5", "watermark": "false"}


def modes(triggers: int, poll_interval: float) -> dict[str, dict[str, Any]]:
    """Mode name -> its settings: the API's budget, a budget matching the per-poll demand, the per-poll session."""
    demand = round(triggers * 60 / poll_interval)
    return {
        "ours, budget 60/min": {"kind": "ours", "rate_limit": 60},
        f"ours, budget {demand}/min": {"kind": "ours", "rate_limit": demand},
        "per-poll session (dbt Cloud style)": {"kind": "per-poll", "rate_limit": None},
    }


# ---------------------------------------------------------------------------------------------- child side


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def lag_sampler(samples: list[float], tick: float = 0.01) -> None:
    """Record how late each ``tick``-second sleep wakes up: the event loop's responsiveness."""
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(tick)
        samples.append(loop.time() - start - tick)


async def per_poll_session(prediction_id: str, interval: float) -> None:
    """A wait written the way the dbt Cloud provider's trigger polls (``DbtCloudHook.get_job_details``): every
    poll looks the connection up (``sync_to_async(get_connection)``) and opens a new ``aiohttp.ClientSession``
    (so a new TCP connection), with no shared request budget."""
    import aiohttp
    from airflow.sdk import BaseHook
    from asgiref.sync import sync_to_async

    while True:
        conn = await sync_to_async(BaseHook.get_connection)("eachlabs_default")
        url = f"{str(conn.host).rstrip('/')}/v1/prediction/{prediction_id}"
        async with (
            aiohttp.ClientSession(headers={"X-API-Key": str(conn.password)}) as session,
            session.get(url) as response,
        ):
            response.raise_for_status()
            body = await response.json()
        if body["status"] in ("success", "error", "failed", "cancelled"):
            return
        await asyncio.sleep(interval)


async def child(kind: str, url: str, ids: list[str], args: argparse.Namespace) -> dict[str, Any]:
    import requests

    from airflow_runway.triggers.prediction import EachlabsPredictionTrigger

    def stats() -> dict[str, Any]:
        return dict(requests.get(f"{url}/_emulator/stats", headers={"X-API-Key": API_KEY}, timeout=30).json())

    async def ours(prediction_id: str) -> None:
        trigger = EachlabsPredictionTrigger(
            prediction_id=prediction_id,
            poll_interval=args.poll_interval,
            max_poll_interval=args.poll_interval,
            deadline=time.time() + 3600,
            # Past the early checks, no expected finish: a steady poll every ``poll_interval``, as in the other mode.
            started_at=time.time() - 600,
        )
        async for _ in trigger.run():
            return

    samples: list[float] = []
    sampler = asyncio.create_task(lag_sampler(samples))
    wait = ours if kind == "ours" else lambda pid: per_poll_session(pid, args.poll_interval)
    tasks = [asyncio.create_task(wait(pid)) for pid in ids]
    await asyncio.sleep(args.warmup)
    before, cpu_before, started = await asyncio.to_thread(stats), time.process_time(), time.monotonic()
    times_before = os.times()
    loop_cpu_before = time.thread_time()
    samples.clear()
    profile = None
    if os.environ.get("TRIGGER_BENCHMARK_PROFILE"):  # where the loop's time goes, for whoever tunes it
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    await asyncio.sleep(args.seconds)
    if profile is not None:
        profile.disable()
        profile.dump_stats(os.environ["TRIGGER_BENCHMARK_PROFILE"])
    cpu = time.process_time() - cpu_before
    times_after = os.times()
    system = times_after.system - times_before.system
    loop_cpu = time.thread_time() - loop_cpu_before
    elapsed = time.monotonic() - started
    after = await asyncio.to_thread(stats)
    lags = sorted(samples)
    rss = rss_bytes()
    finished = sum(task.done() for task in tasks)
    for task in [*tasks, sampler]:
        task.cancel()
    await asyncio.gather(*tasks, sampler, return_exceptions=True)
    gets = after["gets"] - before["gets"]
    return {
        "triggers": len(ids),
        "finished_early": finished,
        "requests_per_min": round(gets / elapsed * 60, 1),
        "cpu_s_per_min": round(cpu / elapsed * 60, 2),
        "core_%": round(cpu / elapsed * 100, 1),
        "cpu_ms_per_request": round(cpu / gets * 1000, 2) if gets else None,
        # The kernel's part: on loopback the sender's send() also runs the receiver's TCP processing.
        "system_ms_per_request": round(system / gets * 1000, 2) if gets else None,
        "loop_thread_cpu_s": round(loop_cpu, 2),
        "rss_MiB": round(rss / 1024**2, 1),
        "lag_p50_ms": round(statistics.median(lags) * 1000, 2),
        "lag_p99_ms": round(lags[int(len(lags) * 0.99)] * 1000, 2),
        "tcp_connections": after["tcp_connections"] - before["tcp_connections"],
    }


# ---------------------------------------------------------------------------------------------- parent side


def start_emulator() -> tuple[subprocess.Popen[str], str]:
    """The emulator in a process of its own; renders last an hour so every wait polls throughout the run."""
    command = [sys.executable, "-m", "airflow_runway.emulator", "--port", "0", "--api-key", API_KEY]
    command += ["--duration", "3600", "--speed", "1", "--max-in-flight", "none"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def create_predictions(url: str, count: int) -> list[str]:
    import requests

    with requests.Session() as session:
        body = {"model": "runway", "version": "0.0.1", "input": RUNWAY_INPUT}
        return [
            session.post(f"{url}/v1/prediction/", json=body, headers={"X-API-Key": API_KEY}, timeout=30).json()[
                "predictionID"
            ]
            for _ in range(count)
        ]


def run(
    triggers: int = 1000, seconds: float = 60.0, warmup: float = 15.0, poll_interval: float = 10.0, rounds: int = 1
) -> list[dict[str, Any]]:
    """Every mode in a fresh process against one emulator process; the rows of the table.

    With ``rounds`` > 1 the modes run that many times, interleaved, and each keeps its run with the least CPU per
    minute: the machine may be shared, and a run that shared it measures the other job as well (as the transfer
    benchmark keeps each mode's fastest run).
    """
    process, url = start_emulator()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in modes(triggers, poll_interval)}
    try:
        for _ in range(rounds):
            for name, mode in modes(triggers, poll_interval).items():
                print(f"  triggerer: {name} ...", file=sys.stderr, flush=True)
                runs[name].append(run_mode(url, name, mode, triggers, seconds, warmup, poll_interval))
    finally:
        process.terminate()
        process.wait(timeout=30)
    rows = []
    for results in runs.values():
        good = [r for r in results if "error" not in r]
        best = min(good, key=lambda r: r["cpu_s_per_min"]) if good else results[-1]
        rows.append({**best, "runs": len(results)})
    return rows


def run_mode(
    url: str, name: str, mode: dict[str, Any], triggers: int, seconds: float, warmup: float, poll_interval: float
) -> dict[str, Any]:
    """One mode's run in a fresh process: ``triggers`` new predictions waited on; its row of the table."""
    ids = create_predictions(url, triggers)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    conn: dict[str, Any] = {"conn_type": "eachlabs", "host": url, "password": API_KEY}
    if mode["rate_limit"] is not None:
        conn["extra"] = {"rate_limit_per_minute": mode["rate_limit"]}
    env["AIRFLOW_CONN_EACHLABS_DEFAULT"] = json.dumps(conn)
    command = [sys.executable, __file__, "--child", mode["kind"], "--url", url, "--seconds", str(seconds)]
    command += ["--warmup", str(warmup), "--poll-interval", str(poll_interval)]
    done = subprocess.run(
        command, input=json.dumps(ids), env=env, capture_output=True, text=True, timeout=seconds * 10 + 300
    )
    if done.returncode != 0:
        return {"mode": name, "error": (done.stderr or done.stdout).strip().splitlines()[-1:]}
    return {"mode": name, "budget_per_min": mode["rate_limit"], **json.loads(done.stdout.splitlines()[-1])}


def goals(rows: list[dict[str, Any]]) -> dict[str, bool]:
    """The issue's goals, on the rows.

    At the API's budget (60/min): under 10% of one core, loop lag p99 under 50 ms, requests within the budget.
    At the per-poll-session mode's load (the budget as large as its demand): at least 2x less CPU per request.
    """
    out: dict[str, bool] = {}
    good = {r["mode"]: r for r in rows if "error" not in r}
    api = good.get("ours, budget 60/min")
    if api is not None:
        out[f"at 60/min: {api['core_%']}% of one core < 10%"] = api["core_%"] < 10
        out[f"at 60/min: loop lag p99 {api['lag_p99_ms']} ms < 50 ms"] = api["lag_p99_ms"] < 50
        # The budget spaces requests 1 s apart: a window may hold one more than the rate.
        out[f"at 60/min: {api['requests_per_min']} requests/min within the budget"] = api["requests_per_min"] <= 61
    naive = next((r for name, r in good.items() if name.startswith("per-poll")), None)
    matched = next((r for name, r in good.items() if name.startswith("ours") and r is not api), None)
    if naive and matched and naive["cpu_ms_per_request"] and matched["cpu_ms_per_request"]:
        ratio = naive["cpu_ms_per_request"] / matched["cpu_ms_per_request"]
        out[
            f"at {matched['budget_per_min']}/min: {matched['cpu_ms_per_request']} ms CPU per request vs "
            f"{naive['cpu_ms_per_request']} ms per-poll session ({ratio:.2f}x, goal >= 2x)"
        ] = ratio >= 2
    return out


COLUMNS = (
    "mode",
    "triggers",
    "budget_per_min",
    "requests_per_min",
    "cpu_s_per_min",
    "core_%",
    "cpu_ms_per_request",
    "rss_MiB",
    "lag_p50_ms",
    "lag_p99_ms",
    "tcp_connections",
    "runs",
    "error",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--triggers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0, help="the measured window")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds before measuring (the first polls)")
    parser.add_argument("--poll-interval", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved runs per mode; the least loaded is kept")
    parser.add_argument("--child", choices=("ours", "per-poll"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        logging.basicConfig(level=logging.WARNING)
        ids = json.loads(sys.stdin.read())
        print(json.dumps(asyncio.run(child(args.child, args.url, ids, args))))
        return 0
    rows = run(args.triggers, args.seconds, args.warmup, args.poll_interval, args.rounds)
    sys.path.insert(0, str(Path(__file__).parent))
    from table import print_table

    print(f"\n{args.triggers} concurrent waits in one triggerer process, {args.seconds:g} s measured\n")
    print_table(rows, COLUMNS)
    for goal, met in goals(rows).items():
        print(f"  {'met' if met else 'NOT MET'}: {goal}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
