"""An independent observer of pods: the test's own watch on a namespace, recording when each
pod appeared and when it stopped occupying its slot (terminal phase or deleted). Tests judge
limits ("never more than N at once"), "no pod while waiting" and "one pod per attempt" from
it, not from Drover's records.

Slot occupancy is ordered by the watch's own event sequence, not by clocks: one watch stream
delivers a namespace's changes in the order the API server made them, so a pod created after
another one ended is always seen after that end."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from lightkube import ApiError, Client, KubeConfig
from lightkube.resources.core_v1 import Pod

from drover.protocol.names import ENV_API_URL
from tests.conftest import E2ECluster


@dataclass
class PodLife:
    name: str
    labels: dict[str, str]
    seen_at: float
    #: Position in the watch's event order when first seen, and when it ended.
    seen_seq: int
    #: The API URL the pod was given (an SDK task's): which operator created it.
    api_url: str = ""
    #: When it was first seen finished (Succeeded/Failed) or deleted; None while it lives.
    ended_at: float | None = None
    ended_seq: int | None = None
    phase: str = ""


@dataclass
class PodWatch:
    pods: dict[str, PodLife] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seq: Iterator[int] = field(default_factory=itertools.count)

    def record(self, kind: str, pod: Pod) -> None:
        assert pod.metadata is not None and pod.metadata.name is not None
        name, now = pod.metadata.name, time.time()
        phase = (pod.status.phase if pod.status else None) or ""
        with self._lock:
            seq = next(self._seq)
            life = self.pods.get(name)
            if life is None:
                life = PodLife(name, dict(pod.metadata.labels or {}), now, seq, _api_url(pod))
                self.pods[name] = life
            life.phase = phase or life.phase
            if life.ended_at is None and (kind == "DELETED" or phase in ("Succeeded", "Failed")):
                life.ended_at, life.ended_seq = now, seq

    def describe_live(self) -> list[tuple[str, str]]:
        """The pods not yet seen ending, with their last phase: what a timed-out wait shows."""
        return [(p.name, p.phase or "(no phase)") for p in self.live()]

    def relisted(self, present: set[str]) -> None:
        """After a (re)list: pods no longer there ended while the watch was down (counted as
        ending now, which overstates occupancy rather than hiding it)."""
        now = time.time()
        with self._lock:
            seq = next(self._seq)
            for life in self.pods.values():
                if life.name not in present and life.ended_at is None:
                    life.ended_at, life.ended_seq = now, seq

    def matching(self, **labels: str) -> list[PodLife]:
        with self._lock:
            return [
                p
                for p in self.pods.values()
                if all(p.labels.get(k) == v for k, v in labels.items())
            ]

    def live(self, **labels: str) -> list[PodLife]:
        return [p for p in self.matching(**labels) if p.ended_at is None]

    def peak(
        self, labels: dict[str, str] | None = None, group: Callable[[PodLife], str] | None = None
    ) -> int:
        """The most pods (matching `labels`) occupying a slot at once, in event order; with
        `group`, the most in any one group (e.g. per concurrency key)."""
        groups: dict[str, list[PodLife]] = {}
        for pod in self.matching(**(labels or {})):
            groups.setdefault(group(pod) if group else "", []).append(pod)
        return max((peak_of(pods) for pods in groups.values()), default=0)


def peak_of(pods: list[PodLife]) -> int:
    edges = [(p.seen_seq, 1) for p in pods]
    edges += [(p.ended_seq, -1) for p in pods if p.ended_seq is not None]
    current = peak = 0
    for _, delta in sorted(edges):
        current += delta
        peak = max(peak, current)
    return peak


def _api_url(pod: Pod) -> str:
    for container in (pod.spec.containers if pod.spec else None) or []:
        for env in container.env or []:
            if env.name == ENV_API_URL and env.value:
                return env.value
    return ""


@contextmanager
def watching(cluster: E2ECluster, namespace: str) -> Iterator[PodWatch]:
    """Watch the namespace's pods for the duration of the block."""
    observed = PodWatch()
    client = Client(KubeConfig.from_file(str(cluster.local.kubeconfig)))
    started = threading.Event()
    stop = threading.Event()

    def loop() -> None:
        # A dropped watch resumes from the last event's resourceVersion, so every event in
        # between arrives, in order; only when that is too old (410 Gone) is the namespace
        # listed again, and pods missing from the listing ended then (overstating occupancy
        # rather than hiding it).
        version: str | None = None
        while not stop.is_set():
            try:
                if version is None:
                    present: set[str] = set()
                    newest = 0
                    for pod in client.list(Pod, namespace=namespace):
                        observed.record("ADDED", pod)
                        assert pod.metadata is not None
                        present.add(pod.metadata.name or "")
                        newest = max(newest, int(pod.metadata.resourceVersion or 0))
                    observed.relisted(present)
                    # Events after the newest listed pod (replayed ones change nothing).
                    version = str(newest) if newest else None
                started.set()
                for kind, pod in client.watch(Pod, namespace=namespace, resource_version=version):
                    if stop.is_set():
                        return
                    observed.record(kind, pod)
                    if pod.metadata is not None and pod.metadata.resourceVersion:
                        version = pod.metadata.resourceVersion
            except ApiError as exc:
                if exc.status.code == 410:
                    version = None
                if stop.is_set():
                    return
                time.sleep(0.2)
            except Exception:
                if stop.is_set():
                    return
                time.sleep(0.2)

    thread = threading.Thread(target=loop, name="pod-watch", daemon=True)
    thread.start()
    started.wait(timeout=30)
    try:
        yield observed
    finally:
        stop.set()
        client.close()
