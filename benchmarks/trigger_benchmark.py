"""Run N prediction triggers concurrently in one event loop against the emulator, as a triggerer would.

Reports what the API would see: TCP connections opened, status requests made, the busiest 60-second window
(against the connection's request budget), and how late the event loop ran (a blocked loop shows here).

    python benchmarks/trigger_benchmark.py --triggers 200 --rate-limit 60 --render-seconds 60

Each prediction takes ``--render-seconds`` of real time (the emulator plays Runway's 833 s faster).
``--naive`` runs the same schedule with a new ``aiohttp.ClientSession`` per poll and no shared budget, as
several official providers' triggers do, for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from typing import Any

import aiohttp

from airflow_runway.emulator import EmulatorConfig, EmulatorServer
from airflow_runway.hooks.eachlabs import EachlabsHook
from airflow_runway.polling import PollSchedule
from airflow_runway.triggers.prediction import EachlabsPredictionTrigger

RUNWAY_INPUT = {"promptText": "bench", "model": "gen3a_turbo", "ratio": "16:9", "duration": "5", "watermark": "false"}


async def sample_gets(emulator: EmulatorServer, samples: list[tuple[float, int]], stop: asyncio.Event) -> None:
    """Record the emulator's GET counter every second, from a thread so the admin calls never touch the loop."""
    while not stop.is_set():
        gets = (await asyncio.to_thread(emulator.stats))["gets"]
        samples.append((time.monotonic(), gets))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)


async def loop_lag(stop: asyncio.Event, tick: float = 0.05) -> float:
    """The worst lateness of a ``tick``-second sleep while the triggers run: the event loop's responsiveness."""
    worst = 0.0
    while not stop.is_set():
        start = time.monotonic()
        await asyncio.sleep(tick)
        worst = max(worst, time.monotonic() - start - tick)
    return worst


def busiest_window(samples: list[tuple[float, int]], window: float = 60.0) -> int:
    best = 0
    for i, (t0, g0) in enumerate(samples):
        for t1, g1 in samples[i:]:
            if t1 - t0 > window:
                break
            best = max(best, g1 - g0)
    return best


async def run(args: argparse.Namespace, emulator: EmulatorServer) -> dict[str, Any]:
    hook = EachlabsHook()
    ids = [hook.create_prediction(model="runway", version="0.0.1", input=RUNWAY_INPUT) for _ in range(args.triggers)]
    hook.close()
    emulator_stats = emulator.stats()
    connections_before, gets_before = emulator_stats["tcp_connections"], emulator_stats["gets"]

    deadline = time.time() + 3600
    triggers = [
        EachlabsPredictionTrigger(
            prediction_id=pid,
            poll_interval=args.poll_interval,
            max_poll_interval=args.max_poll_interval,
            deadline=deadline,
        )
        for pid in ids
    ]
    stop = asyncio.Event()
    samples: list[tuple[float, int]] = []
    sampler = asyncio.create_task(sample_gets(emulator, samples, stop))
    lag = asyncio.create_task(loop_lag(stop))
    started = time.monotonic()

    async def one(trigger: EachlabsPredictionTrigger) -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    async def naive(trigger: EachlabsPredictionTrigger) -> list[dict[str, Any]]:
        """A new session (so a new TCP connection) per poll, no shared budget: the pattern we avoid."""
        schedule = PollSchedule(args.poll_interval, args.max_poll_interval)
        url = f"{emulator.url}/v1/prediction/{trigger.prediction_id}"
        while True:
            async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
                body = await response.json()
            if body["status"] == "success":
                return [{"status": "success"}]
            await asyncio.sleep(schedule.next_delay())

    headers = {"X-API-Key": emulator.api_key}
    results = await asyncio.gather(*((naive if args.naive else one)(t) for t in triggers))
    elapsed = time.monotonic() - started
    stop.set()
    await sampler
    worst_lag = await lag
    stats = emulator.stats()
    statuses: dict[str, int] = {}
    for events in results:
        assert len(events) == 1, f"a trigger yielded {len(events)} events"
        statuses[events[0]["status"]] = statuses.get(events[0]["status"], 0) + 1
    return {
        "mode": "naive: session per poll, no budget" if args.naive else "EachlabsPredictionTrigger",
        "triggers": args.triggers,
        "events": statuses,
        "wall_seconds": round(elapsed, 1),
        "tcp_connections_opened": stats["tcp_connections"] - connections_before,
        "status_requests": stats["gets"] - gets_before,
        "status_requests_per_trigger": round((stats["gets"] - gets_before) / args.triggers, 2),
        "busiest_60s_window": busiest_window(samples),
        "rate_limit_per_minute": args.rate_limit,
        "worst_event_loop_lag_ms": round(worst_lag * 1000, 1),
        "creates": stats["creates"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--triggers", type=int, default=200)
    parser.add_argument("--rate-limit", type=int, default=60, help="the connection's rate_limit_per_minute")
    parser.add_argument("--render-seconds", type=float, default=60.0, help="real seconds each prediction takes")
    parser.add_argument("--poll-interval", type=float, default=10.0)
    parser.add_argument("--max-poll-interval", type=float, default=60.0)
    parser.add_argument("--naive", action="store_true", help="a new HTTP session per poll, no shared budget")
    args = parser.parse_args()

    config = EmulatorConfig(api_key="bench-key", duration=833, speed=833 / args.render_seconds, max_in_flight=None)
    with EmulatorServer(config, port=0) as emulator:
        os.environ["AIRFLOW_CONN_EACHLABS_DEFAULT"] = json.dumps(
            {
                "conn_type": "eachlabs",
                "host": emulator.url,
                "password": emulator.api_key,
                "extra": {"rate_limit_per_minute": args.rate_limit},
            }
        )
        print(json.dumps(asyncio.run(run(args, emulator)), indent=2))


if __name__ == "__main__":
    main()
