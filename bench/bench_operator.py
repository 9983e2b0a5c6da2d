"""Operator-core benchmark: Drover against one Kubernetes Job per run, on a throwaway local
cluster. Prints figures; asserts nothing except that Drover's concurrency limit held.

    .venv/bin/python -m bench.bench_operator [--runs-latency 200] [--runs-throughput 500]
        [--runs-idle 30] [--limit 50] [--trials 3] [--scenarios latency throughput idle]
        [--skip-jobs] [--skip-drover] [--keep]

A. create → pod latency: N runs created one after another; per run, the time from just
   before its create call until a pod watch (started earlier) first sees a pod owned by it.
B. N no-op runs at a concurrency limit: wall time from the first create until every run has
   finished, against one Indexed Job with the same completions and parallelism; peak
   concurrent pods from the bench's own pod watch (never from Drover's records).
C. Single runs at idle: each created once the one before has finished; create → pod.

Every scenario runs `--trials` times per system, alternating which system goes first; the
table shows each figure's median (min–max) beside its goal, and API requests per run come
from kube-apiserver's apiserver_request_total (every client's requests, watches left out).
The cluster is durable (etcd and Postgres fsync on) and the controller-manager's client limit
is raised to 500 QPS / 1000 burst; the settings are printed with the table.

On the local cluster a pod is a host process and the control plane shares the machine with
the bench, so the figures compare the two systems on one box; they are not cluster numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from lightkube import ApiError, AsyncClient, KubeConfig

from bench import cpu
from bench.harness import (
    OPERATOR_USER,
    BenchError,
    Operator,
    PodWatch,
    StateWatch,
    api_requests,
    audit_offset,
    audit_requests,
    cluster_env,
    create_namespace,
    delete_namespace,
    drover_run,
    drover_task,
    job,
    job_watch,
    percentile,
    taskrun_watch,
    wait_operator_ready,
    wait_until,
)
from bench.report import print_table, table
from bench.summary import Row, record
from drover_localcluster.cluster import LocalCluster
from drover_localcluster.errors import StartupError

REPO_ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("drover", "jobs")
CREATE_WORKERS = 4  # scenario B: enough parallel creates to outrun a 50-slot queue
WARMUP_TIMEOUT = 120.0
NAMESPACE_DELETE_TIMEOUT = 180.0
# The controller-manager's client limit (--kube-api-qps, --kube-api-burst) for the race: its
# default (20, 30) would hold the Job controller back while the operator has none.
CONTROLLER_MANAGER_QPS = (500, 1000)
SCENARIOS = ("latency", "throughput", "idle")


def settings(args: argparse.Namespace) -> dict[str, str]:
    """What each system ran with: printed beside the table, kept in the JSON."""
    qps, burst = CONTROLLER_MANAGER_QPS
    return {
        "kube-controller-manager": f"--kube-api-qps={qps} --kube-api-burst={burst}",
        "drover-operator": "lightkube/kopf clients: no client-side rate limit",
        "postgres": "fsync=on synchronous_commit=on full_page_writes=on (durable)",
        "etcd": "fsync on (no --unsafe-no-fsync)",
        "trials": f"{args.trials}, alternating which system goes first",
    }


def print_settings(args: argparse.Namespace) -> None:
    print("\nsettings:")
    for name, value in settings(args).items():
        print(f"  {name}: {value}")


Results = dict[str, Any]


class Background:
    """The scenario's watches as tasks; a watch that ends early fails the scenario instead of
    letting it wait for events that will never come."""

    def __init__(self, *coros: Coroutine[Any, Any, None], operator: Operator | None = None) -> None:
        self.tasks = [asyncio.create_task(c) for c in coros]
        self.operator = operator

    def check(self) -> None:
        if self.operator is not None:
            self.operator.check_alive()  # a dead operator fails now, not at the timeout
        for task in self.tasks:
            if task.done():
                error = None if task.cancelled() else task.exception()
                raise BenchError(f"a watch stopped: {error!r}") from error

    async def until(self, condition: Callable[[], bool], within: float) -> bool:
        def checked() -> bool:
            self.check()
            return condition()

        return await wait_until(checked, within)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def distribution(samples_s: list[float]) -> dict[str, float]:
    if not samples_s:
        return {}
    ms = [s * 1000 for s in samples_s]
    return {f"p{p}": round(percentile(ms, p), 1) for p in (50, 90, 99)} | {"max": round(max(ms), 1)}


def per_run(counts: dict[str, int], runs: Any) -> dict[str, float]:
    """Each count divided by the runs, most first."""
    if not isinstance(runs, int) or not runs:
        return {}
    return {k: round(v / runs, 2) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}


def api_delta(before: dict[str, float], after: dict[str, float], runs: Any) -> Results:
    """Requests made during a scenario: total, per run, and the six most frequent kinds."""
    delta = {k: v - before.get(k, 0.0) for k, v in after.items() if v > before.get(k, 0.0)}
    total = sum(delta.values())
    top = sorted(delta.items(), key=lambda kv: -kv[1])[:6]
    return {
        "total": int(total),
        "per_run": round(total / runs, 1) if isinstance(runs, int) and runs else None,
        "top": {k: int(v) for k, v in top},
    }


def _ran(pods: PodWatch, states: StateWatch[Any], uid: str) -> bool:
    """The run has had a pod and has finished."""
    return uid in pods.first_pod and uid in states.finished_at


class Bench:
    def __init__(
        self,
        args: argparse.Namespace,
        cluster: LocalCluster,
        client: AsyncClient,
        operator: Operator | None,
    ) -> None:
        self.args = args
        self.cluster = cluster
        self.client = client
        self.operator = operator
        self.results: Results = {}
        # Per scenario/system, per trial, per run: [created, first pod, finished] seconds.
        self.samples: dict[str, list[list[list[float | None]]]] = {}

    def cpu_roots(self) -> dict[str, int]:
        """The processes whose CPU time a scenario reports (each with its descendants)."""
        state = self.cluster.state
        assert state is not None
        roots = dict(state.pids)
        roots.update({f"node agent {name}": pid for name, pid in state.nodes.items()})
        postmaster = self.cluster.postgres.data / "postmaster.pid"
        if postmaster.exists():
            roots["postgres"] = int(postmaster.read_text().splitlines()[0])
        if self.operator is not None and self.operator.proc is not None:
            roots["drover-operator"] = self.operator.proc.pid
        roots["bench"] = os.getpid()  # last: the components above may be its descendants
        return roots

    def operator_of(self, system: str) -> Operator | None:
        return self.operator if system == "drover" else None

    def watches(self, system: str, namespace: str) -> tuple[PodWatch, StateWatch[Any]]:
        pods = PodWatch(self.client, namespace)
        if system == "drover":
            return pods, taskrun_watch(self.client, namespace)
        return pods, job_watch(self.client, namespace)

    async def create(self, system: str, namespace: str, name: str) -> str:
        """Create one run (a TaskRun of Task `noop`, or a Job) and return its uid."""
        if system == "drover":
            meta = (await self.client.create(drover_run(name, namespace, "noop"))).metadata
        else:
            meta = (await self.client.create(job(name, namespace))).metadata
        assert meta is not None and meta.uid is not None
        return meta.uid

    async def warm_up(
        self, system: str, namespace: str, bg: Background, pods: PodWatch, states: StateWatch[Any]
    ) -> None:
        """One run to completion first: proves both watches are live before anything is timed,
        and gives each system's caches (informers, Postgres pool) the same head start."""
        uid = await self.create(system, namespace, "warmup")
        if not await bg.until(
            lambda: uid in pods.first_pod and uid in states.finished_at, WARMUP_TIMEOUT
        ):
            raise BenchError(f"{system} warm-up run in {namespace} did not finish")

    async def scenario(
        self, key: str, system: str, trial: int, body: Callable[[str], Awaitable[Results]]
    ) -> None:
        namespace = f"bench-{key}-{system}-{trial}"
        print(f"\n== {key} / {system} / trial {trial + 1} (namespace {namespace})", flush=True)
        entry: Results = {"loadavg_before": [round(x, 2) for x in os.getloadavg()]}
        self.results.setdefault(key, {}).setdefault(system, []).append(entry)
        await create_namespace(self.client, namespace)
        before = await asyncio.to_thread(api_requests, self.cluster)
        audit = self.cluster.control_plane.audit_log
        offset = audit_offset(audit)
        cpu_before = cpu.snapshot(self.cpu_roots())
        try:
            entry.update(await body(namespace))
            entry["cpu_s"] = cpu.used(cpu_before, cpu.snapshot(self.cpu_roots()))
            runs = entry.get("runs")
            if isinstance(runs, int) and runs:
                ours = sum(v for k, v in entry["cpu_s"].items() if k != "other")
                entry["cpu_ms_per_run"] = round(1000 * ours / runs, 1)
            entry["api_requests"] = api_delta(
                before, await asyncio.to_thread(api_requests, self.cluster), entry.get("runs")
            )
            by_client = await asyncio.to_thread(audit_requests, audit, offset, namespace)
            entry["api_requests"]["by_client_per_run"] = per_run(by_client, entry.get("runs"))
            controller = "operator" if system == "drover" else "job-controller"
            entry["api_requests"]["controller_per_run"] = per_run(
                {controller: by_client.get(controller, 0)}, entry.get("runs")
            ).get(controller)
        except (BenchError, ApiError) as e:
            # One system failing (its operator died, the API refused a run) still leaves the
            # other system's figures worth printing.
            entry["error"] = str(e)
        finally:
            entry["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
            for name, value in entry.items():
                print(f"   {name}: {value}", flush=True)
            operator = self.operator_of(system)
            if operator is not None and not operator.alive():
                # Its TaskRuns keep the operator's finalizer: the namespace could not go.
                print(f"   namespace {namespace} left behind: the operator is not running")
            elif not self.args.keep:
                # Deleting 500 pods is real work for this machine: let it finish first.
                try:
                    took = await delete_namespace(
                        self.client, namespace, within=NAMESPACE_DELETE_TIMEOUT
                    )
                    print(f"   namespace deleted in {took:.1f}s", flush=True)
                except BenchError as e:
                    entry["cleanup_error"] = str(e)
                    print(f"   WARNING: {e}", flush=True)

    # -- scenario A ----------------------------------------------------------------------------

    async def latency(self, system: str, namespace: str) -> Results:
        n, timeout = self.args.runs_latency, self.args.scenario_timeout
        pods, states = self.watches(system, namespace)
        bg = Background(pods.run(), states.run(), operator=self.operator_of(system))
        try:
            if system == "drover":
                await self.client.create(drover_task("noop", namespace))
            await self.warm_up(system, namespace, bg, pods, states)
            created: dict[str, float] = {}  # uid -> monotonic time just before its create
            started = time.monotonic()
            for i in range(n):
                t0 = time.monotonic()
                created[await self.create(system, namespace, f"lat-{i:04d}")] = t0
            create_s = time.monotonic() - started
            all_pods = await bg.until(lambda: all(u in pods.first_pod for u in created), timeout)
            all_done = await bg.until(
                lambda: all(u in states.finished_at for u in created),
                max(10.0, timeout - (time.monotonic() - started)),
            )
        finally:
            await bg.stop()
        to_pod = [pods.first_pod[u] - t0 for u, t0 in created.items() if u in pods.first_pod]
        to_done = [
            states.finished_at[u] - t0 for u, t0 in created.items() if u in states.finished_at
        ]
        pod_times = [pods.first_pod[u] for u in created if u in pods.first_pod]

        def since(t: float | None) -> float | None:
            return None if t is None else round(t - started, 3)

        # Per run, seconds after the first create: created, first pod seen, finished. Kept
        # for the JSON only: whether latency is per-object cost or a backlog shows there.
        self.samples.setdefault(f"latency/{system}", []).append(
            [
                [since(t0), since(pods.first_pod.get(u)), since(states.finished_at.get(u))]
                for u, t0 in created.items()
            ]
        )
        result: Results = {
            "runs": n,
            "create_s": round(create_s, 2),
            "create_per_s": round(n / create_s, 1),
            "pods_per_s": round(len(pod_times) / (max(pod_times) - started), 1)
            if pod_times
            else None,
            "create_to_pod_ms": distribution(to_pod),
            "create_to_done_ms": distribution(to_done),
            "succeeded": states.count(created, "Succeeded" if system == "drover" else "Complete"),
            "runs_with_several_pods": sum(1 for u in created if len(pods.pods_of.get(u, ())) > 1),
            "writes_per_run": states.writes_per_object(created),
        }
        if not all_pods:
            result["runs_without_pod"] = n - len(to_pod)
        if not all_done:
            result["unfinished"] = states.unfinished(created)
        return result

    # -- scenario B ----------------------------------------------------------------------------

    async def throughput_drover(self, namespace: str) -> Results:
        n, limit = self.args.runs_throughput, self.args.limit
        pods, states = self.watches("drover", namespace)
        bg = Background(pods.run(), states.run(), operator=self.operator)
        created: set[str] = set()
        names = iter(range(n))

        async def creator() -> None:
            for i in names:  # the workers share one iterator: each name is created once
                created.add(await self.create("drover", namespace, f"tp-{i:04d}"))

        try:
            await self.client.create(drover_task("noop", namespace, limit=limit))
            await self.warm_up("drover", namespace, bg, pods, states)
            pods.start_window()  # count the burst only
            started = time.monotonic()
            await asyncio.gather(*(creator() for _ in range(CREATE_WORKERS)))
            create_s = time.monotonic() - started
            done = await bg.until(
                lambda: all(u in states.finished_at for u in created), self.args.scenario_timeout
            )
        finally:
            await bg.stop()
        finished = [states.finished_at[u] for u in created if u in states.finished_at]
        result: Results = {
            "runs": n,
            "limit": limit,
            "create_s": round(create_s, 2),
            "wall_s": round(max(finished) - started, 2) if done else None,
            "succeeded": states.count(created, "Succeeded"),
            "failed_pods": len(pods.failed),
            "max_concurrent_pods": pods.max_live,
            "mean_concurrent_pods": round(pods.mean_live(max(finished, default=started)), 1),
            "max_running_pods": pods.max_running,
            "limit_held": pods.max_live <= limit,
            "runs_with_several_pods": sum(1 for u in created if len(pods.pods_of.get(u, ())) > 1),
            "writes_per_run": states.writes_per_object(created),
        }
        if not done:
            result["unfinished"] = states.unfinished(created)
        return result

    async def throughput_jobs(self, namespace: str) -> Results:
        n, limit = self.args.runs_throughput, self.args.limit
        pods, states = self.watches("jobs", namespace)
        bg = Background(pods.run(), states.run())
        try:
            await self.warm_up("jobs", namespace, bg, pods, states)
            pods.start_window()
            started = time.monotonic()
            created = await self.client.create(
                job("indexed", namespace, completions=n, parallelism=limit)
            )
            assert created.metadata is not None and created.metadata.uid is not None
            uid = created.metadata.uid
            done = await bg.until(lambda: uid in states.finished_at, self.args.scenario_timeout)
        finally:
            await bg.stop()
        return {
            "runs": n,
            "parallelism": limit,
            "wall_s": round(states.finished_at[uid] - started, 2) if done else None,
            "outcome": states.states.get(uid),
            "pods_created": len(pods.pods_of.get(uid, ())),
            "failed_pods": len(pods.failed),
            "max_concurrent_pods": pods.max_live,
            "mean_concurrent_pods": round(
                pods.mean_live(states.finished_at.get(uid, time.monotonic())), 1
            ),
            "max_running_pods": pods.max_running,
        }

    # -- scenario C ----------------------------------------------------------------------------

    async def idle(self, system: str, namespace: str) -> Results:
        """Single runs on an idle system: each created only once the one before has finished,
        so the figure is one run's path through each system, with no backlog."""
        n = self.args.runs_idle
        pods, states = self.watches(system, namespace)
        bg = Background(pods.run(), states.run(), operator=self.operator_of(system))
        to_pod: list[float] = []
        try:
            if system == "drover":
                await self.client.create(drover_task("noop", namespace))
            await self.warm_up(system, namespace, bg, pods, states)
            for i in range(n):
                t0 = time.monotonic()
                uid = await self.create(system, namespace, f"idle-{i:04d}")
                if not await bg.until(
                    functools.partial(_ran, pods, states, uid),
                    self.args.scenario_timeout,
                ):
                    raise BenchError(f"idle run {i} of {system} did not finish")
                to_pod.append(pods.first_pod[uid] - t0)
        finally:
            await bg.stop()
        return {"runs": n, "create_to_pod_ms": distribution(to_pod)}

    async def run(self) -> None:
        systems = [s for s in SYSTEMS if not getattr(self.args, f"skip_{s}")]
        if self.operator is not None:
            ready_s = await wait_operator_ready(self.client, self.operator, WARMUP_TIMEOUT)
            self.results["operator_ready_s"] = round(ready_s, 2)
            print(f"operator ready: warm-up TaskRun succeeded after {ready_s:.1f}s", flush=True)
        scenarios: dict[str, Callable[[str], Callable[[str], Awaitable[Results]]]] = {
            "latency": lambda system: functools.partial(self.latency, system),
            "throughput": lambda system: (
                self.throughput_drover if system == "drover" else self.throughput_jobs
            ),
            "idle": lambda system: functools.partial(self.idle, system),
        }
        # Trials alternate the systems, and which goes first, so that neither always runs on
        # a warmer (or busier) machine: D J, J D, D J, ...
        for trial in range(self.args.trials):
            order = systems if trial % 2 == 0 else systems[::-1]
            for key in self.args.scenarios:
                for system in order:
                    await self.scenario(key, system, trial, scenarios[key](system))


# -- report -----------------------------------------------------------------------------------


def apply_crds(cluster: LocalCluster, env: dict[str, str]) -> None:
    """Apply Drover's CRDs and wait until they are Established."""
    cmd = [str(cluster.binaries.kubectl), "apply", "--server-side", "-f", str(REPO_ROOT / "crds")]
    proc = subprocess.run(cmd, env=env, timeout=120, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"applying the CRDs failed: {proc.stderr.strip()}")
    try:
        cluster.crds_established("tasks.drover.dev", "taskruns.drover.dev")
    except StartupError as e:
        raise BenchError(str(e)) from e


async def run_bench(
    args: argparse.Namespace, cluster: LocalCluster, operator: Operator | None, bench: list[Bench]
) -> None:
    client = AsyncClient(
        KubeConfig.from_file(str(cluster.kubeconfig)), field_manager="drover-bench"
    )
    bench.append(Bench(args, cluster, client, operator))
    try:
        async with asyncio.timeout(args.timeout):
            await bench[0].run()
    finally:
        await client.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_operator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs-latency", type=int, default=200, help="scenario A runs")
    parser.add_argument("--runs-throughput", type=int, default=500, help="scenario B runs")
    parser.add_argument("--limit", type=int, default=50, help="scenario B concurrency limit")
    parser.add_argument("--runs-idle", type=int, default=30, help="scenario C runs")
    parser.add_argument("--trials", type=int, default=3, help="alternating trials per system")
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=SCENARIOS,
        default=list(SCENARIOS),
        help="which scenarios to run (default: all)",
    )
    parser.add_argument("--skip-jobs", action="store_true", help="measure Drover only")
    parser.add_argument("--skip-drover", action="store_true", help="measure Jobs only")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the cluster and the namespaces (the operator is stopped)",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="whole bench, seconds")
    parser.add_argument(
        "--scenario-timeout",
        type=float,
        default=300,
        help="waiting for one scenario's runs, seconds",
    )
    args = parser.parse_args(argv)
    if args.skip_jobs and args.skip_drover:
        parser.error("nothing to measure with both --skip-jobs and --skip-drover")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Not under a private (0700) temp dir: Postgres runs as its own user.
    directory = Path(tempfile.mkdtemp(prefix="drover-bench-"))
    directory.chmod(0o755)
    # Durable (etcd and Postgres fsync, synchronous commits) and the Job controller's client
    # limits raised: the settings a production cluster would race under.
    cluster = LocalCluster(
        directory, durable=True, controller_manager_qps=CONTROLLER_MANAGER_QPS, audit=True
    )
    operator: Operator | None = None
    bench: list[Bench] = []
    status = 1
    started = time.monotonic()
    print(f"cluster directory: {directory}", flush=True)
    try:
        cluster.up()
        env = cluster_env(cluster)
        if not args.skip_drover:
            apply_crds(cluster, env)
            # A client certificate of its own, so the audit log tells its requests apart.
            kubeconfig = cluster.control_plane.component_kubeconfig(
                "bench-operator", OPERATOR_USER, orgs=("system:masters",)
            )
            operator = Operator({**env, "KUBECONFIG": str(kubeconfig)}, directory / "operator.log")
            operator.start()
        asyncio.run(run_bench(args, cluster, operator, bench))
        status = 0
    except TimeoutError:
        print(f"\nTIMEOUT: the bench ran longer than {args.timeout:.0f}s", file=sys.stderr)
    except BenchError as e:
        print(f"\nERROR: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
    finally:
        if operator is not None:
            operator.stop()
        if args.keep:
            print(
                f"\ncluster kept: source {cluster.env_file}; stop it with\n"
                f"  {sys.executable} -m drover_localcluster down --dir {directory}"
            )
        else:
            cluster.down()
    results: Results = bench[0].results if bench else {}
    rows = table(results, args)
    print_settings(args)
    print_table(rows, args.trials)
    record(
        "operator-vs-jobs",
        [
            Row(
                f"{row['figure']} (drover | jobs)",
                f"{row['drover_cell']} | {row['jobs_cell']}",
                row["goal"],
                row["met"],
            )
            for row in rows
        ],
        "durable etcd and Postgres; controller-manager at "
        f"{CONTROLLER_MANAGER_QPS[0]} QPS / {CONTROLLER_MANAGER_QPS[1]} burst",
    )
    if any(t.get("limit_held") is False for t in results.get("throughput", {}).get("drover", [])):
        print(f"\nLIMIT VIOLATED: Drover ran more than {args.limit} pods at once", file=sys.stderr)
        status = 1
    if any(
        "error" in t
        for key in ("latency", "throughput", "idle")
        for trials in results.get(key, {}).values()
        for t in trials
    ):
        status = 1
    report = {
        "args": vars(args),
        "cpus": os.cpu_count(),
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "elapsed_s": round(time.monotonic() - started, 1),
        "results": results,
        "samples": bench[0].samples if bench else {},
        "settings": settings(args),
        "summary": rows,
    }
    out = directory / "results.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults: {out}")
    if operator is not None:
        print(f"operator log: {operator.log}")
    return status


if __name__ == "__main__":
    sys.exit(main())
