"""Shared fixtures: one real local cluster (control plane, node agent, Postgres) per session,
a fresh namespace per test."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from lightkube import ApiError, Client, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, ServiceAccount

from drover_localcluster.cluster import LocalCluster

REPO_ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


@dataclass
class E2ECluster:
    """The session's cluster, as tests use it."""

    local: LocalCluster
    client: Client

    @property
    def kubeconfig(self) -> Path:
        return self.local.kubeconfig

    @property
    def env(self) -> dict[str, str]:
        env = self.local.env()
        prepend = env.pop("PATH_PREPEND")
        return {**os.environ, **env, "PATH": f"{prepend}:{os.environ.get('PATH', '')}"}

    @property
    def kubectl_path(self) -> Path:
        return self.local.binaries.kubectl

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.kubectl_path), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc


def wait_for(
    condition: Callable[[], T | None],
    *,
    timeout: float = 60,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll `condition()` until it returns something truthy; the timeout only stops a hung
    test, it asserts nothing about speed."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[E2ECluster]:
    # Not under pytest's tmp dir: that is private (0700) and Postgres runs as its own user.
    directory = Path(tempfile.mkdtemp(prefix="drover-test-cluster-"))
    directory.chmod(0o755)
    local = LocalCluster(directory)
    local.up()
    client = Client(KubeConfig.from_file(str(local.kubeconfig)), field_manager="drover-tests")
    try:
        yield E2ECluster(local, client)
    finally:
        client.close()
        local.down()
        if request.session.testsfailed:
            _keep_logs(request, directory)
        shutil.rmtree(directory, ignore_errors=True)


def _keep_logs(request: pytest.FixtureRequest, directory: Path) -> None:
    """After failures: copy the cluster's logs somewhere that outlives the run, and show the
    node agent's last lines (CI prints nothing else of them)."""
    target = Path(os.environ.get("DROVER_TEST_LOGS", "/tmp/drover-test-logs"))
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(directory / "logs", target)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    reporter.write_line(f"cluster logs kept in {target}")
    for log in sorted(target.glob("node-agent-*.log")):
        tail = log.read_text(errors="replace").splitlines()[-30:]
        reporter.write_line(f"--- {log.name} (last lines) ---\n" + "\n".join(tail))


@pytest.fixture
def namespace(cluster: E2ECluster, request: pytest.FixtureRequest) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{base}-{secrets.token_hex(3)}"
    cluster.client.create(Namespace(metadata=ObjectMeta(name=name)))

    def default_service_account() -> bool:
        try:
            cluster.client.get(ServiceAccount, "default", namespace=name)
        except ApiError:
            return False
        return True

    # Pods are refused until the controller-manager has made the namespace's default SA.
    wait_for(default_service_account, what=f"default ServiceAccount in {name}")
    yield name
    cluster.client.delete(Namespace, name)
