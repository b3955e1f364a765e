"""Poll policies under the API's real constraint, on a simulated clock: thousands of predictions in seconds.

The API allows 60 requests per minute per key and 10 predictions in flight, and refreshes a prediction's status
about every 5 s. Each simulated prediction renders for ~833 s (uniform +-20%), except 5% that fail within their
first minute. ``--concurrency`` slots run predictions back to back (a new one starts as soon as the previous one
is detected), as a pool of that many slots would. Each wait runs the trigger's loop (poll at once, then sleep the
schedule's ``next_delay``) with the very classes the trigger uses:

* ``ours``: :class:`~airflow_runway.poll_policy.FinishAwareSchedule` with the shared
  :class:`~airflow_runway.hooks.session.PriorityLimiter` budget, each poll acquiring with its ``urgency()``;
* ``ours, FIFO budget``: the same schedule, every poll acquiring with the same urgency (to show what the
  priority buys);
* ``previous``: this provider's policy before the finish-aware one (10 s backing off to 60 s), FIFO budget;
* ``fixed Ns``: ``BackoffSchedule(N, N)`` without a shared budget, as the seed's loop (1 s), Runway's SDK (6 s),
  Databricks (30 s) and the OpenAI/Anthropic/dbt Cloud triggers (60 s) poll.

They run on an asyncio event loop whose clock jumps to the next timer (:class:`VirtualTimeLoop`), so the
limiter's timers and the sleeps are the real code paths. The simulated API counts a request over 60 in any
60-second window as a 429 (with ``Retry-After``: when the window frees). Detection latency is from the moment a
prediction really finished to the poll that reports it (the refresh quantum included).

    python benchmarks/poll_policy_sim.py --predictions 2000
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import selectors
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from airflow_runway.hooks.session import PriorityLimiter
from airflow_runway.poll_policy import (
    API_REFRESH_QUANTUM,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    MODEL_PRIORS,
    FinishAwareSchedule,
    schedule_for_wait,
)

RATE_LIMIT_PER_MINUTE = 60
EXPECTED = 833.0
SPREAD = 0.2
EARLY_FAILURE_RATE = 0.05
EARLY_FAILURE_WITHIN = 60.0


# ------------------------------------------------------------------------------------------- simulated clock


class _JumpSelector(selectors.DefaultSelector):
    """A selector that, when nothing is ready, advances its loop's clock by the timeout instead of waiting."""

    loop: VirtualTimeLoop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if not events:
            if timeout is None:
                raise RuntimeError("the simulation waits on nothing: deadlock")
            self.loop.advance(timeout)
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on simulated time: whenever no callback is ready, the clock jumps to the next timer."""

    def __init__(self) -> None:
        selector = _JumpSelector()
        self._now = 0.0
        super().__init__(selector)
        selector.loop = self

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += max(0.0, seconds)


# ----------------------------------------------------------------------------------------------- simulated API


@dataclass
class SimPrediction:
    """One prediction: when it started, when it really ends, how, and the phase of its status refresh."""

    started: float
    duration: float
    failed: bool
    refresh_phase: float

    @property
    def ends(self) -> float:
        return self.started + self.duration

    def visible_terminal(self, now: float) -> bool:
        """Whether a read at ``now`` shows it finished: status only refreshes on its ~5 s ticks."""
        first_tick = self.started + self.refresh_phase
        ticks = max(0, int((self.ends - first_tick) // API_REFRESH_QUANTUM) + 1)
        if self.ends <= first_tick:
            ticks = 0
        return now >= first_tick + ticks * API_REFRESH_QUANTUM


class SimApi:
    """The API's per-key rate limit: at most ``limit`` accepted requests in any 60-second window."""

    def __init__(self, limit: int = RATE_LIMIT_PER_MINUTE, window: float = 60.0) -> None:
        self.limit, self.window = limit, window
        self.accepted: collections.deque[float] = collections.deque()
        self.requests = 0
        self.rejected = 0
        self.busiest_window = 0
        self._all: collections.deque[float] = collections.deque()

    def get(self, prediction: SimPrediction, now: float) -> tuple[bool, float | None]:
        """``(finished, retry_after)``: a 429 comes back as ``(False, seconds until the window frees)``."""
        self.requests += 1
        self._all.append(now)
        while self._all and self._all[0] <= now - self.window + 1e-6:
            self._all.popleft()
        self.busiest_window = max(self.busiest_window, len(self._all))
        while self.accepted and self.accepted[0] <= now - self.window + 1e-6:
            self.accepted.popleft()
        if len(self.accepted) >= self.limit:
            self.rejected += 1
            return False, self.accepted[0] + self.window - now
        self.accepted.append(now)
        return prediction.visible_terminal(now), None


