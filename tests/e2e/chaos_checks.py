"""The chaos suite's invariants, judged from what the observer saw: the test's pod watch
(`podwatch`), the side-effect ledger (`ledger`), the TaskRuns as listed at the end, and, for
the one invariant about Drover's own consistency, its store. Pure functions of that evidence,
so a failing run can be re-judged from its dump."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from drover.protocol.names import ANNOTATION_SCHEDULED_TIME, LABEL_PARENT_RUN, LABEL_RUN
from drover.protocol.phases import FINISHED_PHASES
from tests.e2e.ledger import Row
from tests.e2e.podwatch import PodLife

INVARIANTS = (
    "terminal",
    "limit",
    "exactly-once",
    "zombie-write",
    "duplicate-tick",
    "duplicate-child",
    "status-vs-store",
)


#: The chaos SDK Tasks' `timeouts.heartbeat`: a runner silent longer is stalled, its slot freed.
HEARTBEAT_S = 5.0


@dataclass(frozen=True)
class Limit:
    limit: int
    per_key: int | None = None
    #: `slotRelease: PodGone`: pods themselves, creation to end, stay within the limit.
    pods: bool = False


@dataclass
class RunView:
    """A TaskRun as listed once the faults stopped and the runs settled."""

    name: str
    uid: str
    task: str
    phase: str
    key: str
    labels: dict[str, str]
    annotations: dict[str, str]
    output: Any


@dataclass
class Evidence:
    runs: list[RunView]
    pods: list[PodLife]
    rows: list[Row]
    limits: dict[str, Limit]
    store_phases: dict[str, str]  # run uid -> phase in drover_runs
    store_steps: dict[str, list[Any]]  # run uid -> checkpointed step values
    step_tasks: set[str]  # Tasks running `chaos_tasks.five_steps`
    sdk_tasks: set[str]  # Tasks whose pods run the SDK's runner
    children_per_parent: int


@dataclass
class Verdict:
    violations: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in INVARIANTS})
    #: The documented overlap: pods beyond a limit while older ones tear down.
    teardown_peak_over: int = 0
    teardown_seconds_over: float = 0.0

    def count(self, invariant: str) -> int:
        return len(self.violations[invariant])


def judge(ev: Evidence) -> Verdict:
    verdict = Verdict()
    v = verdict.violations
    by_name = {r.name: r for r in ev.runs}
    pods_of: dict[str, list[PodLife]] = defaultdict(list)
    for pod in ev.pods:
        pods_of[pod.labels.get(LABEL_RUN, "")].append(pod)
    for pods in pods_of.values():
        pods.sort(key=lambda p: p.seen_at)

    for run in ev.runs:
        if run.phase not in FINISHED_PHASES:
            v["terminal"].append(f"{run.name}: {run.phase or 'no phase'}")
        stored = ev.store_phases.get(run.uid)
        if stored != run.phase:
            v["status-vs-store"].append(f"{run.name}: status {run.phase}, store {stored}")

    _limits(ev, by_name, pods_of, verdict)
    _steps(ev, pods_of, verdict)
    _zombies(ev, pods_of, verdict)

    ticks = Counter(
        r.annotations[ANNOTATION_SCHEDULED_TIME]
        for r in ev.runs
        if ANNOTATION_SCHEDULED_TIME in r.annotations
    )
    v["duplicate-tick"] += [f"tick {t} ran {n} times" for t, n in ticks.items() if n > 1]
    children = Counter(r.labels[LABEL_PARENT_RUN] for r in ev.runs if LABEL_PARENT_RUN in r.labels)
    v["duplicate-child"] += [
        f"{parent}: {n} children" for parent, n in children.items() if n > ev.children_per_parent
    ]
    return verdict


def _limits(
    ev: Evidence, by_name: dict[str, RunView], pods_of: dict[str, list[PodLife]], out: Verdict
) -> None:
    """At no moment more executions holding a slot than the limit.

    A command task's slot is released at its pod's end, so its pod holds the slot from its
    creation to its end (or until a newer pod of its run exists: given up as lost). An SDK
    task's slot is released when its runner reports, while the pod still tears down, so what
    must stay within the limit is its task code at work: from the pod's first ledger row to
    its last. A Task with `slotRelease: PodGone` holds its slot until the pod is gone, so
    its pods themselves, from creation to end, must stay within the limit. How far and how
    long pods overlapped beyond the limit anyway is measured (the documented overlap), not
    counted as a violation."""
    first, last = _work_spans(ev.rows)
    for task, limit in ev.limits.items():
        groups: dict[str, list[tuple[tuple[float, float], tuple[float, float]]]] = defaultdict(list)
        for run_name, pods in pods_of.items():
            run = by_name.get(run_name)
            if run is None or run.task != task:
                continue
            for i, pod in enumerate(pods):
                end = pod.ended_at if pod.ended_at is not None else float("inf")
                if limit.pods:
                    held = (pod.seen_at, end)
                elif task in ev.sdk_tasks:
                    held = (first.get(pod.name, 0.0), last.get(pod.name, 0.0))
                else:
                    stop = pods[i + 1].seen_at if i + 1 < len(pods) else end
                    held = (pod.seen_at, min(end, stop))
                lived = (pod.seen_at, end)
                groups["*"].append((held, lived))
                if limit.per_key is not None:
                    groups[run.key].append((held, lived))
        for key, lives in groups.items():
            cap = limit.limit if key == "*" else limit.per_key or limit.limit
            holding = _peak([held for held, _ in lives])
            if holding[0] > cap:
                out.violations["limit"].append(f"{task}[{key}]: {holding[0]} > {cap}")
            existing = _peak([lived for _, lived in lives], cap)
            out.teardown_peak_over = max(out.teardown_peak_over, existing[0] - cap)
            out.teardown_seconds_over = max(out.teardown_seconds_over, existing[1])


def _work_spans(rows: list[Row]) -> tuple[dict[str, float], dict[str, float]]:
    """Each pod's task code at work: from its first ledger row to its last row before a
    silence longer than the heartbeat timeout. Past that, Drover has (by design) found it
    stalled and given its slot to another run; a frozen runner that wakes and writes again is
    a zombie, judged by the zombie-write invariant (one in-flight row allowed), not here."""
    by_pod: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        by_pod[row.pod].append(row.at)
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for pod, times in by_pod.items():
        times.sort()
        first[pod] = end = times[0]
        for at in times[1:]:
            if at - end > HEARTBEAT_S:
                break
            end = at
        last[pod] = end
    return first, last


def _peak(intervals: list[tuple[float, float]], cap: int = 0) -> tuple[int, float]:
    """The most intervals open at once, and the longest stretch with more than `cap` open."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    edges.sort(key=lambda e: (e[0], e[1]))  # ends first on ties
    current = peak = 0
    over_since: float | None = None
    longest = 0.0
    for at, delta in edges:
        current += delta
        peak = max(peak, current)
        if current > cap and over_since is None:
            over_since = at
        elif current <= cap and over_since is not None:
            longest = max(longest, at - over_since)
            over_since = None
    return peak, longest


