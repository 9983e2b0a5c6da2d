"""The converger against the real API server: what it does when Kubernetes refuses it. Events
refused for missing RBAC are kept and posted once allowed (not silently dropped); a finalizer
patch that was refused is retried; a Task's Ready condition keeps its transition time across
an operator restart."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
from lightkube.resources.core_v1 import Event
from lightkube.types import PatchType

from drover.protocol.names import FINALIZER
from drover_operator.converge.events import EventPoster
from drover_operator.converge.finalizers import Finalizers
from drover_operator.engine.runs import Recent
from drover_operator.kube import TaskResource, TaskRunResource
from drover_operator.store import Store
from drover_operator.store.migrate import migrate
from drover_operator.store.runs import NewRun
from drover_operator.telemetry import metrics
from tests.conftest import E2ECluster, wait_for
from tests.e2e.identities import async_client_as, grant, rule, service_account
from tests.e2e.operator_support import (
    OperatorProcess,
    parse_time,
    run,
    status_of,
    task,
    wait_phase,
)

pytestmark = pytest.mark.e2e


def _not_posted(code: str) -> float:
    value: float = metrics.EVENTS_NOT_POSTED.labels(code)._value.get()
    return value


def test_events_refused_for_missing_rbac_are_kept_until_allowed(
    cluster: E2ECluster, namespace: str, pg_database: str, tmp_path: Path
) -> None:
    bearer = service_account(cluster, namespace, "no-events")
    run_id = str(uuid.uuid4())

    async def scenario() -> tuple[int, int]:
        await migrate(pg_database)
        store = await Store.open(pg_database, 2)
        client = async_client_as(cluster, bearer, tmp_path / "kubeconfig")
        try:
            await store.runs.record(
                NewRun(
                    id=run_id,
                    namespace=namespace,
                    name="r",
                    task="t",
                    generation=1,
                    created_at=dt.datetime.now(dt.UTC),
                    # Refused at once: a Warning, which is posted (Queued is history only).
                    failed=("InvalidPayload", "payload.n: required"),
                )
            )
            poster = EventPoster(store, client, 10)
            refused_before = _not_posted("403")
            await poster.post()
            kept = len(await store.outbox.unposted(10))
            assert _not_posted("403") == refused_before + 1
            grant(cluster, namespace, "no-events", [rule("", ["events"], ["create"])])
            await poster.post()
            return kept, len(await store.outbox.unposted(10))
        finally:
            await client.close()
            await store.close()

    kept, left = asyncio.run(scenario())
    assert (kept, left) == (1, 0)
    events = [
        e for e in cluster.client.list(Event, namespace=namespace) if e.involvedObject.uid == run_id
    ]
    assert [e.reason for e in events] == ["InvalidPayload"]


def test_a_refused_finalizer_removal_is_retried(
    cluster: E2ECluster, namespace: str, drover_crds: None, tmp_path: Path
) -> None:
    """TaskRuns from earlier versions carry the finalizer: its removal, once refused, is
    retried until it succeeds (a deleted TaskRun is never left stuck)."""
    bearer = service_account(
        cluster, namespace, "reader", [rule("drover.dev", ["taskruns"], ["get"])]
    )
    run(cluster.client, namespace, "r", "t")
    cluster.client.patch(
        TaskRunResource,
        "r",
        {"metadata": {"finalizers": [FINALIZER]}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    found = cluster.client.get(TaskRunResource, "r", namespace=namespace)
    body: dict[str, Any] = found.to_dict()  # type: ignore[no-untyped-call]

    async def scenario() -> tuple[int, int]:
        client = async_client_as(cluster, bearer, tmp_path / "kubeconfig")
        try:
            finalizers = Finalizers(client)
            await finalizers.remove(body)  # refused: may not patch
            pending = finalizers.pending
            grant(
                cluster,
                namespace,
                "reader",
                [rule("drover.dev", ["taskruns"], ["patch"])],
                role="patcher",
            )
            await finalizers.retry()
            return pending, finalizers.pending
        finally:
            await client.close()

    assert asyncio.run(scenario()) == (1, 0)
    meta = cluster.client.get(TaskRunResource, "r", namespace=namespace).metadata
    assert meta is not None and FINALIZER not in (meta.finalizers or [])


def test_ready_keeps_its_transition_time_across_a_restart(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    task(c, namespace, "hello", {"image": "busybox", "command": ["sleep", "600"]})

    def ready() -> dict[str, str] | None:
        status = status_of(c.get(TaskResource, "hello", namespace=namespace))
        found = [x for x in status.get("conditions") or [] if x["type"] == "Ready"]
        return found[0] if found else None

    before = wait_for(ready, what="the Task Ready")
    since = parse_time(before["lastTransitionTime"])
    # A new time would differ from the old one only in a later second.
    wait_for(lambda: dt.datetime.now(dt.UTC) - since > dt.timedelta(seconds=1.5), what="a second")
    operator.kill()
    operator.start()
    # Something only the new operator can write: a run that stays active. (A run that ended
    # between two of its status passes would change no count, and an identical status is
    # not written.)
    run(c, namespace, "hello-1", "hello")
    wait_phase(c, namespace, "hello-1", "Running")

    def rewritten() -> bool:
        return status_of(c.get(TaskResource, "hello", namespace=namespace)).get("active") == 1

    wait_for(rewritten, what="the Task status written by the new operator")
    after = ready()
    assert after is not None
    assert after["status"] == before["status"] == "True"
    assert after["lastTransitionTime"] == before["lastTransitionTime"]


def test_the_memory_of_seen_pods_is_bounded() -> None:
    seen = Recent(size=3)
    for key in range(10):
        seen.add(key)
    assert len(seen) == 3 and 9 in seen and 0 not in seen
    seen.discard(9)
    assert 9 not in seen
