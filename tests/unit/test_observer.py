"""The independent observer's own logic: the ledger's names, slot occupancy from a pod watch,
and the chaos invariants flagging what they must (and not the documented overlap)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drover.protocol import names
from tests.e2e import ledger
from tests.e2e.chaos_checks import Evidence, Limit, RunView, judge
from tests.e2e.ledger import Row
from tests.e2e.podwatch import PodLife, peak_of


def test_the_ledger_reads_the_protocol_environment(tmp_path: Path, monkeypatch: Any) -> None:
    assert (ledger.ENV_RUN_NAME, ledger.ENV_ATTEMPT) == (names.ENV_RUN_NAME, names.ENV_ATTEMPT)
    monkeypatch.setenv(names.ENV_RUN_NAME, "r1")
    monkeypatch.setenv(names.ENV_ATTEMPT, "2")
    first = ledger.write(tmp_path, "effect", step="s0")
    second = ledger.write(tmp_path, "effect", step="s0")
    rows = ledger.read(tmp_path)
    assert [(r.run, r.attempt, r.execution) for r in rows] == [("r1", 2, first), ("r1", 2, second)]
    assert ledger.counts(rows, "effect") == {("r1", "s0"): 2}


def pod(name: str, run: str, seen: float, ended: float | None) -> PodLife:
    labels = {names.LABEL_RUN: run}
    return PodLife(
        name, labels, seen, int(seen * 10), "", ended, None if ended is None else int(ended * 10)
    )


def test_peak_orders_an_end_before_a_start_it_caused() -> None:
    assert peak_of([pod("a", "a", 1, 2), pod("b", "b", 2, 3)]) == 1
    assert peak_of([pod("a", "a", 1, 3), pod("b", "b", 2, 4)]) == 2


def row(run: str, pod_name: str, event: str, at: float, step: str = "", ex: str = "") -> Row:
    return Row(event, run, step, ex or f"{pod_name}-{step}-{at}", 1, pod_name, 1, at, {})


def evidence(
    pods: list[PodLife], rows: list[Row], output: list[str] | None = None, sdk: bool = True
) -> Evidence:
    runs = [
        RunView(
            p.labels[names.LABEL_RUN],
            p.labels[names.LABEL_RUN],
            "t",
            "Succeeded",
            "",
            {},
            {},
            output,
        )
        for p in pods
    ]
    unique = {r.name: r for r in runs}
    return Evidence(
        runs=list(unique.values()),
        pods=pods,
        rows=rows,
        limits={"t": Limit(1)},
        store_phases={r.uid: "Succeeded" for r in unique.values()},
        store_steps={r.uid: list(output or []) for r in unique.values()},
        step_tasks={"t"} if output is not None else set(),
        sdk_tasks={"t"} if sdk else set(),
        children_per_parent=2,
    )


def test_an_sdk_pod_tearing_down_after_its_work_is_the_documented_overlap() -> None:
    pods = [pod("a-a1", "a", 1, 3), pod("b-a1", "b", 2, 4)]
    rows = [row("a", "a-a1", "effect", 1.2, "s0"), row("a", "a-a1", "done", 1.9)]
    rows += [row("b", "b-a1", "effect", 2.1, "s0"), row("b", "b-a1", "done", 3.5)]
    verdict = judge(evidence(pods, rows))
    assert verdict.count("limit") == 0
    assert verdict.teardown_peak_over == 1 and 0.9 < verdict.teardown_seconds_over < 1.1
    working = [*rows, row("a", "a-a1", "effect", 2.5, "s1")]  # a ran on after b began
    assert judge(evidence(pods, working)).count("limit") == 1


def test_a_frozen_runner_holds_no_slot_past_its_stall_but_its_work_before_does() -> None:
    # a-a1 is frozen at 1.5 for longer than the heartbeat timeout; b-a1 takes the slot it
    # gave up; a-a1 wakes at 9 and finishes its in-flight step (a zombie's one row).
    pods = [pod("a-a1", "a", 1, 9.5), pod("b-a1", "b", 7, 10)]
    rows = [row("a", "a-a1", "effect", 1.2, "s0"), row("a", "a-a1", "effect", 1.5, "s1")]
    rows += [row("b", "b-a1", "effect", 7.5, "s0"), row("a", "a-a1", "effect", 9.0, "s2")]
    rows += [row("b", "b-a1", "done", 9.6)]
    assert judge(evidence(pods, rows)).count("limit") == 0
    # Working on, without a stall-long silence, while b-a1 works: over the limit.
    busy = [r for r in rows if r.pod != "a-a1"] + [
        row("a", "a-a1", "effect", at, f"s{i}") for i, at in enumerate((3, 6, 7.8))
    ]
    assert judge(evidence(pods, busy)).count("limit") == 1


def test_a_command_pod_holds_its_slot_until_it_ends() -> None:
    pods = [pod("a-a1", "a", 1, 3), pod("b-a1", "b", 2, 4)]
    assert judge(evidence(pods, [], sdk=False)).count("limit") == 1
    replaced = [pod("a-a1", "a", 1, 3), pod("a-a2", "a", 2, 4)]  # a-a1 given up as lost
    assert judge(evidence(replaced, [], sdk=False)).count("limit") == 0


def test_a_pod_gone_task_counts_its_pods_from_creation_to_end() -> None:
    pods = [pod("a-a1", "a", 1, 3), pod("b-a1", "b", 2, 4)]
    rows = [row("a", "a-a1", "effect", 1.2, "s0"), row("a", "a-a1", "done", 1.9)]
    rows += [row("b", "b-a1", "effect", 2.1, "s0"), row("b", "b-a1", "done", 3.5)]
    strict = evidence(pods, rows)
    strict.limits = {"t": Limit(1, pods=True)}
    assert judge(strict).count("limit") == 1  # the documented overlap is no excuse here
    strict.pods = [pod("a-a1", "a", 1, 2), pod("b-a1", "b", 2, 4)]  # one ends, one starts
    assert judge(strict).count("limit") == 0


def test_a_step_run_again_after_its_checkpoint_and_a_zombie_write_are_flagged() -> None:
    pods = [pod("a-a1", "a", 1, 5), pod("a-a2", "a", 5, 9)]
    rows = [
        row("a", "a-a1", "effect", 2, "s0", "x0"),
        row("a", "a-a2", "effect", 6, "s0", "y0"),  # s0 again although x0 was accepted
        row("a", "a-a1", "effect", 7, "s1", "x1"),  # a zombie, after its successor started...
        row("a", "a-a1", "effect", 8, "s2", "x2"),  # ...went on to the next step
    ]
    verdict = judge(evidence(pods, rows, output=["x0"]))
    assert verdict.count("exactly-once") == 1
    assert verdict.count("zombie-write") == 1
    clean = judge(evidence(pods, [row("a", "a-a1", "effect", 2, "s0", "x0")], output=["x0"]))
    assert clean.count("exactly-once") == 0 and clean.count("zombie-write") == 0
