"""The chaos suite's driver: a seeded mixed workload on a local cluster of its own, faults
injected at random moments, then the evidence for `chaos_checks` and the table it prints.

The workload: command tasks (limit 2), SDK tasks of five ledger-writing steps (limit 3),
command tasks under `perKeyLimit` (limit 4, one per key), a cron Task ticking every three
seconds, and parents triggering two children each and waiting for them. Runs are created up
front with seeded delays spread over the fault window, so they start while faults happen.

The faults (each several times, in a seeded order and at seeded moments): an operator SIGKILL
(two replicas, both active), a Postgres crash (`pg_ctl -m immediate` or SIGKILL of the
postmaster) and restart, kube-apiserver / etcd / node agent SIGKILL and restart, a runner
SIGSTOPped and SIGCONTed long after its stall was detected (a zombie), a runner SIGKILL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import random
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from lightkube import ApiError, Client, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, ServiceAccount
from lightkube.types import PatchType

from drover.protocol.names import ENV_ENTRYPOINT
from drover.protocol.phases import FINISHED_PHASES
from drover_localcluster import faults
from drover_localcluster.cluster import LocalCluster
from drover_localcluster.processes import marked_pids
from drover_operator.kube import TaskResource, TaskRunResource
from tests.conftest import REPO_ROOT, E2ECluster, private_directory, wait_for
from tests.e2e import ledger
from tests.e2e.chaos_checks import (
    HEARTBEAT_S,
    INVARIANTS,
    Evidence,
    Limit,
    RunView,
    Verdict,
    judge,
)
from tests.e2e.ledger import Row
from tests.e2e.operator_support import OperatorProcess
from tests.e2e.podwatch import PodLife, PodWatch, watching

T = TypeVar("T")
NAMESPACE = "chaos"
KINDS = (
    "operator-kill",
    "postgres-crash",
    "apiserver-kill",
    "etcd-kill",
    "node-agent-kill",
    "runner-stop",
    "runner-kill",
)
SDK = {
    "image": "busybox",
    "timeouts": {"heartbeat": f"{HEARTBEAT_S:g}s"},
    "retry": {"maxAttempts": 30, "minDelay": "1s", "maxDelay": "3s"},
}
LIMITS = {
    "chaos-cmd": Limit(2),
    "chaos-steps": Limit(3),
    "chaos-keyed": Limit(4, per_key=1),
    "chaos-child": Limit(2),
    # slotRelease: PodGone: every pod, from its creation to its end, within the limit.
    "chaos-strict": Limit(2, pods=True),
}
STEP_TASKS = frozenset({"chaos-steps", "chaos-strict"})
SDK_TASKS = frozenset({"chaos-steps", "chaos-strict", "chaos-child", "chaos-parent"})
CHAOS_LOGS = Path(os.environ.get("DROVER_CHAOS_LOGS", "/tmp/drover-chaos-logs"))
#: Every run must be finished this long after the last fault (and the last zombie woke).
SETTLE_BOUND_S = 240.0


@dataclass
class ChaosResult:
    seed: int
    faults: Counter[str]
    phases: Counter[str]
    verdict: Verdict
    settle_s: float
    fault_window_s: float
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        lines = [f"chaos seed={self.seed}  (replay: DROVER_CHAOS_SEED={self.seed})"]
        lines.append(f"{'fault':<22}{'injected':>9}")
        for kind in KINDS:
            lines.append(f"{kind:<22}{self.faults[kind]:>9}")
        lines.append(f"{'total':<22}{sum(self.faults.values()):>9}")
        runs = sum(self.phases.values())
        by_phase = ", ".join(f"{p} {n}" for p, n in sorted(self.phases.items()))
        lines.append(f"runs: {runs} ({by_phase})")
        lines.append(
            f"fault window {self.fault_window_s:.0f}s; all runs terminal {self.settle_s:.1f}s "
            f"after the last fault (bound {SETTLE_BOUND_S:.0f}s)"
        )
        lines.append(f"{'invariant':<22}{'violations':>11}")
        for name in INVARIANTS:
            lines.append(f"{name:<22}{self.verdict.count(name):>11}")
        lines.append(
            "documented overlap (pods beyond a limit while old ones tear down): "
            f"up to +{self.verdict.teardown_peak_over} pods, "
            f"longest {self.verdict.teardown_seconds_over * 1000:.0f} ms"
        )
        for invariant, found in self.verdict.violations.items():
            for item in found[:10]:
                lines.append(f"  {invariant}: {item}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def retrying(action: Callable[[], T], what: str, timeout: float = 120) -> T:
    """`action()`, retried while a component is down (an AlreadyExists after a lost response
    counts as done)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except ApiError as exc:
            if exc.status.code == 409:
                return None  # type: ignore[return-value]
            error: Exception = exc
        except Exception as exc:  # connection refused, reset, timeouts
            error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still failing after {timeout}s: {error}")
        time.sleep(0.5)


