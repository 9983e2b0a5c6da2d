"""P5 and P6: heartbeats from 2,000 runners against one operator, and how fast a frozen
runner's attempt is replaced.

    python -m bench.bench_heartbeats [--runners 2000] [--seconds 60] [--stall-trials 3]
        [--heartbeat 5s]

On a durable local cluster (etcd and Postgres fsync on):

P6 (first, on a quiet system): an SDK Task with `timeouts.heartbeat` (`--heartbeat`) whose
first attempt prints its pid and sleeps. The bench SIGSTOPs that process (its heartbeats
stop with it) and times, with a pod watch of its own, from the SIGSTOP until the run's next
attempt's pod is created. `--stall-trials` trials; median (min–max) against the timeout.

P5: `--runners` runs of a Task whose pods can never be scheduled (a node selector no node
has) are admitted: each attempt holds a live token, derived from the replicas' key as the
operator derives it (as tests/e2e/test_api_fuzz.py does). One asyncio process then plays
their runners: each POSTs `/v1/runs/{id}/heartbeat` once a second, on a schedule of its own
(spread over the second), for `--seconds`, over a kept-alive connection (aiohttp: the
lightest async client at hand, so the bench takes less of the shared cores). Figures: API
latency p50/p99 (goal p99 ≤ 50 ms), errors (goal 0), heartbeats answered per second, and
Postgres commits per second in the operator's database (pg_stat_database.xact_commit) with
the heartbeats, less a baseline measured just before without them (goal: batched, ≤ 10/s).
Meanwhile one real runner (the P6 Task) is SIGSTOPped, and the time until its attempt is
seen ended as stalled, by the bench's TaskRun watch, is held to `timeouts.heartbeat` + 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from lightkube import AsyncClient, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod

from bench.bench_operator import apply_crds
from bench.harness import (
    TASK,
    TASKRUN,
    BenchError,
    Operator,
    _retry_watch,
    cluster_env,
    create_namespace,
    median_spread,
    percentile,
    wait_operator_ready,
)
from bench.summary import Row, at_most, record
from drover.protocol import PROTOCOL_HEADER, PROTOCOL_VERSION
from drover_localcluster.cluster import LocalCluster
from drover_operator.domain.tokens import SIGNING_KEY_NAME, attempt_token

NAMESPACE = "bench-heartbeats"
P99_GOAL_MS = 50.0
COMMITS_GOAL = 10.0
STALL_SLACK_S = 2.0


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)s", duration)
    if match is None:
        raise SystemExit(f"--heartbeat takes seconds, like 5s: {duration!r}")
    return float(match.group(1))


async def task(client: AsyncClient, name: str, spec: dict[str, Any]) -> None:
    await client.create(
        TASK(metadata=ObjectMeta(name=name, namespace=NAMESPACE), spec={"image": "busybox", **spec})
    )


async def create_run(client: AsyncClient, name: str, task_name: str) -> str:
    created = await client.create(
        TASKRUN(
            metadata=ObjectMeta(name=name, namespace=NAMESPACE),
            spec={"taskRef": {"name": task_name}},
        )
    )
    return str(created["metadata"]["uid"])


class Watches:
    """The bench's own TaskRun and pod watches of the namespace, kept running meanwhile."""

    def __init__(self, client: AsyncClient, operator: Operator) -> None:
        self.operator = operator
        # run uid -> its latest status, and when each pod (by name) was first seen.
        self.status: dict[str, dict[str, Any]] = {}
        self.pod_seen: dict[str, float] = {}
        self.stalled_at: dict[str, float] = {}
        self.tasks = [
            asyncio.create_task(self._runs(client)),
            asyncio.create_task(self._pods(client)),
        ]

    async def _runs(self, client: AsyncClient) -> None:
        async for kind, run in client.watch(TASKRUN, namespace=NAMESPACE, on_error=_retry_watch):
            if kind == "DELETED":
                continue
            uid, status = str(run["metadata"]["uid"]), run.get("status") or {}
            self.status[uid] = status
            attempts = status.get("attempts") or []
            if any(a.get("reason") == "Stalled" for a in attempts):
                self.stalled_at.setdefault(uid, time.monotonic())

    async def _pods(self, client: AsyncClient) -> None:
        async for _kind, pod in client.watch(Pod, namespace=NAMESPACE, on_error=_retry_watch):
            assert pod.metadata is not None and pod.metadata.name is not None
            self.pod_seen.setdefault(pod.metadata.name, time.monotonic())

    async def until(
        self, condition: Callable[[], bool], within: float, every: float = 0.02
    ) -> bool:
        def checked() -> bool:
            self.operator.check_alive()
            for t in self.tasks:
                if t.done():
                    raise BenchError(f"a watch stopped: {t.exception()!r}")
            return bool(condition())

        deadline = time.monotonic() + within
        while not checked():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(every)
        return True

    def stop(self) -> None:
        for t in self.tasks:
            t.cancel()