# ------------------------------------------------------------------------------------------------- policies


class Schedule(Protocol):
    def next_delay(self, retry_after: float | None = None) -> float: ...


@dataclass(frozen=True)
class Policy:
    """A poll schedule factory, and whether its polls go through the shared budget."""

    name: str
    schedule: Callable[[float, Callable[[], float]], Schedule]
    budget: bool
    prioritized: bool = True


class BackoffSchedule:
    """The alternatives' pollers: every ``interval`` seconds, growing by ``factor`` up to ``max_interval``.

    ``BackoffSchedule(N, N)`` is a fixed N-second poller; ``BackoffSchedule(10, 60)`` is this provider's policy
    before the finish-aware one (10 s backing off to 60 s).

    A ``Retry-After`` from the API is a floor: the next poll never comes sooner than the server asked.

    :param interval: the first (and shortest) gap between two status requests, in seconds.
    :param max_interval: the cap the gap grows toward, in seconds.
    :param factor: how much the gap grows after each poll that found the prediction still running.
    """

    def __init__(self, interval: float, max_interval: float | None = None, factor: float = 1.5) -> None:
        if interval <= 0:
            raise ValueError(f"poll interval must be positive, got {interval!r}")
        self.interval = float(interval)
        self.max_interval = max(float(max_interval if max_interval is not None else interval), self.interval)
        self.factor = factor
        self._current = self.interval

    def next_delay(self, retry_after: float | None = None) -> float:
        """Return the gap before the next poll and advance the schedule."""
        delay = self._current
        self._current = min(self._current * self.factor, self.max_interval)
        if retry_after is not None:
            delay = max(delay, float(retry_after))
        return delay


def finish_aware(started_at: float, clock: Callable[[], float]) -> FinishAwareSchedule:
    """Our policy exactly as the trigger builds it with the operators' defaults (the Runway prior)."""
    prior = MODEL_PRIORS["runway"]
    return schedule_for_wait(
        started_at=started_at,
        poll_interval=DEFAULT_POLL_INTERVAL,
        max_poll_interval=DEFAULT_MAX_POLL_INTERVAL,
        expected_duration=prior.expected,
        spread=prior.spread,
        clock=clock,
    )


def policies(fixed: tuple[float, ...] = (1, 6, 30, 60)) -> list[Policy]:
    return [
        Policy("ours", finish_aware, budget=True),
        Policy("ours, FIFO budget", finish_aware, budget=True, prioritized=False),
        Policy("previous 10->60s", lambda _s, _c: BackoffSchedule(10, 60), budget=True),
        *(Policy(f"fixed {g:g}s", lambda _s, _c, g=g: BackoffSchedule(g, g), budget=False) for g in fixed),
    ]


# ----------------------------------------------------------------------------------------------- simulation


