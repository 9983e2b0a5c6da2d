"""What the operator benchmark needs around its scenarios: the operator process, namespaces,
and watches that timestamp what the API server reports."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterable, Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import GenericNamespacedResource, create_namespaced_resource
from lightkube.models.batch_v1 import JobSpec
from lightkube.models.core_v1 import Container, PodSpec, PodTemplateSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Namespace, Pod, ServiceAccount
from lightkube.types import OnErrorAction, OnErrorResult

from drover_localcluster.cluster import LocalCluster

TASK = create_namespaced_resource("drover.dev", "v1alpha1", "Task", "tasks")
TASKRUN = create_namespaced_resource("drover.dev", "v1alpha1", "TaskRun", "taskruns")
RUN_UID_LABEL = "drover.dev/run-uid"
TASKRUN_FINISHED = frozenset({"Succeeded", "Failed", "Canceled", "TimedOut", "Expired"})
JOB_FINISHED = frozenset({"Complete", "Failed"})
POD_FINISHED = frozenset({"Succeeded", "Failed"})

T = TypeVar("T")


class BenchError(Exception):
    """The benchmark cannot go on (the operator died, a namespace would not go, ...)."""


def cluster_env(cluster: LocalCluster) -> dict[str, str]:
    """os.environ plus what talks to the cluster: KUBECONFIG, DROVER_DATABASE_URL, PATH."""
    env = cluster.env()
    prepend = env.pop("PATH_PREPEND")
    return {**os.environ, **env, "PATH": f"{prepend}:{os.environ.get('PATH', '')}"}


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile: always one of the samples, no interpolation."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


async def wait_until(condition: Callable[[], bool], within: float) -> bool:
    """Poll `condition` until true (True) or `within` seconds pass (False). Measurements
    come from watch timestamps, never from this loop, so its interval costs no precision."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _retry_watch(error: Exception, count: int) -> OnErrorResult:
    # A dropped watch resumes from its last resourceVersion; give up only if it keeps failing.
    if count > 20:
        return OnErrorResult(OnErrorAction.RAISE)
    return OnErrorResult(OnErrorAction.RETRY, sleep=0.5)


def api_requests(cluster: LocalCluster) -> dict[str, float]:
    """kube-apiserver's request counters by "VERB resource[/subresource]", watches left out:
    the difference over a scenario is what every client (controllers, operator, node agent,
    this bench) asked of the API server for it."""
    counts: dict[str, float] = {}
    for line in str(cluster.get("/metrics", raw=True)).splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line.rpartition(" ")
        labels = dict(re.findall(r'(\w+)="([^"]*)"', labels_text))
        if labels.get("verb") == "WATCH":
            continue
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        key = f"{labels.get('verb')} {resource}"
        counts[key] = counts.get(key, 0.0) + float(value)
    return counts


#: The operator's own identity in the bench (a client certificate of its own), so the audit
#: log tells its requests from the bench's.
OPERATOR_USER = "drover-operator"
_CLIENTS = {
    OPERATOR_USER: "operator",
    "system:serviceaccount:kube-system:job-controller": "job-controller",
    "system:kube-scheduler": "scheduler",
    "system:serviceaccount:kube-system:generic-garbage-collector": "garbage-collector",
    "drover-admin": "bench",
}


def audit_offset(log: Path) -> int:
    try:
        return log.stat().st_size
    except FileNotFoundError:
        return 0


def audit_requests(log: Path, offset: int, namespace: str) -> dict[str, int]:
    """Requests about objects in `namespace` since `offset` of kube-apiserver's audit log
    (watches are not logged), by client: "operator", "job-controller", "scheduler",
    "node", "bench", ... (the user name for anyone else)."""
    counts: dict[str, int] = {}
    if not log.exists():
        return counts
    with log.open("rb") as f:
        f.seek(offset)
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line still being written
            if (event.get("objectRef") or {}).get("namespace") != namespace:
                continue
            user = str((event.get("user") or {}).get("username", "?"))
            client = "node" if user.startswith("system:node:") else _CLIENTS.get(user, user)
            counts[client] = counts.get(client, 0) + 1
    return counts


# -- the operator -----------------------------------------------------------------------------


