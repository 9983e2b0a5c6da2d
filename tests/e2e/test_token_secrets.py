"""Attempt token Secrets on the real API server: the operator only ever creates them, under
names nobody else can know, so a Secret it did not create for that attempt is never modified
nor given an owner (and so never garbage-collected with a run); a crash between creating the
Secret and the pod is survived with `create` rights alone."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod, Secret

from drover.protocol.names import LABEL_RUN_UID
from drover_operator.converge.pods import PodConverger
from drover_operator.domain.tokens import SIGNING_KEY_NAME, attempt_token, token_secret_name
from drover_operator.engine.policy import LifecyclePolicy
from drover_operator.kube import TaskRunResource
from drover_operator.settings import load
from drover_operator.store import Store
from drover_operator.store.migrate import migrate
from drover_operator.store.runs import NewRun
from tests.conftest import E2ECluster, wait_for
from tests.e2e.identities import async_client_as, grant, rule, service_account
from tests.e2e.operator_support import OperatorProcess, run, task, wait_phase

pytestmark = pytest.mark.e2e


def foreign_secret(cluster: E2ECluster, namespace: str, name: str) -> dict[str, Any]:
    """A Secret someone else owns, named as an attempt's token Secret might be."""
    created = cluster.client.create(
        Secret(
            metadata=ObjectMeta(name=name, namespace=namespace, labels={"owner": "someone"}),
            stringData={"token": "not drover's", "other": "kept"},
        )
    )
    return snapshot(created)


def snapshot(secret: Secret) -> dict[str, Any]:
    meta = secret.metadata
    assert meta is not None
    return {
        "resourceVersion": meta.resourceVersion,
        "uid": meta.uid,
        "labels": meta.labels,
        "ownerReferences": meta.ownerReferences,
        "data": secret.data,
    }


def current(cluster: E2ECluster, namespace: str, name: str) -> dict[str, Any]:
    return snapshot(cluster.client.get(Secret, name, namespace=namespace))


def token_secrets_of(cluster: E2ECluster, namespace: str, uid: str) -> list[str]:
    found = cluster.client.list(Secret, namespace=namespace, labels={LABEL_RUN_UID: uid})
    return [s.metadata.name for s in found if s.metadata and s.metadata.name]


def test_a_secret_with_the_old_token_name_is_never_modified_nor_collected(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    # Before this fix the operator force-applied `<pod>-token`, took it over and had it
    # garbage-collected with the run. Both shapes a guess might take are here.
    names = ["hello-1-a1-token", "drover-token-hello-1-a1"]
    before = {name: foreign_secret(cluster, namespace, name) for name in names}
    task(
        c,
        namespace,
        "hello",
        {"image": "busybox", "entrypoint": "tests.e2e.sdk_tasks:greets"},
    )
    uid = run(c, namespace, "hello-1", "hello", payload={"name": "ada", "times": 1})
    st = wait_phase(c, namespace, "hello-1", "Succeeded", "Failed")
    assert st["phase"] == "Succeeded" and st["output"] == "hello ada", st
    ours = token_secrets_of(cluster, namespace, uid)
    assert len(ours) == 1 and ours[0].startswith("drover-token-hello-1-a1-"), ours
    assert {name: current(cluster, namespace, name) for name in names} == before

    # Deleting the run collects its own token Secret and pod (the garbage collector ran for
    # this owner; on a fresh cluster it first has to discover the CRD) and nothing else.
    c.delete(TaskRunResource, "hello-1", namespace=namespace)
    wait_for(
        lambda: (
            not token_secrets_of(cluster, namespace, uid)
            and not list(c.list(Pod, namespace=namespace, labels={LABEL_RUN_UID: uid}))
        ),
        timeout=240,
        interval=0.5,
        what="the run's token Secret and pod collected",
    )
    assert {name: current(cluster, namespace, name) for name in names} == before


def test_token_secrets_need_only_create_and_survive_a_crash_before_the_pod(
    cluster: E2ECluster, namespace: str, drover_crds: None, database: str, tmp_path: Path
) -> None:
    """The converger with exactly the chart's rights on Secrets (create), refused the pod the
    first time as a crash would stop it: the next pass finds its Secret already there
    (AlreadyExists), takes it as its own without reading it, and creates the pod."""
    c = cluster.client
    bearer = service_account(
        cluster,
        namespace,
        "converger",
        [rule("", ["secrets"], ["create"]), rule("", ["pods"], ["get"])],
    )
    for verb in ("get", "patch", "update", "delete", "list"):
        can = cluster.kubectl(
            "auth", "can-i", verb, "secrets", "-n", namespace,
            "--as", f"system:serviceaccount:{namespace}:converger", check=False,
        )  # fmt: skip
        assert can.stdout.strip() == "no", verb
    spec = {"image": "busybox", "entrypoint": "tests.e2e.sdk_tasks:greets"}
    task(c, namespace, "hello", spec)
    uid = run(c, namespace, "hello-1", "hello", payload={"name": "ada"})
    old_name = foreign_secret(cluster, namespace, "hello-1-a1-token")

    async def scenario() -> tuple[bytes, int, int, str | None]:
        await migrate(database)
        store = await Store.open(database, 2)
        client = async_client_as(cluster, bearer, tmp_path / "kubeconfig")
        try:
            key = await store.keys.get_or_create(SIGNING_KEY_NAME)
            await store.tasks.upsert(namespace, "hello", str(uuid.uuid4()), 1, spec, None)
            await store.runs.record(
                NewRun(
                    id=uid,
                    namespace=namespace,
                    name="hello-1",
                    task="hello",
                    generation=1,
                    created_at=dt.datetime.now(dt.UTC),
                    payload={"name": "ada"},
                )
            )
            policy = LifecyclePolicy(dt.timedelta(minutes=10), key)
            assert len(await store.admission.admit(namespace, "hello", policy)) == 1
            settings = load({"DROVER_DATABASE_URL": database})
            pods = PodConverger(settings, store, client, key)
            first = len(await pods.create())  # the Secret is created, the pod refused
            name = token_secret_name(key, uid, 1, "hello-1-a1")
            version = current(cluster, namespace, name)["resourceVersion"]
            grant(cluster, namespace, "converger", [rule("", ["pods"], ["create"])], role="pods")
            second = len(await pods.create())
            return key, first, second, version
        finally:
            await client.close()
            await store.close()

    key, first, second, version = asyncio.run(scenario())
    assert (first, second) == (0, 1)
    name = token_secret_name(key, uid, 1, "hello-1-a1")
    secret = c.get(Secret, name, namespace=namespace)
    assert secret.data is not None and secret.metadata is not None
    assert base64.b64decode(secret.data["token"]).decode() == attempt_token(key, uid, 1)
    assert [o.uid for o in secret.metadata.ownerReferences or []] == [uid]
    # Created in the first pass; the second pass found it and changed nothing.
    assert secret.metadata.resourceVersion == version
    pod = c.get(Pod, "hello-1-a1", namespace=namespace)
    assert pod.spec is not None
    env = {e.name: e for e in pod.spec.containers[0].env or []}
    reference = env["DROVER_TOKEN"].valueFrom
    assert reference is not None and reference.secretKeyRef is not None
    assert reference.secretKeyRef.name == name
    assert current(cluster, namespace, "hello-1-a1-token") == old_name
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT pod_created FROM drover_attempts WHERE run_id = %s", (uid,)
        ).fetchone()
    assert row == (True,)
    c.delete(Pod, "hello-1-a1", namespace=namespace, grace_period=0)
