"""An operator registered as the cluster's aggregated API `api.drover.dev` for a test module.

The APIService `v1.api.drover.dev` is cluster-wide and points at one operator, so modules
that register it take turns: each holds a lock shared by every pytest-xdist worker of the
run while it is registered. Their tests' setup may wait out the others' whole modules, so
they mark themselves with `TAKES_TURNS`: a hang-stop that leaves room for the wait.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apiregistration_v1 import APIService
from lightkube.resources.core_v1 import Namespace

from tests.conftest import E2ECluster, wait_for
from tests.e2e.operator_support import OperatorProcess

APISERVICE = "v1.api.drover.dev"

# The default hang-stop (600 s) with room for the other modules' turns.
TAKES_TURNS = pytest.mark.timeout(2400)


@dataclass
class Served:
    """An operator registered as the cluster's api.drover.dev, and the namespaces it serves
    (the first is `namespace`)."""

    operator: OperatorProcess
    namespaces: list[str]

    @property
    def namespace(self) -> str:
        return self.namespaces[0]


@contextlib.contextmanager
def _turn() -> Iterator[None]:
    """Hold the run's APIService lock (every worker of the run shares it)."""
    run_dir = Path(os.environ.get("DROVER_TEST_RUN_DIR", "/tmp"))
    with (run_dir / "apiservice.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def serve_aggregated_api(
    cluster: E2ECluster, prefix: str = "aggregated", namespaces: int = 1
) -> Iterator[Served]:
    """Fresh namespaces and database, an operator watching them, registered as the APIService
    (until the block ends)."""
    names = [f"{prefix}-{i}-{secrets.token_hex(3)}" for i in range(namespaces)]
    database = f"drover_{secrets.token_hex(4)}"
    admin = cluster.local.postgres.admin_dsn()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    for name in names:
        cluster.client.create(Namespace(metadata=ObjectMeta(name=name)))
    log = cluster.local.directory / "logs" / f"operator-{names[0]}.log"
    operator = OperatorProcess(cluster, names[0], cluster.local.postgres.admin_dsn(database), log)
    manifests = "\n---\n".join(
        json.dumps(m)
        for m in cluster.local.aggregated_api(
            "api.drover.dev", "v1", operator.tls_port, "drover-api"
        )
    )

    def available() -> bool:
        found = cluster.client.get(APIService, APISERVICE)
        conditions = (found.status.conditions if found.status else None) or []
        return any(c.type == "Available" and c.status == "True" for c in conditions)

    try:
        operator.start(*(arg for name in names[1:] for arg in ("--namespace", name)))
        with _turn():
            try:
                cluster.kubectl("apply", "-f", "-", input=manifests)
                wait_for(available, timeout=120, what="the APIService Available")
                yield Served(operator, names)
            finally:
                cluster.kubectl(
                    "delete", "--ignore-not-found", "-f", "-", input=manifests, check=False
                )
    finally:
        operator.stop()
        for name in names:
            cluster.client.delete(Namespace, name)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
