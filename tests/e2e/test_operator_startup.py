"""An operator is never silently idle: run as documented (without `--standalone`) it creates
the peering object it needs, falls back to standalone with a warning where kopf's peering
CRDs are missing, or exits saying what to do. Each case processes (or refuses) for real."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from lightkube import Client, KubeConfig
from lightkube.generic_resource import create_namespaced_resource

from drover_localcluster.cluster import LocalCluster
from tests.conftest import REPO_ROOT, E2ECluster, private_directory
from tests.e2e.identities import kubeconfig, rule, service_account
from tests.e2e.operator_support import OperatorProcess, run, task, wait_phase

pytestmark = pytest.mark.e2e

KopfPeering = create_namespaced_resource("kopf.dev", "v1", "KopfPeering", "kopfpeerings")
HELLO = {"image": "busybox", "command": ["python", "-c", "print('hello')"]}


def _operator(cluster: E2ECluster, namespace: str, dsn: str, name: str) -> OperatorProcess:
    log = cluster.local.directory / "logs" / f"operator-{namespace}-{name}.log"
    return OperatorProcess(cluster, namespace, dsn, log)


def test_a_missing_peering_object_is_created(
    cluster: E2ECluster, namespace: str, database: str, drover_crds: None
) -> None:
    peering = f"drover-{secrets.token_hex(3)}"
    operator = _operator(cluster, namespace, database, "peering")
    operator.start("--peering", peering, standalone=False)
    try:
        found = cluster.client.get(KopfPeering, peering, namespace=namespace)
        assert found.metadata is not None and found.metadata.name == peering
        task(cluster.client, namespace, "hello", HELLO)
        run(cluster.client, namespace, "hello-1", "hello")
        wait_phase(cluster.client, namespace, "hello-1", "Succeeded")
        assert f"created the peering object {peering}" in operator.log_tail(200)
    finally:
        operator.stop()


def test_a_peering_object_it_may_not_create_stops_it_with_what_to_do(
    cluster: E2ECluster, namespace: str, database: str, drover_crds: None, tmp_path: Path
) -> None:
    # May look for peering objects, not create one: it can neither peer nor run.
    bearer = service_account(
        cluster, namespace, "limited", [rule("kopf.dev", ["kopfpeerings"], ["list", "watch"])]
    )
    operator = _operator(cluster, namespace, database, "forbidden")
    operator.start(
        "--peering",
        f"drover-{secrets.token_hex(3)}",
        standalone=False,
        wait=False,
        extra_env={"KUBECONFIG": str(kubeconfig(cluster, bearer, tmp_path / "kubeconfig"))},
    )
    assert operator.wait_exit() == 1
    log = operator.log_tail(40)
    assert "does not exist and could not be created" in log, log
    assert "kopfpeerings.kopf.dev" in log and "--standalone" in log


@pytest.fixture
def bare_cluster() -> Iterator[E2ECluster]:
    """A cluster of its own with Drover's CRDs and not kopf's (the peering CRDs), as a
    newcomer's cluster may be."""
    local = LocalCluster(private_directory("drover-test-bare-"))
    local.up()
    client = Client(KubeConfig.from_file(str(local.kubeconfig)), field_manager="drover-tests")
    bare = E2ECluster(local, client)
    try:
        for crd in ("drover.dev_tasks.yaml", "drover.dev_taskruns.yaml"):
            bare.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds" / crd))
        local.crds_established()
        yield bare
    finally:
        client.close()
        local.down()


def test_without_peering_crds_it_runs_standalone_and_says_so(bare_cluster: E2ECluster) -> None:
    c = bare_cluster.client
    namespace = "default"
    # The cluster's own Postgres and database, gone with the cluster.
    operator = _operator(bare_cluster, namespace, bare_cluster.local.postgres.dsn, "no-crds")
    operator.start(standalone=False)
    try:
        assert "peering CRDs are not installed: running standalone" in operator.log_tail(100)
        task(c, namespace, "hello", HELLO)
        run(c, namespace, "hello-1", "hello")
        wait_phase(c, namespace, "hello-1", "Succeeded")
    finally:
        operator.stop()
