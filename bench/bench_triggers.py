"""Triggering runs: Drover's trigger API (directly, and through the Kubernetes API server)
against creating TaskRuns with the Kubernetes API, on one durable local cluster.

Every system starts the same runs (a Task's TaskRuns, delayed an hour so none executes and
the measurement is the trigger alone) with the same client concurrency, no rate limit on
any client. Trials alternate between the systems, in a rotating order; the table shows the
median and the spread of each figure over the trials.

    python -m bench.bench_triggers [--runs 300] [--concurrency 8] [--trials 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from lightkube import AsyncClient, KubeConfig
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.core_v1 import Namespace, ServiceAccount, ServiceAccountToken
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding

import drover
from bench.bench_operator import apply_crds
from bench.harness import TASK, TASKRUN, Operator, cluster_env, median_spread, percentile
from bench.summary import Row, record
from drover_localcluster.cluster import LocalCluster
from drover_localcluster.processes import free_port

TASK_SPEC = {"image": "busybox", "command": ["true"]}
Send = Callable[[int], Awaitable[None]]


async def _measure(send: Send, runs: int, concurrency: int) -> dict[str, float]:
    """Start `runs` runs, `concurrency` at a time: runs per second and latency (ms)."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(i: int) -> None:
        async with gate:
            started = time.perf_counter()
            await send(i)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(runs)))
    wall = time.perf_counter() - started
    return {
        "runs/s": runs / wall,
        "p50 ms": percentile(latencies, 50),
        "p99 ms": percentile(latencies, 99),
    }


async def _identity(kube: AsyncClient, namespace: str) -> str:
    """A ServiceAccount allowed to create TaskRuns in `namespace`; its token."""
    await kube.create(ServiceAccount(metadata=ObjectMeta(name="app", namespace=namespace)))
    rules = [PolicyRule(apiGroups=["drover.dev"], resources=["taskruns"], verbs=["create"])]
    await kube.create(Role(metadata=ObjectMeta(name="app", namespace=namespace), rules=rules))
    await kube.create(
        RoleBinding(
            metadata=ObjectMeta(name="app", namespace=namespace),
            roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="Role", name="app"),
            subjects=[Subject(kind="ServiceAccount", name="app", namespace=namespace)],
        )
    )
    issued = await kube.create(
        ServiceAccountToken(metadata=ObjectMeta(), spec=TokenRequestSpec(audiences=[])),
        "app",
        namespace=namespace,
    )
    assert issued.status is not None
    return str(issued.status.token)


async def bench(args: argparse.Namespace, cluster: LocalCluster, operator: Operator) -> None:
    kube = AsyncClient(KubeConfig.from_file(str(cluster.kubeconfig)), field_manager="bench")
    namespace = f"bench-triggers-{secrets.token_hex(3)}"
    await kube.create(Namespace(metadata=ObjectMeta(name=namespace)))
    await asyncio.sleep(2)  # the default ServiceAccount and RBAC caches settle
    await kube.create(TASK(metadata=ObjectMeta(name="work", namespace=namespace), spec=TASK_SPEC))
    token = await _identity(kube, namespace)
    env = operator.env
    direct = drover.AsyncClient(api_url=env["DROVER_API_URL"], token=token, namespace=namespace)
    aggregated = drover.AsyncClient(kubeconfig=str(cluster.kubeconfig), namespace=namespace)
    body = {"payload": {"customerId": "c"}, "delay": "1h"}

    async def via_api(_: int) -> None:
        await direct.trigger("work", body["payload"], delay="1h")

    async def via_api_server(_: int) -> None:
        await aggregated.trigger("work", body["payload"], delay="1h")

    async def via_kubernetes(_: int) -> None:
        spec = {"taskRef": {"name": "work"}, **body}
        run = TASKRUN(metadata=ObjectMeta(generateName="work-", namespace=namespace), spec=spec)
        await kube.create(run)

    systems: dict[str, Send] = {
        "Drover API (direct)": via_api,
        "Drover API (through the API server)": via_api_server,
        "Kubernetes API (TaskRun create)": via_kubernetes,
    }
    for send in systems.values():  # warm every path: connections, caches, discovery
        await _measure(send, 20, args.concurrency)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in systems}
    names = list(systems)
    for trial in range(args.trials):
        order = names[trial % len(names) :] + names[: trial % len(names)]
        for name in order:
            operator.check_alive()
            results[name].append(await _measure(systems[name], args.runs, args.concurrency))
            print(f"trial {trial + 1} {name}: {results[name][-1]}", file=sys.stderr)
    await direct.close()
    await aggregated.close()
    await kube.close()
    _print(results, args)


def _print(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    print(
        f"\nTriggering {args.runs} runs, {args.concurrency} at a time; median (min–max) of "
        f"{args.trials} alternating trials; etcd and Postgres with fsync on.\n"
    )
    print("| system | runs/s | latency p50 ms | latency p99 ms |")
    print("|---|---|---|---|")
    for name, trials in results.items():
        cells = []
        for key in ("runs/s", "p50 ms", "p99 ms"):
            values = [t[key] for t in trials]
            cells.append(median_spread(values, 1))
        print(f"| {name} | {' | '.join(cells)} |")
    print("\n" + json.dumps(results))
    record(
        "triggers",
        [
            Row(f"{name}: runs/s | p99 ms", " | ".join(
                median_spread([t[key] for t in trials], 1) for key in ("runs/s", "p99 ms")
            ))
            for name, trials in results.items()
            if trials
        ],
        f"{args.runs} runs, {args.concurrency} at a time; durable etcd and Postgres",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_triggers", description=__doc__)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="drover-bench-triggers-"))
    directory.chmod(0o755)
    cluster = LocalCluster(directory, durable=True)
    cluster.up()
    operator = None
    try:
        env = cluster_env(cluster)
        tls_port = free_port()
        env["DROVER_API_TLS_PORT"] = str(tls_port)
        apply_crds(cluster, env)
        operator = Operator(env, directory / "logs" / "operator.log")
        operator.start()
        registration = cluster.aggregated_api("api.drover.dev", "v1", tls_port, "drover-api")
        subprocess_apply(cluster, env, registration)
        asyncio.run(bench(args, cluster, operator))
    finally:
        if operator is not None:
            operator.stop()
        cluster.down()
    return 0


def subprocess_apply(cluster: LocalCluster, env: dict[str, str], manifests: list[Any]) -> None:
    kubectl = str(cluster.binaries.kubectl)
    text = "\n---\n".join(json.dumps(m) for m in manifests)
    subprocess.run([kubectl, "apply", "-f", "-"], input=text, text=True, env=env, check=True)
    subprocess.run(
        [kubectl, "wait", "--for=condition=Available", "apiservice/v1.api.drover.dev",
         "--timeout=120s"],
        env=env,
        check=True,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