async def runner_pid(client: AsyncClient, pod: str, within: float) -> int:
    """The frozen-to-be runner's pid, from the line its task code prints."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            async for line in client.log(pod, namespace=NAMESPACE):
                found = re.search(r"pid (\d+)", line)
                if found:
                    return int(found.group(1))
        except Exception:  # the container may not have started yet
            pass
        await asyncio.sleep(0.2)
    raise BenchError(f"no pid line in {pod}'s log within {within:.0f}s")


async def freeze_once(
    client: AsyncClient, watches: Watches, name: str, timeout_s: float
) -> dict[str, float]:
    """One stall: SIGSTOP attempt 1's runner; seconds until the watch sees the attempt ended
    as stalled, and until attempt 2's pod is seen."""
    uid = await create_run(client, name, "freezes")
    pid = await runner_pid(client, f"{name}-a1", 300)
    # Its first heartbeat is in: the attempt is Running and beating.
    if not await watches.until(lambda: watches.status.get(uid, {}).get("phase") == "Running", 120):
        raise BenchError(f"{name} never showed Running")
    stopped = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        next_pod = f"{name}-a2"
        if not await watches.until(lambda: next_pod in watches.pod_seen, timeout_s * 4 + 60):
            raise BenchError(f"{name}: no next attempt's pod after the SIGSTOP")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # the operator removed its pod; make sure it is gone
    await watches.until(lambda: uid in watches.stalled_at, 30)
    result = {"stop_to_next_pod_s": round(watches.pod_seen[next_pod] - stopped, 2)}
    if uid in watches.stalled_at:
        result["stop_to_stalled_s"] = round(watches.stalled_at[uid] - stopped, 2)
    return result


async def signing_key(dsn: str) -> bytes:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(
            "SELECT value FROM drover_keys WHERE name = %s", (SIGNING_KEY_NAME,)
        )
        row = await cursor.fetchone()
        if row is None:
            raise BenchError("no attempt-token key in the store")
        return bytes(row[0])


