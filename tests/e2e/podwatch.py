"""An independent observer of pods: the test's own watch on a namespace, recording when each
pod appeared and when it stopped running (terminal phase or deleted). Tests judge "no pod
while waiting" and "never two at once" from it, not from Drover's records."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from lightkube import Client, KubeConfig
from lightkube.resources.core_v1 import Pod

from tests.conftest import E2ECluster


@dataclass
class PodLife:
    name: str
    labels: dict[str, str]
    seen_at: float
    #: When it was first seen finished (Succeeded/Failed) or deleted; None while it lives.
    ended_at: float | None = None


@dataclass
class PodWatch:
    pods: dict[str, PodLife] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, pod: Pod) -> None:
        assert pod.metadata is not None and pod.metadata.name is not None
        name, now = pod.metadata.name, time.time()
        phase = pod.status.phase if pod.status else None
        with self._lock:
            life = self.pods.get(name)
            if life is None:
                life = PodLife(name, dict(pod.metadata.labels or {}), now)
                self.pods[name] = life
            if life.ended_at is None and (kind == "DELETED" or phase in ("Succeeded", "Failed")):
                life.ended_at = now

    def matching(self, **labels: str) -> list[PodLife]:
        with self._lock:
            return [
                p
                for p in self.pods.values()
                if all(p.labels.get(k) == v for k, v in labels.items())
            ]

    def live(self, **labels: str) -> list[PodLife]:
        return [p for p in self.matching(**labels) if p.ended_at is None]


@contextmanager
def watching(cluster: E2ECluster, namespace: str) -> Iterator[PodWatch]:
    """Watch the namespace's pods for the duration of the block."""
    observed = PodWatch()
    client = Client(KubeConfig.from_file(str(cluster.local.kubeconfig)))
    started = threading.Event()
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                for pod in client.list(Pod, namespace=namespace):
                    observed.record("ADDED", pod)
                started.set()
                for kind, pod in client.watch(Pod, namespace=namespace):
                    if stop.is_set():
                        return
                    observed.record(kind, pod)
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
