"""P4: 10,000 TaskRuns in the cluster, and the operator's memory and recovery with them.

    python -m bench.bench_scale [--runs 10000] [--succeeded 50] [--concurrency 16]

On a durable local cluster (etcd and Postgres fsync on) the bench creates `--runs` TaskRuns
with an async client, `--concurrency` at a time: `--succeeded` that run (a no-op pod), then
alternately one canceled at creation (it finishes `Canceled` without a pod) and one delayed
an hour (it stays `Queued`). Everything is judged from outside, from the bench's own TaskRun
watch and a final listing, never from Drover's records:

1. Recording: the time from the first create until every TaskRun shows the phase expected of
   it (runs/s), and how long after the last create that was.
2. Memory: the operator's resident set (VmRSS) once everything is recorded and after a quiet
   minute, and its peak (VmHWM), from /proc; goal ≤ 300 MB.
3. Crash: the operator is SIGKILLed; while it is down, `--cancel-while-down` of the delayed
   runs are canceled (their status must become `Canceled`). It is started again at once and
   one new run is created: the time from the restart until every TaskRun's phase is the one
   expected, and until the new run has Succeeded (admission resumed); goal ≤ 30 s. Then the
   restarted operator's peak resident set.

A benchmark, not a test: it prints figures and records them for `make bench`'s table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from lightkube import AsyncClient, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.types import PatchType

from bench.bench_operator import apply_crds
from bench.harness import (
    TASKRUN,
    BenchError,
    Operator,
    StateWatch,
    cluster_env,
    create_namespace,
    drover_task,
    taskrun_watch,
    wait_operator_ready,
)
from bench.summary import Row, at_most, record
from drover_localcluster.cluster import LocalCluster

NAMESPACE = "bench-scale"
RSS_GOAL_MB = 300.0
RECOVERY_GOAL_S = 30.0


def memory_mb(pid: int) -> dict[str, float]:
    """The process's resident set now (VmRSS) and at its peak (VmHWM), in MB."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = round(int(value.split()[0]) / 1024, 1)
    return found


class Expectations:
    """The phase each TaskRun (by name) must show; the bench changes it when it acts."""

    def __init__(self) -> None:
        self.phase: dict[str, str] = {}
        self.uid_to_name: dict[str, str] = {}

    def wrong(self, states: StateWatch[Any]) -> dict[str, int]:
        """How many runs show something other than expected, by what they show."""
        shown = {
            self.uid_to_name[uid]: state
            for uid, state in states.states.items()
            if uid in self.uid_to_name  # else its create call has not returned yet
        }
        tally: dict[str, int] = {}
        for name, expected in self.phase.items():
            got = shown.get(name, "(not seen)")
            if got != expected:
                key = f"{got} (want {expected})"
                tally[key] = tally.get(key, 0) + 1
        return tally


def spec_of(i: int, succeeded: int) -> tuple[dict[str, Any], str]:
    """The i-th run's spec and the phase it must reach."""
    base: dict[str, Any] = {"taskRef": {"name": "noop"}}
    if i < succeeded:
        return base, "Succeeded"
    if i % 2 == 0:
        return {**base, "cancel": True}, "Canceled"
    return {**base, "delay": "1h"}, "Queued"


async def create_all(
    client: AsyncClient, expect: Expectations, runs: int, succeeded: int, concurrency: int
) -> float:
    """Create the runs, `concurrency` at a time; the seconds it took."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        name = f"run-{i:05d}"
        spec, phase = spec_of(i, succeeded)
        async with gate:
            created = await client.create(
                TASKRUN(metadata=ObjectMeta(name=name, namespace=NAMESPACE), spec=spec)
            )
        expect.phase[name] = phase
        expect.uid_to_name[str(created["metadata"]["uid"])] = name

    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(runs)))
    return time.monotonic() - started


async def until(
    operator: Operator,
    watch_task: asyncio.Task[None],
    condition: Callable[[], bool],
    within: float,
    every: float = 0.05,
) -> bool:
    """Wait for `condition`, checking every `every` seconds (comparing 10,000 phases is
    not free on a busy machine: the slow checks poll less often); False after `within`."""
    deadline = time.monotonic() + within
    while True:
        operator.check_alive()
        if watch_task.done():
            raise BenchError(f"the TaskRun watch stopped: {watch_task.exception()!r}")
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)


async def api_ready(operator: Operator) -> float:
    """When the restarted operator's API first answers /readyz (monotonic clock)."""
    url = f"{operator.env['DROVER_API_URL']}/readyz"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while True:
            operator.check_alive()
            try:
                async with http.get(url) as response:
                    if response.status == 200:
                        return time.monotonic()
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.05)


