"""Shared fixtures: one real local cluster (control plane, node agent, Postgres) and one
standalone Postgres per test run, shared by all workers; a fresh namespace or database per
test."""

from __future__ import annotations

import contextlib
import fcntl
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

import httpx2 as httpx
import psycopg
import pytest
from lightkube import ApiError, Client, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, ServiceAccount

from drover_localcluster.cluster import LocalCluster
from drover_localcluster.postgres import Postgres
from drover_localcluster.processes import free_port

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
    detail: Callable[[], object] | None = None,
) -> T:
    """Poll `condition()` until it returns something truthy; the timeout only stops a hung
    test, it asserts nothing about speed. On a timeout, `detail()` says where things stood."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            seen = f"; {detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{seen}")
        time.sleep(interval)


# -- resources shared by every pytest-xdist worker of one run ----------------------------------
#
# One cluster and one Postgres per `pytest` run, however many workers it has: the first worker
# that needs one starts it (under a file lock), the others attach, and the controlling process
# stops everything when the run ends. Tests isolate themselves with their own namespace and
# database, so they can share both.

_RUN_DIR = "DROVER_TEST_RUN_DIR"


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller (or a run without workers)
        # Not under pytest's tmp dir: that is private (0700) and Postgres runs as its own user.
        run_dir = Path(tempfile.mkdtemp(prefix="drover-test-run-"))
        run_dir.chmod(0o755)
        os.environ[_RUN_DIR] = str(run_dir)  # inherited by the workers it starts


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The slowest files first: with one file per worker at a time, a long file that starts
    # last would run alone at the end and set the suite's wall time.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput") or _RUN_DIR not in os.environ:
        return
    run_dir = Path(os.environ.pop(_RUN_DIR))
    cluster_file = run_dir / "cluster"
    if cluster_file.exists():
        directory = Path(cluster_file.read_text())
        LocalCluster(directory).down()
        if exitstatus not in (0, 5):
            _keep_logs(session.config, directory)
        shutil.rmtree(directory, ignore_errors=True)
    postgres_file = run_dir / "postgres"
    if postgres_file.exists():
        where, port = postgres_file.read_text().split()
        Postgres(Path(where), int(port)).stop(mode="immediate")
        shutil.rmtree(where, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)


@contextlib.contextmanager
def _shared(name: str) -> Iterator[Path]:
    """The run's record of resource `name` (a file), held exclusively."""
    run_dir = Path(os.environ[_RUN_DIR])
    with (run_dir / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield run_dir / name


def private_directory(prefix: str) -> Path:
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    directory.chmod(0o755)
    return directory


@pytest.fixture(scope="session")
def cluster() -> Iterator[E2ECluster]:
    with _shared("cluster") as record:
        if record.exists():
            local = LocalCluster(Path(record.read_text()))
        else:
            local = LocalCluster(private_directory("drover-test-cluster-"))
            local.up()
            record.write_text(str(local.directory))
    # lightkube's default 10 s read timeout is shorter than a list of hundreds of TaskRuns can
    # take while a 2-core machine runs four test workers; a slow answer is not a failure here.
    client = Client(
        KubeConfig.from_file(str(local.kubeconfig)),
        field_manager="drover-tests",
        timeout=httpx.Timeout(60),
    )
    try:
        yield E2ECluster(local, client)
    finally:
        client.close()


@pytest.fixture(scope="session")
def postgres() -> Postgres:
    """A Postgres server of the run's own, without any control plane: the store's tier."""
    with _shared("postgres") as record:
        if record.exists():
            directory, port = record.read_text().split()
            return Postgres(Path(directory), int(port))
        server = Postgres(private_directory("drover-test-postgres-"), free_port())
        server.start(marker=f"drover-tests-{os.getpid()}")
        record.write_text(f"{server.directory} {server.port}")
        return server


def fresh_database(server: Postgres, prefix: str = "drover") -> Iterator[str]:
    """A new database on `server` for one test (its DSN); dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = server.admin_dsn()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield server.admin_dsn(name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_database(postgres: Postgres) -> Iterator[str]:
    """A fresh database on the run's own Postgres (no cluster needed)."""
    yield from fresh_database(postgres)


def _keep_logs(config: pytest.Config, directory: Path) -> None:
    """After failures: copy the cluster's logs somewhere that outlives the run, and show the
    node agent's last lines (CI prints nothing else of them)."""
    target = Path(os.environ.get("DROVER_TEST_LOGS", "/tmp/drover-test-logs"))
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(directory / "logs", target)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
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
