"""`make bench`: every benchmark side by side on this machine, its tables on stdout, plots and data in ``--out``.

1. Worker slots on a real deployment (LocalExecutor + PostgreSQL, the e2e harness): the same N time-compressed
   predictions (400 s of real time each) through our deferrable and sync modes, the seed's 1 s loop, and
   HttpOperator + HttpSensor in reschedule and poke mode, the modes staggered so that their waits overlap
   (``worker_slots_benchmark.py``).
2. Poll policy under the API's limits, on a simulated clock (``poll_policy_sim.py``).
3. Triggerer scale: 1,000 concurrent waits in one process, the emulator in another (``trigger_benchmark.py``).
4. Transfer at full speed: 1 GiB to the loopback S3 server and to local disk (``transfer_benchmark.py``).

    python benchmarks/run_all.py                 # the full run (about 20 minutes; part 1, the heaviest, runs last)
    python benchmarks/run_all.py --smoke         # every benchmark at a tiny size (CI: under 2 minutes)

Each part prints a Markdown table and the issue's goals, met or not; ``--out`` (default ``bench-results/``)
receives ``results.json``, ``results.md`` and one PNG per part.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import poll_policy_sim
import transfer_benchmark
import trigger_benchmark
import worker_slots_benchmark
from table import format_table


def section(title: str, rows: list[dict[str, Any]], columns: tuple[str, ...], goals: dict[str, bool]) -> str:
    lines = [f"## {title}", "", format_table(rows, columns), ""]
    lines += [f"- {'met' if met else '**NOT MET**'}: {goal}" for goal, met in goals.items()]
    return "\n".join(lines) + "\n"


def plot_policies(rows: list[dict[str, Any]], path: Path) -> None:
    fig, (cdf, bars) = plt.subplots(1, 2, figsize=(13, 4.8))
    for row in rows:
        if row["in_flight"] != 10:
            continue
        latencies = sorted(row["latencies"])
        if not latencies:
            continue
        cdf.step(
            latencies, [(i + 1) / len(latencies) for i in range(len(latencies))], where="post", label=row["policy"]
        )
    cdf.set(xscale="log", xlabel="detection latency, s (log)", ylabel="share of finished videos", title="10 in flight")
    cdf.legend(fontsize=8)
    cdf.grid(alpha=0.3)
    names = [f"{r['policy']} ({r['in_flight']})" for r in rows]
    bars.barh(names, [r["requests_per_prediction"] for r in rows], color="tab:blue")
    bars.set(xscale="log", xlabel="status requests per prediction (log)", title="cost (in flight)")
    bars.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    bars.invert_yaxis()
    bars.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bars(rows: list[dict[str, Any]], metrics: tuple[str, ...], title: str, path: Path) -> None:
    """One bar chart per metric, ours in green, the alternatives in grey, each bar labelled ("-": not measured)."""
    good = [r for r in rows if "error" not in r]
    colors = ["tab:green" if r["mode"].startswith(("ours", "operator")) else "tab:gray" for r in good]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.8))
    for ax, metric in zip(axes, metrics, strict=True):
        values = [r.get(metric) for r in good]
        bars = ax.barh([r["mode"] for r in good], [v or 0 for v in values], color=colors)
        ax.bar_label(bars, labels=["-" if v is None else f"{v:,.4g}" for v in values], fontsize=8, padding=2)
        ax.margins(x=0.25)
        ax.set_title(metric, fontsize=10)
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks every benchmark runs (CI)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--parts", nargs="+", default=["slots", "policy", "triggerer", "transfer"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sections: dict[int, str] = {}
    results: dict[str, Any] = {}

    if "policy" in args.parts:
        predictions = 60 if args.smoke else 2000
        print(f"\n[2] poll policy: {predictions} simulated predictions per policy ...", flush=True)
        rows = poll_policy_sim.run(predictions)
        results["policy"] = [{k: r[k] for k in poll_policy_sim.COLUMNS} for r in rows]
        title = f"2. Poll policy ({predictions} simulated predictions; 60 requests/min; latency in s)"
        sections[2] = section(title, rows, poll_policy_sim.COLUMNS, poll_policy_sim.goals(rows))
        print(sections[2], flush=True)
        plot_policies(rows, args.out / "poll_policy.png")

    if "triggerer" in args.parts:
        triggers, seconds, warmup, rounds = (50, 5.0, 3.0, 1) if args.smoke else (1000, 60.0, 15.0, 2)
        print(f"\n[3] triggerer: {triggers} waits, {seconds:g} s measured per mode, {rounds} round(s) ...", flush=True)
        rows = trigger_benchmark.run(triggers, seconds, warmup, rounds=rounds)
        results["triggerer"] = rows
        title = (
            f"3. Triggerer scale ({triggers} concurrent waits, 10 s poll interval, {seconds:g} s measured; "
            f"each mode's least loaded of {rounds} interleaved runs)"
        )
        sections[3] = section(title, rows, trigger_benchmark.COLUMNS, trigger_benchmark.goals(rows))
        print(sections[3], flush=True)
        metrics = ("core_%", "cpu_ms_per_request", "lag_p99_ms", "tcp_connections")
        # At the API's 60/min budget the CPU per request is the idle cost of 1,000 waits over 60 requests: not shown.
        plotted = [{**r, "cpu_ms_per_request": None} if r.get("budget_per_min") == 60 else r for r in rows]
        plot_bars(plotted, metrics, f"Triggerer: {triggers} concurrent waits", args.out / "triggerer.png")

    if "transfer" in args.parts:
        size, repeat = (32 * 1024**2, 1) if args.smoke else (1024**3, 2)
        print(f"\n[4] transfer: {size / 1024**2:,.0f} MiB, {repeat} run(s) per mode ...", flush=True)
        rows = transfer_benchmark.run(size, repeat=repeat)
        results["transfer"] = rows
        title = f"4. Transfer of {size / 1024**2:,.0f} MiB (best of {repeat} interleaved runs per mode)"
        sections[4] = section(title, rows, transfer_benchmark.COLUMNS, transfer_benchmark.goals(rows))
        print(sections[4], flush=True)
        plot_bars(
            rows, ("MiB/s", "rss_growth_MiB"), f"Transfer of {size / 1024**2:,.0f} MiB", args.out / "transfer.png"
        )

    # Part 1 runs last: its deployment (52 worker processes, PostgreSQL) is the heaviest load on the machine, and the
    # other parts measure CPU time and throughput.
    if "slots" in args.parts:
        slots = worker_slots_benchmark
        scale = (
            "2 predictions per mode, all modes at once"
            if args.smoke
            else "10 predictions of 400 s per mode, the modes staggered"
        )
        print(f"\n[1] worker slots: a LocalExecutor + PostgreSQL deployment, {scale} ...", flush=True)
        try:
            rows, facts = slots.run(args.smoke, progress=lambda line: print(line, flush=True))
        except Exception as error:  # the deployment did not start or a wait failed: report it, run the rest
            rows, facts = [{"mode": "deployment", "error": repr(error)[:2000]}], {}
        rows = slots.with_ratios(rows)
        results["slots"] = rows
        results["slots_facts"] = facts
        title = slots.title(facts) if facts else "1. Worker slots"
        text = section(title, rows, slots.COLUMNS, slots.goals(rows))
        if facts:
            text += "".join(f"- {line}\n" for line in slots.notes(rows, facts))
        if breakdown := slots.breakdown_rows(rows, facts.get("predictions", 1)):
            text += "\nOur deferrable mode's slot seconds by workload and phase (all tasks):\n\n"
            text += format_table(breakdown, slots.BREAKDOWN_COLUMNS) + "\n"
        sections[1] = text
        print(text, flush=True)
        if facts:
            slots.plot(rows, title, args.out / "worker_slots.png")

    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    header = f"# airflow-runway benchmarks{' (smoke)' if args.smoke else ''}\n"
    (args.out / "results.md").write_text("\n".join([header, *(sections[n] for n in sorted(sections))]))
    print(f"\nwrote {args.out}/results.md, results.json and the PNGs in {time.perf_counter() - started:.0f}s")
    failed = [r for rows in results.values() if isinstance(rows, list) for r in rows if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
