"""Durable waits: how fast a suspended run gets its pod back when its wait is over, against
Kubernetes' own way to start a pod at a time (a CronJob), and what 1,000 suspended runs cost.

Resume latency: `--runs` runs each `drover.wait_until(T)`; once all are suspended (no pod),
T passes and each run's new pod is timed by the bench's own pod watch (wall clock, the same
machine's clock Postgres wakes them by). The peer: `--runs` CronJobs all scheduled for the
same minute M; each Job's pod is timed from M the same way. Trials alternate between the two;
the table shows the median and spread over the trials. Both on one durable local cluster
(etcd and Postgres with fsync on).

Cost: `--suspended` runs suspended on timers: pods held (the bench's watch), the operator's
resident memory before and after, and the rows behind them.

    python -m bench.bench_workflows [--runs 50] [--trials 3] [--suspended 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
import psycopg
from lightkube import AsyncClient, KubeConfig
from lightkube.models.batch_v1 import CronJobSpec, JobSpec, JobTemplateSpec
from lightkube.models.core_v1 import Container, PodSpec, PodTemplateSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.batch_v1 import CronJob
from lightkube.resources.core_v1 import Pod

from bench.bench_operator import apply_crds
from bench.harness import (
    TASK,
    TASKRUN,
    BenchError,
    Operator,
    cluster_env,
    create_namespace,
    delete_namespace,
    median_spread,
    percentile,
    wait_until,
)
from bench.summary import Row, record
from drover_localcluster.cluster import LocalCluster

EXECUTION_LABEL = "drover.dev/execution"


class PodTimes:
    """When each pod was first seen by the bench's own watch (wall clock), and which live."""

    def __init__(self, client: AsyncClient, namespace: str) -> None:
        self.client, self.namespace = client, namespace
        self.first_seen: dict[str, float] = {}
        self.labels: dict[str, dict[str, str]] = {}
        self.live: set[str] = set()

    async def run(self) -> None:
        async for kind, pod in self.client.watch(Pod, namespace=self.namespace):
            meta = pod.metadata
            assert meta is not None and meta.name is not None
            self.first_seen.setdefault(meta.name, time.time())
            self.labels[meta.name] = dict(meta.labels or {})
            phase = pod.status.phase if pod.status else None
            if kind == "DELETED" or phase in ("Succeeded", "Failed"):
                self.live.discard(meta.name)
            else:
                self.live.add(meta.name)


def _summary(latencies_s: list[float]) -> dict[str, float]:
    return {
        "p50 s": percentile(latencies_s, 50),
        "p99 s": percentile(latencies_s, 99),
        "max s": max(latencies_s),
    }


async def _phases(client: AsyncClient, namespace: str) -> list[str]:
    return [
        str((r.get("status") or {}).get("phase"))
        async for r in client.list(TASKRUN, namespace=namespace)
    ]


async def drover_trial(client: AsyncClient, runs: int, lead: float) -> dict[str, float]:
    namespace = f"wake-{secrets.token_hex(3)}"
    await create_namespace(client, namespace)
    spec = {
        "image": "busybox",
        "entrypoint": "bench.workflow_tasks:sleep_until",
        "concurrency": {"limit": runs},
    }
    await client.create(TASK(metadata=ObjectMeta(name="sleeper", namespace=namespace), spec=spec))
    pods = PodTimes(client, namespace)
    watch = asyncio.create_task(pods.run())
    wake = time.time() + lead
    until = dt.datetime.fromtimestamp(wake, dt.UTC).isoformat()
    for i in range(runs):
        body = {"taskRef": {"name": "sleeper"}, "payload": {"until": until}}
        await client.create(
            TASKRUN(metadata=ObjectMeta(name=f"s-{i:04d}", namespace=namespace), spec=body)
        )

    async def all_suspended() -> bool:
        phases = await _phases(client, namespace)
        return phases.count("Waiting") == runs and not pods.live

    while not await all_suspended():
        if time.time() > wake:
            raise BenchError(f"not all {runs} runs suspended before the wake time: raise --lead")
        await asyncio.sleep(0.2)

    def resumed() -> list[str]:
        return [n for n, labels in pods.labels.items() if labels.get(EXECUTION_LABEL) == "2"]

    if not await wait_until(lambda: len(resumed()) == runs, within=lead + 600):
        raise BenchError(f"only {len(resumed())} of {runs} runs resumed")
    latencies = [pods.first_seen[name] - wake for name in resumed()]
    watch.cancel()
    await delete_namespace(client, namespace, within=300)
    return _summary(latencies)


