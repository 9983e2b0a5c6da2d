"""The trigger API as an aggregated API behind the Kubernetes API server: any identity the
cluster accepts (a client certificate, a ServiceAccount) reaches it with a kubeconfig alone
— `kubectl create --raw`, `drover.Client`, `drover.AsyncClient` — and RBAC decides; identity
headers sent to the operator by anyone but the API server are not believed."""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from lightkube.models.rbac_v1 import PolicyRule

import drover
from drover.protocol.names import GROUP
from tests.conftest import E2ECluster
from tests.e2e.aggregated_support import TAKES_TURNS, Served, serve_aggregated_api
from tests.e2e.api_support import taskruns
from tests.e2e.identities import kubeconfig, rule, service_account
from tests.e2e.operator_support import task, wait_phase

pytestmark = [pytest.mark.e2e, TAKES_TURNS]

OK = {"image": "busybox", "command": ["true"]}
SCHEMA = {"type": "object", "required": ["customerId"]}


@pytest.fixture(scope="module")
def served(cluster: E2ECluster, drover_crds: None) -> Iterator[Served]:
    with serve_aggregated_api(cluster) as served:
        yield served


def _raw(cluster: E2ECluster, path: str, body: object) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("create", "--raw", path, "-f", "-", input=json.dumps(body), check=False)


def test_a_certificate_user_triggers_with_kubectl(cluster: E2ECluster, served: Served) -> None:
    ns = served.namespace
    task(cluster.client, ns, "typed", {**OK, "payloadSchema": SCHEMA})
    path = f"/apis/api.drover.dev/v1/namespaces/{ns}/tasks/typed/trigger"
    done = _raw(cluster, path, {"payload": {"customerId": "c1"}, "idempotencyKey": "kubectl"})
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["cached"] is False and run["name"] in taskruns(cluster.client, ns)
    again = json.loads(_raw(cluster, path, {"payload": {"customerId": "c1"},
                                            "idempotencyKey": "kubectl"}).stdout)  # fmt: skip
    assert again["name"] == run["name"] and again["cached"] is True
    refused = _raw(cluster, path, {"payload": {}})
    assert refused.returncode != 0
    assert "payload: 'customerId' is a required property" in refused.stderr
    wait_phase(cluster.client, ns, run["name"], "Succeeded")


def test_discovery_lists_the_group_and_shadows_nothing(cluster: E2ECluster, served: Served) -> None:
    versions = cluster.kubectl("api-versions").stdout.split()
    assert "api.drover.dev/v1" in versions and f"{GROUP}/v1alpha1" in versions
    listed = json.loads(cluster.kubectl("get", "--raw", "/apis/api.drover.dev/v1").stdout)
    assert listed["kind"] == "APIResourceList" and listed["resources"] == []
    # `kubectl get taskruns` still means Drover's CRD.
    got = cluster.kubectl("get", "taskruns", "-n", served.namespace, "-o", "json")
    assert json.loads(got.stdout)["kind"] == "List"


#: What triggering and reading runs through the API server takes: the API server checks the
#: aggregated API's own resources, Drover then checks the verb on `taskruns.drover.dev`.
THROUGH_API_SERVER = rule(
    "api.drover.dev", ["tasks/trigger", "taskruns", "taskruns/cancel"], ["create", "get", "list"]
)
ON_TASKRUNS = rule(GROUP, ["taskruns"], ["create", "get", "list", "patch"])


def test_a_service_account_through_the_api_server(
    cluster: E2ECluster, served: Served, tmp_path: Path
) -> None:
    ns = served.namespace
    task(cluster.client, ns, "hello", OK)

    def account(name: str, *rules: PolicyRule) -> drover.Client:
        token = service_account(cluster, ns, f"{name}-{secrets.token_hex(2)}", list(rules))
        return drover.Client(kubeconfig=str(kubeconfig(cluster, token, tmp_path / name)))

    with account("app", THROUGH_API_SERVER, ON_TASKRUNS) as app:
        handle = app.trigger("hello", {"n": 1}, namespace=ns)
        assert handle.name in taskruns(cluster.client, ns)
        assert app.wait(handle.name, namespace=ns).ok
    # Refused by the API server: no permission on the aggregated API.
    with (
        account("direct-only", ON_TASKRUNS) as direct_only,
        pytest.raises(drover.ForbiddenError) as by_api_server,
    ):
        direct_only.trigger("hello", namespace=ns)
    assert 'cannot create resource "tasks/trigger" in API group "api.drover.dev"' in (
        by_api_server.value.message
    )
    # Refused by Drover: allowed through, but not to create TaskRuns.
    with (
        account("no-runs", THROUGH_API_SERVER) as no_runs,
        pytest.raises(drover.ForbiddenError) as by_drover,
    ):
        no_runs.trigger("hello", namespace=ns)
    assert f'cannot create taskruns.drover.dev in namespace "{ns}"' in by_drover.value.message
    hellos = [
        r for r in taskruns(cluster.client, ns).values() if r["spec"]["taskRef"]["name"] == "hello"
    ]
    assert len(hellos) == 1