@contextlib.contextmanager
def chaos_cluster() -> Iterator[E2ECluster]:
    """A local cluster of the suite's own: the faults never touch the shared one. Durable
    (etcd and Postgres fsync, synchronous commit), as in production: a crash of a store that
    acknowledged commits it had not written would lose them, and no system promises more."""
    local = LocalCluster(private_directory("drover-chaos-cluster-"), durable=True)
    local.up()
    client = Client(KubeConfig.from_file(str(local.kubeconfig)), field_manager="drover-chaos")
    cluster = E2ECluster(local, client)
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
        local.crds_established()
        yield cluster
    finally:
        client.close()
        # The logs outlive the cluster, for a post-mortem of a failed run.
        shutil.rmtree(CHAOS_LOGS, ignore_errors=True)
        shutil.copytree(local.directory / "logs", CHAOS_LOGS, dirs_exist_ok=True)
        local.down()
        shutil.rmtree(local.directory, ignore_errors=True)


class Chaos:
    """One seeded chaos run against `cluster` (see the module docstring)."""

    def __init__(self, cluster: E2ECluster, directory: Path, seed: int, per_kind: int) -> None:
        self.cluster, self.directory, self.seed = cluster, directory, seed
        self.per_kind = per_kind
        self.rng = random.Random(seed)
        self.faults: Counter[str] = Counter()
        self.notes: list[str] = []
        self.stopped: list[tuple[float, int]] = []  # (when to SIGCONT, pid)
        self.created: Counter[str] = Counter()
        log_dir = cluster.local.directory / "logs"
        dsn = cluster.local.postgres.dsn
        self.operators = [
            OperatorProcess(cluster, NAMESPACE, dsn, log_dir / f"operator-{i}.log") for i in (1, 2)
        ]

    # -- workload ----------------------------------------------------------------------------

    def setup(self) -> None:
        c = self.cluster.client
        c.create(Namespace(metadata=ObjectMeta(name=NAMESPACE)))
        d = str(self.directory)
        tasks: dict[str, dict[str, Any]] = {
            "chaos-cmd": {"image": "busybox", "command": ledger.command(d, "sleep 1"),
                          "concurrency": {"limit": 2}, "retry": SDK["retry"]},
            "chaos-keyed": {"image": "busybox", "command": ledger.command(d, "sleep 0.5"),
                            "concurrency": {"limit": 4, "perKeyLimit": 1}, "retry": SDK["retry"]},
            "chaos-tick": {"image": "busybox", "command": ledger.command(d),
                           "schedule": {"cron": "*/3 * * * * *"}, "retry": SDK["retry"]},
            "chaos-steps": {**SDK, "entrypoint": "tests.e2e.chaos_tasks:five_steps",
                            "concurrency": {"limit": 3}},
            "chaos-child": {**SDK, "entrypoint": "tests.e2e.chaos_tasks:child",
                            "concurrency": {"limit": 2}},
            "chaos-strict": {**SDK, "entrypoint": "tests.e2e.chaos_tasks:five_steps",
                             "concurrency": {"limit": 2, "slotRelease": "PodGone"}},
            "chaos-parent": {**SDK, "entrypoint": "tests.e2e.chaos_tasks:parent"},
        }  # fmt: skip
        wait_for(self._default_sa, what="the chaos namespace's ServiceAccount")
        for name, spec in tasks.items():
            meta = ObjectMeta(name=name, namespace=NAMESPACE)
            c.create(TaskResource(metadata=meta, spec=spec))
        for op in self.operators:
            op.start()

    def _default_sa(self) -> bool:
        try:
            self.cluster.client.get(ServiceAccount, "default", namespace=NAMESPACE)
        except ApiError:
            return False
        return True

    def create_runs(self, round_: int) -> None:
        """A few runs before each fault (retried while the API server is down), so there is
        work in flight, and SDK runners to stop or kill, whenever a fault lands."""
        batch = ["chaos-steps"] * 2 + ["chaos-strict"]
        if round_ % 2 == 0:
            batch += ["chaos-cmd", "chaos-keyed"]
        if round_ % 4 == 0:
            batch += ["chaos-parent"]
        for task in batch:
            self._create(task)

    def _create(self, task: str) -> None:
        i = self.created[task]
        self.created[task] += 1
        spec: dict[str, Any] = {
            "taskRef": {"name": task},
            "payload": {"dir": str(self.directory)},
            "delay": f"{self.rng.uniform(0, 3):.1f}s",
        }
        if task == "chaos-keyed":
            spec["concurrencyKey"] = f"k{i % 3}"
        meta = ObjectMeta(name=f"{task.removeprefix('chaos-')}-{i:03d}", namespace=NAMESPACE)
        run = TaskRunResource(metadata=meta, spec=spec)
        retrying(functools.partial(self.cluster.client.create, run), f"creating {meta.name}")

    # -- faults ------------------------------------------------------------------------------

    def inject_all(self) -> float:
        """Every fault, in a seeded order at seeded moments; returns when the last ended."""
        queue = [kind for kind in KINDS for _ in range(self.per_kind)]
        self.rng.shuffle(queue)
        for round_, kind in enumerate(queue):
            self._wake_due()
            self.create_runs(round_)
            time.sleep(self.rng.uniform(0.5, 3.0))
            if not self.inject(kind):
                self.notes.append(f"{kind}: no runner alive within 3 minutes, not injected")
                continue
            self.faults[kind] += 1
        for due, pid in sorted(self.stopped):
            time.sleep(max(0.0, due - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.stopped.clear()
        return time.monotonic()

    def inject(self, kind: str) -> bool:
        local = self.cluster.local
        pause = self.rng.uniform(0.2, 2.0)
        if kind == "operator-kill":
            op = self.rng.choice(self.operators)
            op.kill()
            time.sleep(pause)
            op.start()
        elif kind in ("postgres-crash", "apiserver-kill", "etcd-kill", "node-agent-kill"):
            component = {"postgres-crash": "postgres", "apiserver-kill": "kube-apiserver",
                         "etcd-kill": "etcd", "node-agent-kill": "node-agent"}[kind]  # fmt: skip
            mode = self.rng.choice(["sigkill", "immediate"])
            faults.kill(local, component, postgres_mode=mode)
            time.sleep(pause)
            faults.restart(local, component)
        else:
            runners: list[int] = []
            for _ in range(3):
                try:
                    runners = wait_for(self._runners, timeout=60, interval=0.2, what="a runner")
                    break
                except AssertionError:
                    # Every runner finished before one could be hit: start another.
                    self._create("chaos-steps")
            if not runners:
                return False
            pid = self.rng.choice(runners)
            if kind == "runner-kill":
                os.kill(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGSTOP)
                # Long after the stall (heartbeat 5s) was detected and a new pod started.
                self.stopped.append((time.monotonic() + self.rng.uniform(15, 30), pid))
        return True

    def _wake_due(self) -> None:
        now = time.monotonic()
        for due, pid in [s for s in self.stopped if s[0] <= now]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            self.stopped.remove((due, pid))

    def _runners(self) -> list[int]:
        """Live SDK runner processes of this cluster's pods (not stopped already)."""
        stopped = {pid for _, pid in self.stopped}
        found = []
        for pid in marked_pids(self.cluster.local.state.marker):  # type: ignore[union-attr]
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            is_runner = any(e.startswith(ENV_ENTRYPOINT.encode() + b"=") for e in environ)
            if is_runner and b"drover.runner" in cmdline and pid not in stopped:
                found.append(pid)
        return found

    # -- evidence ----------------------------------------------------------------------------

    def collect(self, watch: PodWatch) -> Evidence:
        items = list(self.cluster.client.list(TaskRunResource, namespace=NAMESPACE))
        runs = []
        for item in items:
            meta, spec = item.metadata, item.get("spec") or {}
            assert meta is not None and meta.name is not None
            st = item.get("status") or {}
            runs.append(
                RunView(
                    name=meta.name,
                    uid=meta.uid or "",
                    task=spec.get("taskRef", {}).get("name", ""),
                    phase=st.get("phase") or "",
                    key=spec.get("concurrencyKey") or "",
                    labels=dict(meta.labels or {}),
                    annotations=dict(meta.annotations or {}),
                    output=st.get("output"),
                )
            )
        with psycopg.connect(self.cluster.local.postgres.dsn) as conn:
            rows = conn.execute("SELECT id::text, phase FROM drover_runs").fetchall()
            phases: dict[str, str] = {str(run_id): str(phase) for run_id, phase in rows}
            steps: dict[str, list[Any]] = {}
            for run_id, value in conn.execute(
                "SELECT run_id::text, value FROM drover_steps WHERE name = 'effect'"
            ):
                steps.setdefault(run_id, []).append(value)
        return Evidence(
            runs=runs,
            pods=watch.matching(),
            rows=ledger.read(self.directory),
            limits=LIMITS,
            store_phases=phases,
            store_steps=steps,
            step_tasks=set(STEP_TASKS),
            sdk_tasks=set(SDK_TASKS),
            children_per_parent=2,
        )

    def settled(self) -> bool:
        """Every run finished, and its status agrees with the store."""
        items = list(self.cluster.client.list(TaskRunResource, namespace=NAMESPACE))
        return all((i.get("status") or {}).get("phase") in FINISHED_PHASES for i in items)

    def stop(self) -> None:
        for op in self.operators:
            op.stop()


def dump(evidence: Evidence, path: Path) -> None:
    """The evidence as JSON, to re-judge or inspect a run after the fact."""
    path.write_text(json.dumps(dataclasses.asdict(evidence), default=str, indent=1))


def load(path: Path) -> Evidence:
    """Evidence `dump` wrote (to re-judge a run: `python -m tests.e2e.chaos <evidence.json>`)."""
    raw = json.loads(path.read_text())
    pods = []
    for p in raw["pods"]:
        p.pop("_lock", None), p.pop("_seq", None)
        pods.append(PodLife(**p))
    return Evidence(
        runs=[RunView(**r) for r in raw["runs"]],
        pods=pods,
        rows=[Row(**r) for r in raw["rows"]],
        limits={k: Limit(**v) for k, v in raw["limits"].items()},
        store_phases=raw["store_phases"],
        store_steps=raw["store_steps"],
        step_tasks=set(STEP_TASKS),
        sdk_tasks=set(SDK_TASKS),
        children_per_parent=raw["children_per_parent"],
    )


def run_chaos(seed: int, per_kind: int, directory: Path) -> ChaosResult:
    directory.chmod(0o777)
    with chaos_cluster() as cluster, watching(cluster, NAMESPACE) as watch:
        chaos = Chaos(cluster, directory, seed, per_kind)
        try:
            chaos.setup()
            started = time.monotonic()
            last_fault = chaos.inject_all()
            cluster.client.patch(
                TaskResource, "chaos-tick", {"spec": {"schedule": {"suspend": True}}},
                namespace=NAMESPACE, patch_type=PatchType.MERGE,
            )  # fmt: skip
            reached = True
            try:
                wait_for(chaos.settled, timeout=SETTLE_BOUND_S, interval=0.5, what="all runs")
            except AssertionError:
                reached = False
            settle = time.monotonic() - last_fault
            try:
                wait_for(lambda: not watch.live(), timeout=60, interval=0.5, what="pods gone")
            except AssertionError:
                chaos.notes.append(f"pods still live: {[p.name for p in watch.live()]}")
            evidence = chaos.collect(watch)
            dump(evidence, directory / "evidence.json")
        finally:
            chaos.stop()
    verdict = judge(evidence)
    phases = Counter(r.phase or "none" for r in evidence.runs)
    settle_s = settle if reached else float("inf")
    return ChaosResult(
        seed, chaos.faults, phases, verdict, settle_s, last_fault - started, chaos.notes
    )


if __name__ == "__main__":  # re-judge a dumped run with the current invariants
    import sys

    judged = judge(load(Path(sys.argv[1])))
    for name in INVARIANTS:
        print(f"{name:<22}{judged.count(name):>11}")
    print(f"overlap +{judged.teardown_peak_over} pods, {judged.teardown_seconds_over:.1f}s")
    for invariant, found in judged.violations.items():
        for item in found:
            print(f"  {invariant}: {item}")