async def cronjob_trial(client: AsyncClient, runs: int, lead: float) -> dict[str, float]:
    namespace = f"cron-{secrets.token_hex(3)}"
    await create_namespace(client, namespace)
    pods = PodTimes(client, namespace)
    watch = asyncio.create_task(pods.run())
    # The first whole minute at least `lead` seconds away (cron's resolution is a minute).
    at = dt.datetime.fromtimestamp(time.time() + lead, dt.UTC).replace(second=0, microsecond=0)
    at += dt.timedelta(minutes=1)
    pod = PodSpec(
        containers=[Container(name="main", image="busybox", command=["true"])],
        restartPolicy="Never",
        automountServiceAccountToken=False,
    )
    for i in range(runs):
        await client.create(
            CronJob(
                metadata=ObjectMeta(name=f"c-{i:04d}", namespace=namespace),
                spec=CronJobSpec(
                    schedule=f"{at.minute} {at.hour} * * *",
                    timeZone="Etc/UTC",
                    jobTemplate=JobTemplateSpec(
                        spec=JobSpec(template=PodTemplateSpec(spec=pod), backoffLimit=0)
                    ),
                ),
            )
        )
    wake = at.timestamp()
    if not await wait_until(lambda: len(pods.first_seen) >= runs, within=lead + 660):
        raise BenchError(f"only {len(pods.first_seen)} of {runs} CronJob pods appeared")
    latencies = [seen - wake for seen in pods.first_seen.values()]
    watch.cancel()
    await delete_namespace(client, namespace, within=300)
    return _summary(latencies)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def suspended_cost(
    client: AsyncClient, operator: Operator, dsn: str, count: int
) -> dict[str, Any]:
    namespace = f"cost-{secrets.token_hex(3)}"
    await create_namespace(client, namespace)
    spec = {
        "image": "busybox",
        "entrypoint": "bench.workflow_tasks:sleep_until",
        "concurrency": {"limit": 50},
    }
    await client.create(TASK(metadata=ObjectMeta(name="sleeper", namespace=namespace), spec=spec))
    pods = PodTimes(client, namespace)
    watch = asyncio.create_task(pods.run())
    assert operator.proc is not None
    before = _rss_kib(operator.proc.pid)
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=6)).isoformat()
    started = time.monotonic()
    for i in range(count):
        body = {"taskRef": {"name": "sleeper"}, "payload": {"until": until}}
        await client.create(
            TASKRUN(metadata=ObjectMeta(name=f"s-{i:04d}", namespace=namespace), spec=body)
        )
    while True:
        operator.check_alive()
        phases = await _phases(client, namespace)
        if phases.count("Waiting") == count and not pods.live:
            break
        await asyncio.sleep(1)
    elapsed = time.monotonic() - started
    after = _rss_kib(operator.proc.pid)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM drover_waitpoints WHERE state = 'waiting'"
        ).fetchone()
    watch.cancel()
    result = {
        "suspended runs": count,
        "pods held": len(pods.live),
        "waitpoints waiting": rows[0] if rows else None,
        "operator RSS before MiB": round(before / 1024, 1),
        "operator RSS after MiB": round(after / 1024, 1),
        "seconds to suspend all": round(elapsed, 1),
    }
    print(f"suspended runs: {result}", file=sys.stderr)  # before a slow cleanup can fail
    try:
        await delete_namespace(client, namespace, within=1800)
    except BenchError as exc:
        print(f"cleanup: {exc}", file=sys.stderr)
    return result


async def bench(args: argparse.Namespace, cluster: LocalCluster, operator: Operator) -> None:
    config = KubeConfig.from_file(str(cluster.kubeconfig))
    client = AsyncClient(config, field_manager="bench", timeout=httpx2.Timeout(120))
    systems = {
        "Drover (wait_until → resumed pod)": drover_trial,
        "Kubernetes CronJob (schedule → pod)": cronjob_trial,
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in systems}
    names = list(systems)
    for trial in range(args.trials):
        order = names[trial % len(names) :] + names[: trial % len(names)]
        for name in order:
            operator.check_alive()
            results[name].append(await systems[name](client, args.runs, args.lead))
            print(f"trial {trial + 1} {name}: {results[name][-1]}", file=sys.stderr)
    cost = None
    if args.suspended:
        cost = await suspended_cost(
            client, operator, cluster.env()["DROVER_DATABASE_URL"], args.suspended
        )
    await client.close()
    _print(results, cost, args)


def _print(
    results: dict[str, list[dict[str, float]]],
    cost: dict[str, Any] | None,
    args: argparse.Namespace,
) -> None:
    print(
        f"\nFrom the wake time to the pod, {args.runs} at once; median (min–max) of "
        f"{args.trials} alternating trials; etcd and Postgres with fsync on.\n"
    )
    print("| system | p50 s | p99 s | max s |")
    print("|---|---|---|---|")
    for name, trials in results.items():
        cells = []
        for key in ("p50 s", "p99 s", "max s"):
            values = [t[key] for t in trials]
            cells.append(median_spread(values, 2))
        print(f"| {name} | {' | '.join(cells)} |")
    if cost is not None:
        print(f"\nSuspended runs on timers ({cost['suspended runs']}):\n")
        for key, value in cost.items():
            print(f"- {key}: {value}")
    print("\n" + json.dumps({"latency": results, "cost": cost}))
    rows = [
        Row(f"{name}: wake → pod p50 (s)", median_spread([t["p50 s"] for t in trials], 2))
        for name, trials in results.items()
        if trials
    ]
    if cost is not None:
        rows.append(
            Row(
                f"{cost['suspended runs']} suspended runs: pods held / RSS after (MiB)",
                f"{cost['pods held']} / {cost['operator RSS after MiB']}",
                "0 pods",
                cost["pods held"] == 0,
            )
        )
    record("workflows", rows, "durable etcd and Postgres")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_workflows", description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--lead", type=float, default=120.0, help="seconds from start to wake")
    parser.add_argument("--suspended", type=int, default=1000)
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="drover-bench-workflows-"))
    directory.chmod(0o755)
    cluster = LocalCluster(directory, durable=True)
    cluster.up()
    operator = None
    try:
        env = cluster_env(cluster)
        apply_crds(cluster, env)
        operator = Operator(env, directory / "logs" / "operator.log")
        operator.start()
        asyncio.run(bench(args, cluster, operator))
    finally:
        if operator is not None:
            operator.stop()
        cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