async def listed_wrong(client: AsyncClient, expect: Expectations) -> dict[str, int]:
    """The final word, from a listing rather than the watch: runs not in their phase."""
    tally: dict[str, int] = {}
    seen = set()
    async for run in client.list(TASKRUN, namespace=NAMESPACE, chunk_size=500):
        name = run["metadata"]["name"]
        seen.add(name)
        want = expect.phase.get(name)
        got = str((run.get("status") or {}).get("phase") or "(no status)")
        if want is not None and got != want:
            key = f"{got} (want {want})"
            tally[key] = tally.get(key, 0) + 1
    missing = len(set(expect.phase) - seen)
    if missing:
        tally["(missing)"] = missing
    return tally


async def bench(
    args: argparse.Namespace, cluster: LocalCluster, operator: Operator
) -> dict[str, Any]:
    client = AsyncClient(KubeConfig.from_file(str(cluster.kubeconfig)), field_manager="bench")
    results: dict[str, Any] = {}
    try:
        await wait_operator_ready(client, operator, 180)
        await create_namespace(client, NAMESPACE)
        await client.create(drover_task("noop", NAMESPACE))
        expect = Expectations()
        states = taskrun_watch(client, NAMESPACE)
        watching = asyncio.create_task(states.run())
        assert operator.proc is not None

        # 1. Recording.
        print(f"creating {args.runs} TaskRuns, {args.concurrency} at a time", flush=True)
        started = time.monotonic()
        create_s = await create_all(client, expect, args.runs, args.succeeded, args.concurrency)
        created_at = time.monotonic()
        print(f"  created in {create_s:.1f}s ({args.runs / create_s:.1f}/s)", flush=True)
        last_report = [time.monotonic()]

        def all_right() -> bool:
            if time.monotonic() - last_report[0] > 30:
                last_report[0] = time.monotonic()
                wrong = expect.wrong(states)
                print(f"  {sum(wrong.values())} not yet right: {wrong}", flush=True)
            return not expect.wrong(states)

        if not await until(operator, watching, all_right, args.timeout, every=0.25):
            raise BenchError(f"not recorded in {args.timeout:.0f}s: {expect.wrong(states)}")
        recorded_s = time.monotonic() - started
        results.update(
            runs=args.runs,
            create_s=round(create_s, 1),
            creates_per_s=round(args.runs / create_s, 1),
            recorded_s=round(recorded_s, 1),
            recorded_after_last_create_s=round(time.monotonic() - created_at, 1),
            recorded_per_s=round(args.runs / recorded_s, 1),
            memory_recorded_mb=memory_mb(operator.proc.pid),
        )
        print(f"  all recorded {recorded_s:.1f}s after the first create", flush=True)

        # 2. Steady memory: a quiet minute with 10,000 runs to look after.
        await asyncio.sleep(args.quiet)
        operator.check_alive()
        results["memory_steady_mb"] = memory_mb(operator.proc.pid)
        print(f"  memory after {args.quiet:.0f}s quiet: {results['memory_steady_mb']}", flush=True)

        # 3. SIGKILL, changes while down, restart.
        os.kill(operator.proc.pid, signal.SIGKILL)
        operator.proc.wait()
        delayed = [n for n, p in expect.phase.items() if p == "Queued"][: args.cancel_while_down]
        for name in delayed:
            await client.patch(
                TASKRUN,
                name,
                {"spec": {"cancel": True}},
                namespace=NAMESPACE,
                patch_type=PatchType.MERGE,
            )
            expect.phase[name] = "Canceled"
        restarted = time.monotonic()
        operator.start()
        new = await client.create(
            TASKRUN(
                metadata=ObjectMeta(name="after-restart", namespace=NAMESPACE),
                spec={"taskRef": {"name": "noop"}},
            )
        )
        expect.phase["after-restart"] = "Succeeded"
        new_uid = str(new["metadata"]["uid"])
        expect.uid_to_name[new_uid] = "after-restart"
        # Where the time goes: the new run's phases as the watch shows them, and the API.
        timeline: dict[str, float] = {"api ready": await api_ready(operator) - restarted}

        def new_run_done() -> bool:
            phase = states.states.get(new_uid)
            if phase is not None:
                timeline.setdefault(phase, time.monotonic() - restarted)
            return phase == "Succeeded"

        if not await until(operator, watching, new_run_done, args.timeout):
            raise BenchError(
                f"the run created after the restart did not succeed: {states.states.get(new_uid)}"
            )
        admission_s = time.monotonic() - restarted
        if not await until(
            operator, watching, lambda: not expect.wrong(states), args.timeout, every=0.25
        ):
            raise BenchError(f"statuses not right after the restart: {expect.wrong(states)}")
        right_s = time.monotonic() - restarted
        results.update(
            canceled_while_down=len(delayed),
            restart_to_new_run_succeeded_s=round(admission_s, 1),
            restart_to_every_status_right_s=round(right_s, 1),
            new_run_timeline_s={k: round(v, 1) for k, v in timeline.items()},
        )
        print(
            f"  after restart: new run Succeeded in {admission_s:.1f}s,"
            f" every status right in {right_s:.1f}s",
            flush=True,
        )
        await asyncio.sleep(args.quiet)
        operator.check_alive()
        results["memory_after_restart_mb"] = memory_mb(operator.proc.pid)
        results["listed_wrong"] = await listed_wrong(client, expect)
        watching.cancel()
        return results
    finally:
        await client.close()