async def commits(dsn: str) -> int:
    """Transactions committed in the operator's database so far (every client's)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("SELECT pg_stat_force_next_flush()")
        cursor = await conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0])


async def commits_per_second(dsn: str, during: float) -> float:
    before = await commits(dsn)
    await asyncio.sleep(during)
    return (await commits(dsn) - before) / during


class Runners:
    """`tokens` simulated runners heartbeating once a second for `seconds`."""

    def __init__(self, api_url: str, tokens: dict[str, str]) -> None:
        self.api_url = api_url
        self.tokens = tokens
        self.latencies_ms: list[float] = []
        self.errors: dict[str, int] = {}
        self.late = 0  # beats sent more than a second after their slot (the runner fell behind)
        self.wall_s = 0.0  # from the first slot to the last answer: longer when they fell behind

    async def run(self, seconds: float) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            start = time.monotonic() + 1.0
            await asyncio.gather(
                *(
                    self._beat(session, uid, token, start, seconds)
                    for uid, token in self.tokens.items()
                )
            )
            self.wall_s = time.monotonic() - start

    async def _beat(
        self, session: aiohttp.ClientSession, uid: str, token: str, start: float, seconds: float
    ) -> None:
        headers = {"Authorization": f"Bearer {token}", PROTOCOL_HEADER: str(PROTOCOL_VERSION)}
        url = f"{self.api_url}/v1/runs/{uid}/heartbeat"
        slot = start + random.random()  # each runner's own phase within the second
        end = start + seconds
        while slot < end:
            delay = slot - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1:
                self.late += 1
            sent = time.perf_counter()
            try:
                async with session.post(url, headers=headers) as response:
                    body = await response.read()
                    if response.status != 200:
                        key = f"HTTP {response.status}"
                        self.errors[key] = self.errors.get(key, 0) + 1
                    elif json.loads(body).get("cancel"):
                        self.errors["cancel"] = self.errors.get("cancel", 0) + 1
            except (aiohttp.ClientError, TimeoutError) as e:
                key = type(e).__name__
                self.errors[key] = self.errors.get(key, 0) + 1
            self.latencies_ms.append((time.perf_counter() - sent) * 1000)
            slot += 1.0


async def bench(
    args: argparse.Namespace, cluster: LocalCluster, operator: Operator
) -> dict[str, Any]:
    client = AsyncClient(KubeConfig.from_file(str(cluster.kubeconfig)), field_manager="bench")
    dsn = operator.env["DROVER_DATABASE_URL"]
    heartbeat_s = seconds(args.heartbeat)
    results: dict[str, Any] = {"heartbeat_timeout_s": heartbeat_s}
    try:
        await wait_operator_ready(client, operator, 180)
        await create_namespace(client, NAMESPACE)
        watches = Watches(client, operator)
        await task(
            client,
            "freezes",
            {
                "entrypoint": "bench.stall_tasks:freezes",
                "timeouts": {"heartbeat": args.heartbeat},
                "retry": {"maxAttempts": 2, "minDelay": "100ms", "randomize": False},
            },
        )
        await task(
            client,
            "held",
            {
                "entrypoint": "bench.stall_tasks:never_runs",
                "podTemplate": {"spec": {"nodeSelector": {"drover.dev/bench": "nowhere"}}},
                "timeouts": {"pending": "2h", "heartbeat": "1h"},
            },
        )

        # P6 on a quiet system.
        stalls = []
        for trial in range(args.stall_trials):
            stalls.append(await freeze_once(client, watches, f"quiet-{trial}", heartbeat_s))
            print(f"P6 trial {trial + 1}: {stalls[-1]}", flush=True)
        results["p6_quiet"] = stalls

        # P5: admit the runners' attempts (pods never scheduled), derive their tokens.
        print(f"P5: creating {args.runners} runs whose pods never start", flush=True)
        gate = asyncio.Semaphore(16)

        async def held(i: int) -> str:
            async with gate:
                return await create_run(client, f"held-{i:05d}", "held")

        uids = await asyncio.gather(*(held(i) for i in range(args.runners)))
        if not await watches.until(
            lambda: all(watches.status.get(u, {}).get("attempt") == 1 for u in uids),
            args.timeout,
            every=0.5,
        ):
            admitted = sum(1 for u in uids if watches.status.get(u, {}).get("attempt") == 1)
            raise BenchError(f"only {admitted} of {args.runners} attempts admitted")
        key = await signing_key(dsn)
        runners = Runners(
            operator.env["DROVER_API_URL"], {u: attempt_token(key, u, 1) for u in uids}
        )

        # A real runner to freeze under the load, started before the baseline.
        frozen_uid = await create_run(client, "loaded", "freezes")
        frozen_pid = await runner_pid(client, "loaded-a1", 300)
        await watches.until(
            lambda: watches.status.get(frozen_uid, {}).get("phase") == "Running", 120
        )
        baseline = await commits_per_second(dsn, args.baseline)
        print(
            f"P5: baseline {baseline:.1f} commits/s;"
            f" {args.runners} runners for {args.seconds:.0f}s",
            flush=True,
        )

        async def freeze_under_load() -> dict[str, float]:
            await asyncio.sleep(args.seconds / 3)
            stopped = time.monotonic()
            os.kill(frozen_pid, signal.SIGSTOP)
            try:
                await watches.until(lambda: frozen_uid in watches.stalled_at, heartbeat_s * 4 + 60)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(frozen_pid, signal.SIGKILL)
            found = {}
            if frozen_uid in watches.stalled_at:
                found["stop_to_stalled_s"] = round(watches.stalled_at[frozen_uid] - stopped, 2)
            if await watches.until(lambda: "loaded-a2" in watches.pod_seen, 60):
                found["stop_to_next_pod_s"] = round(watches.pod_seen["loaded-a2"] - stopped, 2)
            return found

        async def beating() -> tuple[int, float]:
            """The runners' minute; then the commits and the time since `started`."""
            await runners.run(args.seconds)
            return await commits(dsn), time.monotonic() - started

        before = await commits(dsn)
        started = time.monotonic()
        (after, elapsed), loaded_stall = await asyncio.gather(beating(), freeze_under_load())
        during = (after - before) / elapsed
        lat = runners.latencies_ms
        results["p5"] = {
            "runners": args.runners,
            "seconds": args.seconds,
            "beats": len(lat),
            "runners_wall_s": round(runners.wall_s, 1),
            # What the operator answered: once answers take over a second, the runners send
            # back to back (every beat of the minute, late) and this is its throughput.
            "beats_per_s": round(len(lat) / max(runners.wall_s, 1e-9), 1),
            "p50_ms": round(percentile(lat, 50), 1) if lat else None,
            "p99_ms": round(percentile(lat, 99), 1) if lat else None,
            "max_ms": round(max(lat), 1) if lat else None,
            "errors": sum(runners.errors.values()),
            "errors_by_kind": runners.errors,
            "late_beats": runners.late,
            "commits_per_s_baseline": round(baseline, 1),
            "commits_per_s_during": round(during, 1),
            "heartbeat_commits_per_s": round(during - baseline, 1),
            "commits_per_beat": round((during - baseline) * elapsed / max(len(lat), 1), 2),
            "stall_under_load": loaded_stall,
        }
        watches.stop()
        return results
    finally:
        await client.close()