def make_predictions(count: int, seed: int) -> list[tuple[float, bool, float]]:
    """``(duration, failed, refresh_phase)`` per prediction: the same workload for every policy."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        if rng.random() < EARLY_FAILURE_RATE:
            out.append((rng.uniform(1.0, EARLY_FAILURE_WITHIN), True, rng.uniform(0, API_REFRESH_QUANTUM)))
        else:
            out.append((EXPECTED * rng.uniform(1 - SPREAD, 1 + SPREAD), False, rng.uniform(0, API_REFRESH_QUANTUM)))
    return out


@dataclass
class Outcome:
    failed: bool
    latency: float
    requests: int


async def _simulate(policy: Policy, workload: list[tuple[float, bool, float]], concurrency: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    api = SimApi()
    limiter = PriorityLimiter(RATE_LIMIT_PER_MINUTE) if policy.budget else None
    queue = collections.deque(workload)
    outcomes: list[Outcome] = []

    async def wait(prediction: SimPrediction) -> Outcome:
        """The trigger's loop: poll, observe, sleep ``next_delay`` (with ``Retry-After`` as a floor)."""
        schedule = policy.schedule(prediction.started, loop.time)
        urgency = getattr(schedule, "urgency", None) if policy.prioritized else None
        requests = 0
        while True:
            if limiter is not None:
                await limiter.acquire(urgency() if urgency is not None else 0.0)
            requests += 1
            finished, retry_after = api.get(prediction, loop.time())
            if finished:
                return Outcome(prediction.failed, loop.time() - prediction.ends, requests)
            await asyncio.sleep(schedule.next_delay(retry_after))

    async def slot() -> None:
        while queue:
            duration, failed, phase = queue.popleft()
            outcomes.append(await wait(SimPrediction(loop.time(), duration, failed, phase)))

    await asyncio.gather(*(slot() for _ in range(concurrency)))
    return summarize(policy.name, concurrency, outcomes, api, loop.time())


def _percentile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if q < 100 else max(values)


def summarize(name: str, concurrency: int, outcomes: list[Outcome], api: SimApi, sim_seconds: float) -> dict[str, Any]:
    done = [o.latency for o in outcomes if not o.failed]
    failures = [o.latency for o in outcomes if o.failed]
    return {
        "policy": name,
        "in_flight": concurrency,
        "predictions": len(outcomes),
        "requests_per_prediction": round(api.requests / len(outcomes), 1),
        "requests_per_minute": round(api.requests / sim_seconds * 60, 1),
        "busiest_minute": api.busiest_window,
        "429s": api.rejected,
        "latency_p50": round(_percentile(done, 50), 1),
        "latency_p95": round(_percentile(done, 95), 1),
        "latency_max": round(max(done), 1),
        "early_failure_latency_max": round(max(failures), 1) if failures else None,
        "latencies": done,
    }


def simulate(policy: Policy, workload: list[tuple[float, bool, float]], concurrency: int) -> dict[str, Any]:
    """Run one policy over the workload with ``concurrency`` slots on a fresh simulated clock."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(_simulate(policy, workload, concurrency))
    finally:
        loop.close()


def run(predictions: int, seed: int = 7, concurrencies: tuple[int, ...] = (1, 10)) -> list[dict[str, Any]]:
    """Every policy at every concurrency over the same workload."""
    workload = make_predictions(predictions, seed)
    return [simulate(policy, workload, n) for n in concurrencies for policy in policies()]


def goals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goals, checked on the rows: ours at 10 in flight against the fixed 6 s poller at 1."""
    by = {(r["policy"], r["in_flight"]): r for r in rows}
    ours, six = by[("ours", 10)], by[("fixed 6s", 1)]
    return {
        "within_budget_at_10 (0 429s, busiest minute <= 60)": ours["429s"] == 0 and ours["busiest_minute"] <= 60,
        f"p95 {ours['latency_p95']}s <= fixed 6s single p95 {six['latency_p95']}s": ours["latency_p95"]
        <= six["latency_p95"],
        f"requests {ours['requests_per_prediction']} <= half of fixed 6s {six['requests_per_prediction']}": ours[
            "requests_per_prediction"
        ]
        <= six["requests_per_prediction"] / 2,
        f"early failures detected within 30 s (max {ours['early_failure_latency_max']}s)": (
            ours["early_failure_latency_max"] or 0
        )
        <= 30,
    }


COLUMNS = (
    "policy",
    "in_flight",
    "requests_per_prediction",
    "requests_per_minute",
    "busiest_minute",
    "429s",
    "latency_p50",
    "latency_p95",
    "latency_max",
    "early_failure_latency_max",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = run(args.predictions, args.seed)
    if args.json:
        print(json.dumps([{k: r[k] for k in COLUMNS} for r in rows], indent=2))
    else:
        from table import print_table  # benchmarks/table.py, beside this script

        print_table(rows, COLUMNS)
        for goal, met in goals(rows).items():
            print(f"  {'met' if met else 'NOT MET'}: {goal}")
    print(f"simulated {args.predictions} predictions x {len(rows)} runs in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