def rows(results: dict[str, Any]) -> list[Row]:
    def number(key: str, field: str | None = None) -> float | None:
        value = results.get(key)
        if field is not None:
            value = (value or {}).get(field)
        return None if value is None else float(value)

    def shown(value: float | None) -> str:
        return "—" if value is None else f"{value:g}"

    runs = results.get("runs", "?")
    after_create = number("recorded_after_last_create_s")
    new_run = number("restart_to_new_run_succeeded_s")
    all_right = number("restart_to_every_status_right_s")
    peak_after = number("memory_after_restart_mb", "VmHWM")
    return [
        Row(f"{runs} TaskRuns: created (runs/s)", shown(number("creates_per_s"))),
        Row("… first create → all recorded (runs/s)", shown(number("recorded_per_s"))),
        Row("… all recorded, after the last create (s)", shown(after_create)),
        at_most("operator RSS steady (MB)", number("memory_steady_mb", "VmRSS"), RSS_GOAL_MB),
        Row("operator RSS peak before the kill (MB)", shown(number("memory_steady_mb", "VmHWM"))),
        at_most("SIGKILL, restart → new run Succeeded (s)", new_run, RECOVERY_GOAL_S),
        at_most("SIGKILL, restart → every status right (s)", all_right, RECOVERY_GOAL_S),
        at_most("operator RSS peak after the restart (MB)", peak_after, RSS_GOAL_MB),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--succeeded", type=int, default=50, help="runs that execute (no-op pod)")
    parser.add_argument("--concurrency", type=int, default=16, help="creates at a time")
    parser.add_argument("--cancel-while-down", type=int, default=100)
    parser.add_argument("--quiet", type=float, default=60, help="seconds before reading RSS")
    parser.add_argument("--timeout", type=float, default=1800, help="each wait, seconds")
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="drover-bench-scale-"))
    directory.chmod(0o755)
    print(f"cluster directory: {directory}", flush=True)
    cluster = LocalCluster(directory, durable=True)
    operator: Operator | None = None
    results: dict[str, Any] = {}
    status = 1
    try:
        cluster.up()
        env = cluster_env(cluster)
        apply_crds(cluster, env)
        operator = Operator(env, directory / "operator.log")
        operator.start()
        results = asyncio.run(bench(args, cluster, operator))
        status = 0 if not results.get("listed_wrong") else 1
    except BenchError as e:
        print(f"\nERROR: {e}", file=sys.stderr)
    finally:
        if operator is not None:
            operator.stop()
        cluster.down()
    settings = "durable etcd and Postgres (fsync, synchronous_commit on); one trial"
    print(f"\n{json.dumps(results, indent=2)}")
    record("p4-scale", rows(results), settings)
    for row in rows(results):
        met = {True: "yes", False: "NO", None: ""}[row.met]
        print(f"  {row.figure:<50} {row.value:>10}  {row.goal:<8} {met}")
    if operator is not None:
        print(f"operator log: {operator.log}")
    return status


if __name__ == "__main__":
    sys.exit(main())
