"""Running the operator in end-to-end tests, and reading Drover resources."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, cast

from lightkube import ApiError, Client
from lightkube.generic_resource import GenericNamespacedResource
from lightkube.models.meta_v1 import ObjectMeta

from drover.protocol.phases import FINISHED_PHASES
from drover_localcluster.processes import free_port
from drover_operator.kube import TaskResource, TaskRunResource
from tests.conftest import E2ECluster, wait_for

FINISHED = tuple(FINISHED_PHASES)


class OperatorProcess:
    """`drover-operator run` as a subprocess watching one namespace, with its own database."""

    def __init__(self, cluster: E2ECluster, namespace: str, dsn: str, log: Path) -> None:
        self.cluster, self.namespace, self.dsn, self.log = cluster, namespace, dsn, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.api_port = free_port()
        self.tls_port = free_port()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(
        self,
        *extra: str,
        extra_env: dict[str, str] | None = None,
        standalone: bool = True,
        wait: bool = True,
    ) -> OperatorProcess:
        """Start it; with `wait`, return once its API answers /readyz (and fail at once,
        with its log, if it exits first)."""
        env = {
            **self.cluster.env,
            "DROVER_DATABASE_URL": self.dsn,
            "DROVER_TICK_SECONDS": "0.5",
            "DROVER_API_HOST": "127.0.0.1",
            "DROVER_API_PORT": str(self.api_port),
            "DROVER_API_URL": self.api_url,
            # HTTPS (the aggregated API) with the cluster's certificate, on a port of its own.
            "DROVER_API_TLS_PORT": str(self.tls_port),
            **(extra_env or {}),
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "drover_operator",
                    "run",
                    *(["--standalone"] if standalone else []),
                    "--namespace",
                    self.namespace,
                    *extra,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the operator exited with {self.proc.returncode} before it was ready:\n"
                    f"{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.api_url}/readyz", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_for(ready, timeout=60, what="the operator's /readyz")

    def wait_exit(self, timeout: float = 60) -> int:
        """Its exit code, once it exited by itself."""
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, as a crashed or OOM-killed pod."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def task(client: Client, namespace: str, name: str, spec: dict[str, Any]) -> None:
    client.create(TaskResource(metadata=ObjectMeta(name=name, namespace=namespace), spec=spec))


def run(client: Client, namespace: str, name: str, task_name: str, **spec: Any) -> str:
    """Create a TaskRun; returns its UID."""
    created = client.create(
        TaskRunResource(
            metadata=ObjectMeta(name=name, namespace=namespace),
            spec={"taskRef": {"name": task_name}, **spec},
        )
    )
    assert created.metadata is not None and created.metadata.uid is not None
    return str(created.metadata.uid)


def get_run(client: Client, namespace: str, name: str) -> GenericNamespacedResource:
    return client.get(TaskRunResource, name, namespace=namespace)


def status_of(resource: GenericNamespacedResource) -> dict[str, Any]:
    return cast(dict[str, Any], resource.status or {})


def status(client: Client, namespace: str, name: str) -> dict[str, Any]:
    try:
        return status_of(get_run(client, namespace, name))
    except ApiError:
        return {}


def wait_phase(
    client: Client, namespace: str, name: str, *phases: str, timeout: float = 120
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        current = status(client, namespace, name)
        return current if current.get("phase") in phases else None

    def stopped() -> str:
        # Where the run stopped: a hang and a run that ended otherwise read differently.
        last = status(client, namespace, name)
        seen = {k: last.get(k) for k in ("phase", "reason", "message", "attempt") if k in last}
        return f"its status was {seen or 'empty'}"

    return wait_for(reached, timeout=timeout, what=f"TaskRun {name} in {phases}", detail=stopped)


def wait_all(
    client: Client, namespace: str, names: list[str], *phases: str, timeout: float = 300
) -> dict[str, dict[str, Any]]:
    def reached() -> dict[str, dict[str, Any]] | None:
        items = client.list(TaskRunResource, namespace=namespace)
        by_name = {i.metadata.name: status_of(i) for i in items if i.metadata}
        done = all(by_name.get(n, {}).get("phase") in phases for n in names)
        return {n: by_name[n] for n in names} if done else None

    return wait_for(reached, timeout=timeout, interval=0.5, what=f"{len(names)} runs {phases}")


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def max_overlap(statuses: list[dict[str, Any]]) -> int:
    """The most attempts running at one moment, from their status start and finish times."""
    edges: list[tuple[dt.datetime, int]] = []
    for st in statuses:
        for attempt in st.get("attempts") or []:
            if attempt.get("startTime") and attempt.get("finishTime"):
                edges.append((parse_time(attempt["startTime"]), 1))
                edges.append((parse_time(attempt["finishTime"]), -1))
    current = peak = 0
    for _, delta in sorted(edges, key=lambda e: (e[0], e[1])):  # ends before starts on ties
        current += delta
        peak = max(peak, current)
    return peak