def rows(results: dict[str, Any]) -> list[Row]:
    timeout = float(results.get("heartbeat_timeout_s", 0))
    quiet = results.get("p6_quiet") or []
    to_pod = [t["stop_to_next_pod_s"] for t in quiet if "stop_to_next_pod_s" in t]
    to_stall = [t["stop_to_stalled_s"] for t in quiet if "stop_to_stalled_s" in t]
    p5 = results.get("p5") or {}
    stall = (p5.get("stall_under_load") or {}).get("stop_to_stalled_s")
    found = [
        Row(
            f"P6: SIGSTOP → next attempt's pod (s), heartbeat {timeout:g}s",
            median_spread(to_pod, 1) if to_pod else "—",
            f"≤ {timeout + STALL_SLACK_S:g}",
            None if not to_pod else statistics.median(to_pod) <= timeout + STALL_SLACK_S,
        ),
        Row(
            "P6: SIGSTOP → attempt seen Stalled (s)",
            median_spread(to_stall, 1) if to_stall else "—",
        ),
    ]
    if p5:
        errors = p5.get("errors")
        found += [
            Row(
                f"P5: {p5['runners']} runners × 1/s: beats answered/s",
                f"{p5['beats_per_s']:g}",
                f"offered {p5['runners']}",
            ),
            Row("P5: heartbeat API p50 (ms)", f"{p5['p50_ms']}"),
            at_most("P5: heartbeat API p99 (ms)", p5.get("p99_ms"), P99_GOAL_MS),
            Row("P5: errors", str(errors), "0", errors == 0),
            at_most(
                "P5: Postgres commits/s for heartbeats",
                p5.get("heartbeat_commits_per_s"),
                COMMITS_GOAL,
            ),
            at_most("P5: SIGSTOP → Stalled under load (s)", stall, timeout + STALL_SLACK_S),
        ]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_heartbeats",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runners", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=60, help="how long they heartbeat")
    parser.add_argument("--baseline", type=float, default=20, help="commits/s measured without")
    parser.add_argument("--stall-trials", type=int, default=3)
    parser.add_argument("--heartbeat", default="5s", help="the frozen Task's timeouts.heartbeat")
    parser.add_argument("--timeout", type=float, default=1200, help="each wait, seconds")
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="drover-bench-heartbeats-"))
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
        status = 0
    except BenchError as e:
        print(f"\nERROR: {e}", file=sys.stderr)
    finally:
        if operator is not None:
            operator.stop()
        cluster.down()
    print(f"\n{json.dumps(results, indent=2)}")
    settings = "durable etcd and Postgres; heartbeats over HTTP on loopback"
    table = rows(results)
    record("p5-p6-heartbeats", table, settings)
    for row in table:
        met = {True: "yes", False: "NO", None: ""}[row.met]
        print(f"  {row.figure:<52} {row.value:>22}  {row.goal:<14} {met}")
    if operator is not None:
        print(f"operator log: {operator.log}")
    return status


if __name__ == "__main__":
    sys.exit(main())