def test_the_client(cluster: E2ECluster, served: Served) -> None:
    ns = served.namespace
    task(cluster.client, ns, "orders", {**OK, "payloadSchema": SCHEMA})
    task(cluster.client, ns, "sleepy", {"image": "busybox", "command": ["sleep", "300"]})
    with drover.Client(kubeconfig=str(cluster.kubeconfig), namespace=ns) as client:
        first = client.trigger("orders", {"customerId": "c"}, idempotency_key="sync", tags=["vip"])
        assert not first.cached
        assert client.trigger("orders", {"customerId": "c"}, idempotency_key="sync").cached
        result = client.wait(first.name, timeout=120)
        assert result.ok and result.phase == "Succeeded" and result.unwrap() is None
        with pytest.raises(drover.InvalidRequestError, match="customerId"):
            client.trigger("orders", {})
        with pytest.raises(drover.NotFoundError):
            client.trigger("missing")
        handles = client.batch_trigger(
            "orders", [{"payload": {"customerId": f"b{i}"}} for i in range(3)]
        )
        assert len({h.name for h in handles}) == 3
        sleeper = client.trigger("sleepy")
        wait_phase(cluster.client, ns, sleeper.name, "Running")
        client.cancel(sleeper.name)
        canceled = client.wait(sleeper.name, timeout=120)
        assert canceled.phase == "Canceled" and not canceled.ok
        with pytest.raises(drover.RunFailedError):
            canceled.unwrap()
        replayed = client.replay(first.name, {"customerId": "again"})
        assert taskruns(cluster.client, ns)[replayed.name]["spec"]["payload"] == {
            "customerId": "again"
        }
        assert client.wait(replayed.name, timeout=120).ok  # and recorded in the history
        listed = [r.name for r in client.runs(task="orders", page_size=2)]
        assert first.name in listed and replayed.name in listed
        # Newest first; a replay keeps its original's tags.
        assert [r.name for r in client.runs(tag="vip")] == [replayed.name, first.name]
        with pytest.raises(drover.WaitTimeout):
            client.wait(client.trigger("sleepy").name, timeout=0.5)


def test_the_async_client(cluster: E2ECluster, served: Served) -> None:
    ns = served.namespace
    task(cluster.client, ns, "quick", OK)

    async def scenario() -> tuple[bool, list[str], str]:
        async with drover.AsyncClient(kubeconfig=str(cluster.kubeconfig), namespace=ns) as c:
            handles = await asyncio.gather(*(c.trigger("quick", {"i": i}) for i in range(3)))
            results = await asyncio.gather(*(c.wait(h.name, timeout=120) for h in handles))
            names = [r.name async for r in c.runs(task="quick")]
            run = await c.get(handles[0].name)
            return all(r.ok for r in results), names, run.phase

    ok, names, phase = asyncio.run(scenario())
    assert ok and phase == "Succeeded" and len(names) >= 3


def test_identity_headers_are_believed_from_the_api_server_only(
    cluster: E2ECluster, served: Served
) -> None:
    ns = served.namespace
    url = f"https://127.0.0.1:{served.operator.tls_port}/apis/api.drover.dev/v1/namespaces/{ns}/taskruns"
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    admin = config["users"][0]["user"]
    forged = {"X-Remote-User": "system:admin", "X-Remote-Group": "system:masters"}

    def get(client_cert: bool) -> int:
        context = ssl.create_default_context(
            cafile=config["clusters"][0]["cluster"]["certificate-authority"]
        )
        if client_cert:  # a certificate the cluster trusts, but not the front proxy's
            context.load_cert_chain(admin["client-certificate"], admin["client-key"])
        request = urllib.request.Request(url, headers=forged)
        try:
            with urllib.request.urlopen(request, context=context, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    assert get(client_cert=False) == 401
    assert get(client_cert=True) == 401