class Operator:
    """`python -m drover_operator run --standalone` as a child process, output to a log file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            # A session of its own: Ctrl-C reaches the bench, which stops the operator itself.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "drover_operator", "run", "--standalone"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(
                f"the operator exited with {self.proc.returncode}; last log lines:\n" + self.tail()
            )

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


async def wait_operator_ready(client: AsyncClient, operator: Operator, within: float) -> float:
    """Run one no-op TaskRun to success in a namespace of its own; return how long it took.
    That proves the whole path (handlers, Postgres, pod builder, node) rather than a port."""
    namespace = "bench-warmup"
    await create_namespace(client, namespace)
    await client.create(drover_task("noop", namespace))
    started = time.monotonic()
    await client.create(drover_run("warmup", namespace, "noop"))
    deadline = started + within
    phase = None
    while time.monotonic() < deadline:
        operator.check_alive()
        run = await client.get(TASKRUN, "warmup", namespace=namespace)
        phase = (run.get("status") or {}).get("phase")
        if phase == "Succeeded":
            elapsed = time.monotonic() - started
            await delete_namespace(client, namespace, within=120)
            return elapsed
        if phase in TASKRUN_FINISHED:
            break
        await asyncio.sleep(0.2)
    raise BenchError(
        f"warm-up TaskRun did not succeed within {within:.0f}s (phase {phase}); "
        f"operator log tail:\n{operator.tail()}"
    )


# -- objects ----------------------------------------------------------------------------------


def drover_task(
    name: str, namespace: str, *, limit: int | None = None
) -> GenericNamespacedResource:
    spec: dict[str, Any] = {"image": "busybox", "command": ["true"], "retry": {"maxAttempts": 1}}
    if limit is not None:
        spec["concurrency"] = {"limit": limit}
    return TASK(
        apiVersion="drover.dev/v1alpha1",
        kind="Task",
        metadata=ObjectMeta(name=name, namespace=namespace),
        spec=spec,
    )


def drover_run(name: str, namespace: str, task: str) -> GenericNamespacedResource:
    return TASKRUN(
        apiVersion="drover.dev/v1alpha1",
        kind="TaskRun",
        metadata=ObjectMeta(name=name, namespace=namespace),
        spec={"taskRef": {"name": task}},
    )


def job(
    name: str, namespace: str, *, completions: int | None = None, parallelism: int | None = None
) -> Job:
    pod = PodSpec(
        containers=[Container(name="main", image="busybox", command=["true"])],
        restartPolicy="Never",
        # As Drover's pod builder does for a Task without a ServiceAccount, so both systems pay
        # the same per-pod cost on the node (no TokenRequest per pod).
        automountServiceAccountToken=False,
    )
    return Job(
        metadata=ObjectMeta(name=name, namespace=namespace),
        spec=JobSpec(
            template=PodTemplateSpec(spec=pod),
            backoffLimit=0,
            completionMode="Indexed" if completions is not None else None,
            completions=completions,
            parallelism=parallelism,
        ),
    )


def taskrun_state(run: Any) -> str:
    return str((run.get("status") or {}).get("phase") or "(no status)")


def job_state(obj: Job) -> str:
    for condition in (obj.status and obj.status.conditions) or []:
        if condition.type in JOB_FINISHED and condition.status == "True":
            return condition.type
    return "Active"


# -- namespaces -------------------------------------------------------------------------------


async def create_namespace(client: AsyncClient, name: str) -> None:
    await client.create(Namespace(metadata=ObjectMeta(name=name)))

    # Pods are refused until the controller-manager has made the default ServiceAccount.
    async def has_default_sa() -> bool:
        try:
            await client.get(ServiceAccount, "default", namespace=name)
        except ApiError:
            return False
        return True

    deadline = time.monotonic() + 60
    while not await has_default_sa():
        if time.monotonic() > deadline:
            raise BenchError(f"no default ServiceAccount in {name} after 60s")
        await asyncio.sleep(0.1)


async def delete_namespace(client: AsyncClient, name: str, *, within: float) -> float:
    """Delete a namespace and wait until it is gone with all its pods; return the seconds."""
    started = time.monotonic()
    await client.delete(Namespace, name)
    while time.monotonic() - started < within:
        try:
            await client.get(Namespace, name)
        except ApiError as e:
            if e.status.code == 404:
                return time.monotonic() - started
            raise
        await asyncio.sleep(0.5)
    raise BenchError(f"namespace {name} still exists after {within:.0f}s")


# -- watches ----------------------------------------------------------------------------------


class PodWatch:
    """Every pod of one namespace as a watch reports it: when each owner's first pod showed up,
    and how many pods were alive at once. Watch events of one resource arrive in
    resourceVersion order, so a pod's end is always seen before a pod created after it."""

    def __init__(self, client: AsyncClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.first_pod: dict[str, float] = {}  # owner uid -> monotonic time first seen
        self.pods_of: dict[str, set[str]] = {}  # owner uid -> pod names (1 per run expected)
        self.live: set[str] = set()  # pods neither Succeeded nor Failed nor gone
        self.running: set[str] = set()
        self.max_live = 0
        self.max_running = 0
        self.failed: set[str] = set()
        # Time-weighted count of live pods since `start_window`: how well slots were used.
        self._window_start = self._last = time.monotonic()
        self._live_seconds = 0.0

    def start_window(self) -> None:
        """Count maxima and the mean from now on (after a warm-up run)."""
        self._window_start = self._last = time.monotonic()
        self._live_seconds = 0.0
        self.max_live, self.max_running = len(self.live), len(self.running)

    def mean_live(self, until: float) -> float:
        live_seconds = self._live_seconds + len(self.live) * max(0.0, until - self._last)
        return live_seconds / max(until - self._window_start, 1e-9)

    async def run(self) -> None:
        async for kind, pod in self.client.watch(
            Pod, namespace=self.namespace, on_error=_retry_watch
        ):
            self.observe(kind, pod, time.monotonic())

    def observe(self, kind: str, pod: Pod, now: float) -> None:
        meta = pod.metadata
        assert meta is not None and meta.name is not None
        owners = {ref.uid for ref in meta.ownerReferences or []}
        # Drover labels its pods with the run's uid; count that too in case a pod lacks owners.
        if (meta.labels or {}).get(RUN_UID_LABEL):
            owners.add((meta.labels or {})[RUN_UID_LABEL])
        for uid in owners:
            self.first_pod.setdefault(uid, now)
            self.pods_of.setdefault(uid, set()).add(meta.name)
        phase = pod.status.phase if pod.status else None
        self._live_seconds += len(self.live) * max(0.0, now - self._last)
        self._last = now
        if kind == "DELETED" or phase in POD_FINISHED:
            self.live.discard(meta.name)
            self.running.discard(meta.name)
            if phase == "Failed":
                self.failed.add(meta.name)
            return
        self.live.add(meta.name)
        if phase == "Running":
            self.running.add(meta.name)
        self.max_live = max(self.max_live, len(self.live))
        self.max_running = max(self.max_running, len(self.running))


class StateWatch(Generic[T]):
    """Last state of each object of one kind in a namespace (TaskRun phase, Job condition),
    and when each first reached a finished state."""

    def __init__(
        self,
        events: AsyncIterable[tuple[str, T]],
        state: Callable[[T], str],
        uid: Callable[[T], str],
        finished: frozenset[str],
    ) -> None:
        self.events = events
        self.state = state
        self.uid = uid
        self.finished = finished
        self.states: dict[str, str] = {}
        self.finished_at: dict[str, float] = {}
        # Watch events per object: each is one write (status, finalizer, ...) to the object.
        self.writes: dict[str, int] = {}

    async def run(self) -> None:
        async for kind, obj in self.events:
            now = time.monotonic()
            if kind == "DELETED":
                continue
            uid, state = self.uid(obj), self.state(obj)
            self.states[uid] = state
            self.writes[uid] = self.writes.get(uid, 0) + 1
            if state in self.finished:
                self.finished_at.setdefault(uid, now)

    def count(self, uids: set[str] | dict[str, float], state: str) -> int:
        return sum(1 for uid in uids if self.states.get(uid) == state)

    def writes_per_object(self, uids: set[str] | dict[str, float]) -> dict[str, float]:
        counts = [self.writes.get(uid, 0) for uid in uids]
        if not counts:
            return {}
        return {"mean": round(sum(counts) / len(counts), 1), "max": max(counts)}

    def unfinished(self, uids: set[str] | dict[str, float]) -> dict[str, int]:
        """How many of `uids` are in each not-yet-finished state (what a stuck run looks like)."""
        tally: dict[str, int] = {}
        for uid in uids:
            if uid not in self.finished_at:
                state = self.states.get(uid, "(not seen)")
                tally[state] = tally.get(state, 0) + 1
        return tally


def taskrun_watch(client: AsyncClient, namespace: str) -> StateWatch[Any]:
    return StateWatch(
        client.watch(TASKRUN, namespace=namespace, on_error=_retry_watch),
        taskrun_state,
        lambda run: str(run["metadata"]["uid"]),
        TASKRUN_FINISHED,
    )


def job_watch(client: AsyncClient, namespace: str) -> StateWatch[Job]:
    def uid(obj: Job) -> str:
        assert obj.metadata is not None and obj.metadata.uid is not None
        return obj.metadata.uid

    return StateWatch(
        client.watch(Job, namespace=namespace, on_error=_retry_watch),
        job_state,
        uid,
        JOB_FINISHED,
    )


def median_spread(values: list[float], digits: int) -> str:
    """A figure over alternating trials as the benches print it: `median (min–max)`."""
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"
