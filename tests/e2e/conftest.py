"""Fixtures for end-to-end tests of the operator."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest

from drover_localcluster.images.build import Published, ensure_images
from tests.conftest import REPO_ROOT, E2ECluster
from tests.e2e.operator_support import OperatorProcess


@pytest.fixture(scope="session")
def drover_crds(cluster: E2ECluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/tasks.drover.dev",
        "crd/taskruns.drover.dev",
        "--timeout=60s",
    )


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
