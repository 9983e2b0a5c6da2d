"""The operator benchmark's table: per figure, each system's median over its trials with the
spread (min–max), the ratio of the medians, and the goal it is held to (issue 19)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Results = dict[str, Any]


@dataclass(frozen=True)
class Figure:
    """One row: where the figure is in a trial's results, and the goal it is held to."""

    label: str
    scenario: str
    path: tuple[str, ...]
    goal: str = ""
    # Given Drover's and the Job controller's medians (and the limit), whether the goal is met.
    met: Callable[[float, float | None, int], bool] | None = None
    ratio: bool = True


def figures(args: Any) -> list[Figure]:
    tp = f"{args.runs_throughput} runs @{args.limit}"
    burst = f"burst {args.runs_latency}"
    return [
        Figure(
            f"{burst}: create→pod p50 (ms)",
            "latency",
            ("create_to_pod_ms", "p50"),
            "≤ 0.5× jobs",
            lambda d, j, _: j is not None and d <= 0.5 * j,
        ),
        Figure(f"{burst}: create→pod p99 (ms)", "latency", ("create_to_pod_ms", "p99")),
        Figure(f"{burst}: create→done p50 (ms)", "latency", ("create_to_done_ms", "p50")),
        # Where the two cores went (control plane, node agent and its pods, Postgres, the
        # operator, the bench): a system that costs less CPU per run leaves more to the rest.
        Figure(f"{burst}: CPU ms per run, all components", "latency", ("cpu_ms_per_run",)),
        Figure(
            f"{burst}: API requests per run",
            "latency",
            ("api_requests", "per_run"),
            "≤ 8",
            lambda d, _j, _l: d <= 8,
        ),
        Figure(
            f"{burst}: … by operator / job ctrl",
            "latency",
            ("api_requests", "controller_per_run"),
        ),
        Figure(
            f"{tp}: wall (s)",
            "throughput",
            ("wall_s",),
            "≤ 0.8× jobs",
            lambda d, j, _: j is not None and d <= 0.8 * j,
        ),
        Figure(
            f"{tp}: peak concurrent pods",
            "throughput",
            ("max_concurrent_pods",),
            f"= {args.limit}",
            lambda d, _j, limit: d == limit,
            ratio=False,
        ),
        Figure(f"{tp}: mean concurrent pods", "throughput", ("mean_concurrent_pods",), ratio=False),
        # Context for the wall time: Drover's 500 creates go through the API server (a busy
        # one makes the wall creation-bound); the Indexed Job is one create.
        Figure(f"{tp}: creating the runs (s)", "throughput", ("create_s",), ratio=False),
        Figure(f"{tp}: CPU ms per run, all components", "throughput", ("cpu_ms_per_run",)),
        Figure(
            f"{tp}: API requests per run",
            "throughput",
            ("api_requests", "per_run"),
            "≤ 8",
            lambda d, _j, _l: d <= 8,
        ),
        Figure(
            f"{tp}: … by operator / job ctrl",
            "throughput",
            ("api_requests", "controller_per_run"),
        ),
        Figure(
            "idle single runs: create→pod p50 (ms)",
            "idle",
            ("create_to_pod_ms", "p50"),
            "≤ 15",
            lambda d, _j, _l: d <= 15,
        ),
    ]


def values(results: Results, scenario: str, system: str, path: tuple[str, ...]) -> list[float]:
    """The figure from each trial that measured it (a failed trial has none)."""
    found: list[float] = []
    for trial in results.get(scenario, {}).get(system, []):
        value: Any = trial
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            found.append(float(value))
    return found


def _cell(samples: list[float]) -> str:
    if not samples:
        return "—"
    median = statistics.median(samples)
    if len(samples) == 1:
        return f"{median:g}"
    return f"{median:g} ({min(samples):g}–{max(samples):g})"


def table(results: Results, args: Any) -> list[dict[str, Any]]:
    """One dict per figure: label, medians, cells, ratio, goal and whether it is met."""
    rows: list[dict[str, Any]] = []
    for figure in figures(args):
        drover = values(results, figure.scenario, "drover", figure.path)
        jobs = values(results, figure.scenario, "jobs", figure.path)
        d = statistics.median(drover) if drover else None
        j = statistics.median(jobs) if jobs else None
        met = None
        if figure.met is not None and d is not None:
            met = figure.met(d, j, args.limit)
        rows.append(
            {
                "figure": figure.label,
                "drover": d,
                "jobs": j,
                "drover_cell": _cell(drover),
                "jobs_cell": _cell(jobs),
                "drover/jobs": round(d / j, 2) if figure.ratio and d is not None and j else None,
                "goal": figure.goal,
                "met": met,
                "trials": [len(drover), len(jobs)],
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]], trials: int) -> None:
    print(f"\nmedian (min–max) over up to {trials} alternating trials per system (n: trials)")
    header = f"{'figure':<40}{'drover':>27}{'jobs':>27}{'d/j':>7}  {'goal':<13}{'met':<5}n"
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = "" if row["drover/jobs"] is None else f"{row['drover/jobs']:g}"
        met = {True: "yes", False: "NO", None: ""}[row["met"]]
        print(
            f"{row['figure']:<40}{row['drover_cell']:>27}{row['jobs_cell']:>27}{ratio:>7}"
            f"  {row['goal']:<13}{met:<5}{row['trials'][0]}/{row['trials'][1]}"
        )
