"""Fixtures for end-to-end tests of the operator."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import psycopg
import pytest

from drover_localcluster.images.build import Published, ensure_images
from tests.conftest import REPO_ROOT, E2ECluster, wait_for
from tests.e2e.operator_support import OperatorProcess


@pytest.fixture(scope="session")
def drover_crds(cluster: E2ECluster) -> None:
    """The CRDs and the policy shipped with them, applied and in force."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
    cluster.local.crds_established("tasks.drover.dev", "taskruns.drover.dev")
    _wait_payload_policy(cluster)


def _wait_payload_policy(cluster: E2ECluster) -> None:
    """Until the API server enforces the payload policy (it loads policies asynchronously):
    a server-side dry run of a payload change to a probe TaskRun is refused."""
    namespace = f"drover-policy-probe-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", namespace)
    try:
        probe = {
            "apiVersion": "drover.dev/v1alpha1",
            "kind": "TaskRun",
            "metadata": {"name": "probe", "namespace": namespace},
            "spec": {"taskRef": {"name": "probe"}, "payload": 1},
        }
        cluster.kubectl("create", "-f", "-", input=json.dumps(probe))
        change = json.dumps({"spec": {"payload": 2}})

        def refused() -> bool:
            proc = cluster.kubectl(
                "patch", "-n", namespace, "taskrun", "probe", "--dry-run=server",
                "--type=merge", "-p", change, check=False,
            )  # fmt: skip
            return proc.returncode != 0 and "immutable" in proc.stderr

        wait_for(refused, interval=0.2, what="the TaskRun payload policy in force")
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")


@pytest.fixture(scope="session")
def images() -> Published:
    """The images `make images` builds (cached; built here if missing), in the store the
    node agent runs pods' images from: pods with these images run inside them."""
    return ensure_images(REPO_ROOT)


@pytest.fixture
def database(cluster: E2ECluster) -> Iterator[str]:
    """A fresh database, so each test's operator sees only its own runs."""
    name = f"drover_{secrets.token_hex(4)}"
    admin = cluster.local.postgres.admin_dsn()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield cluster.local.postgres.admin_dsn(name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def operator(
    cluster: E2ECluster, namespace: str, database: str, drover_crds: None
) -> Iterator[OperatorProcess]:
    log = cluster.local.directory / "logs" / f"operator-{namespace}.log"
    process = OperatorProcess(cluster, namespace, database, log).start()
    yield process
    process.stop()
    print(f"--- operator log ({log}) ---\n{process.log_tail()}")