def _steps(ev: Evidence, pods_of: dict[str, list[PodLife]], out: Verdict) -> None:
    """Every step that returned (its execution is in the run's output) has exactly that
    side effect; other executions of it only from earlier pods, interrupted before their
    checkpoint; the store holds the same checkpoints the output names."""
    v = out.violations["exactly-once"]
    rows_of: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in ev.rows:
        if row.event == "effect":
            rows_of[(row.run, row.step)].append(row)
    for run in ev.runs:
        if run.task not in ev.step_tasks or run.phase != "Succeeded":
            continue
        order = {p.name: i for i, p in enumerate(pods_of.get(run.name, []))}
        executions = list(run.output or [])
        if sorted(map(str, ev.store_steps.get(run.uid, []))) != sorted(executions):
            v.append(f"{run.name}: the store's checkpoints differ from the output")
        for index, accepted in enumerate(executions):
            rows = rows_of[(run.name, f"s{index}")]
            winner = [r for r in rows if r.execution == accepted]
            if len(winner) != 1:
                v.append(f"{run.name} s{index}: accepted execution not in the ledger")
                continue
            rank = order.get(winner[0].pod, -1)
            for other in rows:
                if other is winner[0]:
                    continue
                if other.pod == winner[0].pod or order.get(other.pod, -1) > rank:
                    v.append(f"{run.name} s{index}: ran again in {other.pod} after a checkpoint")


def _zombies(ev: Evidence, pods_of: dict[str, list[PodLife]], out: Verdict) -> None:
    """Once a newer pod of its run exists, an old pod's process (stopped, orphaned) may at
    most finish what it was in (one more ledger row): a second one means a checkpoint it
    made after being superseded was accepted, so it went on."""
    rows_by_pod: dict[str, list[Row]] = defaultdict(list)
    for row in ev.rows:
        rows_by_pod[row.pod].append(row)
    for pods in pods_of.values():
        for older, newer in itertools.pairwise(pods):
            late = sorted(
                (r for r in rows_by_pod.get(older.name, []) if r.at > newer.seen_at),
                key=lambda r: r.at,
            )
            if len(late) > 1:
                events = ", ".join(f"{r.event}:{r.step}" for r in late)
                out.violations["zombie-write"].append(f"{older.name} after {newer.name}: {events}")
