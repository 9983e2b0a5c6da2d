"""The Helm chart, rendered offline: lint, values combinations, schema refusals, RBAC without
wildcards, restricted pod security, and CRDs identical to crds/."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from drover_localcluster.binaries import ensure_helm
from drover_operator.domain.tokens import TOKEN_SECRET_PREFIX

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "helm" / "drover"
DB = "database.url=postgresql://drover:pw@db:5432/drover"


@pytest.fixture(scope="module")
def helm() -> Path:
    return ensure_helm()  # cached after the first build


def _helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=60, check=False
    )


def render(helm: Path, *sets: str, namespace: str = "drover-system") -> list[dict[str, Any]]:
    args = [arg for s in sets for arg in ("--set", s)]
    proc = _helm(helm, "template", "rel", str(CHART), "-n", namespace, *args)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def refusal(helm: Path, *sets: str) -> str:
    args = [arg for s in sets for arg in ("--set", s)]
    proc = _helm(helm, "template", "rel", str(CHART), *args)
    assert proc.returncode != 0, f"accepted: {sets}"
    return proc.stderr


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}s"
    return found[0]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind}s named {name}"
    return found[0]


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return container


def env_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in operator_container(docs)["env"]}


def operator_role(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The operator's ClusterRole (the chart also ships roles for users)."""
    [role] = [
        d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] not in USER_ROLES
    ]
    return role


def rules(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("ClusterRole", "Role"):
            for rule in doc["rules"]:
                yield doc["kind"], rule


def test_helm_lint(helm: Path) -> None:
    proc = _helm(helm, "lint", "--strict", str(CHART), "--set", DB)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_chart_crds_equal_the_generated_ones() -> None:
    ours = {p.name: p.read_text() for p in sorted((REPO_ROOT / "crds").glob("*.yaml"))}
    chart = {p.name: p.read_text() for p in sorted((CHART / "crds").glob("*.yaml"))}
    assert chart == ours, "helm/drover/crds/ differs from crds/: run `make crds`"


def test_default_install_is_cluster_wide(helm: Path) -> None:
    docs = render(helm, DB)
    assert kinds(docs) == sorted(
        [
            "APIService",
            "ClusterKopfPeering",
            "ClusterRole",  # the operator's
            *["ClusterRole"] * len(USER_ROLES),  # drover-task-author, -run-trigger, ...
            "ClusterRoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "RoleBinding",
            "Secret",
            "Secret",
            "Service",
            "ServiceAccount",
        ]
    )
    env = env_of(docs)
    assert env["DROVER_NAMESPACES"] == ""
    assert env["DROVER_API_URL"] == "https://rel-drover.drover-system.svc:8443"
    assert env["DROVER_DATABASE_URL"] == {
        "secretKeyRef": {"name": "rel-drover-database", "key": "url"}
    }
    peering = one(docs, "ClusterKopfPeering")["metadata"]["name"]
    assert env["DROVER_PEERING"] == peering == "drover-system-rel-drover"
    # Cluster-scoped names carry namespace and release: two installs never collide.
    assert operator_role(docs)["metadata"]["name"] == "drover-system-rel-drover"
    secret = named(docs, "Secret", "rel-drover-database")
    assert secret["stringData"]["url"] == DB.split("=", 1)[1]
    container = operator_container(docs)
    assert container["command"] == ["drover-operator", "run"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_operator_pod_security_is_restricted(helm: Path) -> None:
    docs = render(helm, DB)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = operator_container(docs)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in operator_container(docs)["volumeMounts"]


def test_namespaced_mode(helm: Path) -> None:
    docs = render(helm, DB, "operator.namespaces={shop,billing}", "runPods.limitRange.enabled=true")
    assert env_of(docs)["DROVER_NAMESPACES"] == "shop,billing"
    # (Besides the binding in kube-system that reads the front-proxy settings.)
    watched = [d for d in docs if d["metadata"].get("namespace") != "kube-system"]
    for kind in ("Role", "RoleBinding", "KopfPeering", "LimitRange"):
        assert sorted(d["metadata"]["namespace"] for d in watched if d["kind"] == kind) == [
            "billing",
            "shop",
        ], kind
    assert not [d for d in docs if d["kind"] == "ClusterKopfPeering"]
    binding = next(d for d in watched if d["kind"] == "RoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "rel-drover", "namespace": "drover-system"}
    ]
    # The ClusterRole keeps only the cluster-scoped calls: no access to pods or TaskRuns.
    cluster_resources = {r for rule in operator_role(docs)["rules"] for r in rule["resources"]}
    assert cluster_resources == {
        "customresourcedefinitions",
        "tokenreviews",
        "subjectaccessreviews",
        "namespaces",
    }


def test_existing_secret(helm: Path) -> None:
    docs = render(helm, "database.existingSecret=pg", "database.existingSecretKey=dsn")
    # The chart writes no database Secret (only the aggregated API's certificate).
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"] == ["rel-drover-tls"]
    assert env_of(docs)["DROVER_DATABASE_URL"] == {"secretKeyRef": {"name": "pg", "key": "dsn"}}


def test_two_replicas_peer(helm: Path) -> None:
    docs = render(helm, DB, "replicas=2")
    assert one(docs, "Deployment")["spec"]["replicas"] == 2
    assert env_of(docs)["DROVER_STANDALONE"] == "false"
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_bundled_postgres(helm: Path) -> None:
    docs = render(helm, "postgresql.enabled=true", "postgresql.auth.password=secret")
    assert {"StatefulSet", "Service", "Secret"} <= set(kinds(docs))
    secret = named(docs, "Secret", "rel-drover-postgresql")
    assert secret["stringData"]["url"] == (
        "postgresql://drover:secret@rel-drover-postgresql.drover-system.svc:5432/drover"
    )
    assert env_of(docs)["DROVER_DATABASE_URL"] == {
        "secretKeyRef": {"name": "rel-drover-postgresql", "key": "url"}
    }


def test_local_cluster_values(helm: Path, tmp_path: Path) -> None:
    """What `make cluster-up` writes: API on loopback, where the node agent's pods reach it."""
    values = tmp_path / "values.yaml"
    values.write_text(
        '{"replicas": 1, "database": {"url": "postgresql://x@127.0.0.1:1/drover"},'
        ' "api": {"host": "127.0.0.1", "port": 41234, "url": "http://127.0.0.1:41234"}}'
    )
    proc = _helm(helm, "template", "drover", str(CHART), "-f", str(values))
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    env = env_of(docs)
    assert env["DROVER_API_URL"] == "http://127.0.0.1:41234"
    assert env["DROVER_API_PORT"] == "41234"


@pytest.mark.parametrize("sets", [(DB,), (DB, "operator.namespaces={a}")])
def test_rbac_has_no_wildcards(helm: Path, sets: tuple[str, ...]) -> None:
    found = list(rules(render(helm, *sets)))
    assert found
    for kind, rule in found:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], f"{kind} rule {rule}"
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
        # The operator creates per-attempt token Secrets; it never reads or changes one.
        if "secrets" in rule["resources"]:
            assert set(rule["verbs"]) == {"create"}


@pytest.mark.parametrize(
    ("sets", "field"),
    [
        ((DB, "replicas=-1"), "replicas"),
        ((DB, "image.pullPolicy=Sometimes"), "pullPolicy"),
        ((DB, "unknownKey=1"), "unknownKey"),
        ((DB, "operator.namespces={a}"), "namespces"),
        ((DB, "operator.namespaces={Not_A_Namespace}"), "namespaces"),
        ((DB, "api.port=70000"), "port"),
        (("database.url=mysql://x",), "url"),
        ((DB, "service.type=Ingress"), "type"),
    ],
)
def test_schema_refuses_bad_values(helm: Path, sets: tuple[str, ...], field: str) -> None:
    message = refusal(helm, *sets)
    assert "values don't meet the specifications of the schema" in message, message
    assert field in message, message


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        ((), "set one of database.url, database.existingSecret or postgresql.enabled"),
        ((DB, "postgresql.enabled=true"), "set only one of database.url"),
        ((DB, "operator.standalone=true", "replicas=2"), "operator.standalone"),
        ((DB, "runPods.limitRange.enabled=true"), "runPods.limitRange.enabled"),
    ],
)
def test_template_refuses_inconsistent_values(
    helm: Path, sets: tuple[str, ...], expected: str
) -> None:
    assert expected in refusal(helm, *sets)


def test_observability_objects_are_off_by_default_and_render_when_enabled(helm: Path) -> None:
    default = kinds(render(helm, DB))
    assert "ServiceMonitor" not in default
    assert all(k != "ConfigMap" for k in default)
    docs = render(
        helm,
        DB,
        "metrics.serviceMonitor.enabled=true",
        "metrics.dashboard.enabled=true",
        "tracing.otlpEndpoint=http://otel:4318",
        "operator.logFormat=json",
    )
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0] == {
        "port": "http",
        "path": "/metrics",
        "interval": "30s",
        "scrapeTimeout": "10s",
    }
    dashboard = one(docs, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["drover.json"])["panels"]
    env = env_of(docs)
    assert env["DROVER_LOG_FORMAT"] == "json"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel:4318"


def test_observability_values_are_checked(helm: Path) -> None:
    assert "logFormat" in refusal(helm, DB, "operator.logFormat=xml")
    assert "otlpEndpoint" in refusal(helm, DB, "tracing.otlpEndpoint=not a url")
    assert "interval" in refusal(helm, DB, "metrics.serviceMonitor.interval=soon")


def test_the_aggregated_api_is_registered_with_its_own_certificate(helm: Path) -> None:
    docs = render(helm, DB)
    service = one(docs, "APIService")
    assert service["metadata"]["name"] == "v1.api.drover.dev"
    assert service["spec"]["service"] == {
        "name": "rel-drover",
        "namespace": "drover-system",
        "port": 8443,
    }
    tls = named(docs, "Secret", "rel-drover-tls")
    assert tls["type"] == "kubernetes.io/tls"
    assert service["spec"]["caBundle"] == tls["data"]["ca.crt"]
    certificate = x509.load_pem_x509_certificate(base64.b64decode(tls["data"]["tls.crt"]))
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    # The name the API server checks when it calls the operator.
    assert "rel-drover.drover-system.svc" in names.value.get_values_for_type(x509.DNSName)
    env = env_of(docs)
    assert env["DROVER_API_TLS_PORT"] == "8443"
    assert env["DROVER_API_TLS_CERT_FILE"] == "/etc/drover/tls/tls.crt"
    ports = {p["name"]: p["port"] for p in named(docs, "Service", "rel-drover")["spec"]["ports"]}
    assert ports == {"http": 8080, "https": 8443}
    reader = one(docs, "RoleBinding")
    assert reader["metadata"]["namespace"] == "kube-system"
    assert reader["roleRef"]["name"] == "extension-apiserver-authentication-reader"
    local = render(helm, DB, "aggregation.externalName=localhost")
    assert named(local, "Service", "rel-drover-aggregated")["spec"]["externalName"] == "localhost"
    assert one(local, "APIService")["spec"]["service"]["name"] == "rel-drover-aggregated"
    off = render(helm, DB, "aggregation.enabled=false")
    assert "APIService" not in kinds(off) and "DROVER_API_TLS_PORT" not in env_of(off)


USER_ROLES = (
    "drover-task-author",
    "drover-run-trigger",
    "drover-viewer",
    "drover-waitpoint-completer",
)
AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"


def cluster_roles(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}


def test_user_roles_are_shipped_and_aggregated(helm: Path) -> None:
    roles = cluster_roles(render(helm, DB))
    assert set(USER_ROLES) <= set(roles)
    aggregated = {
        name: sorted(k.removeprefix(AGGREGATE) for k in roles[name]["metadata"]["labels"]
                     if k.startswith(AGGREGATE))
        for name in USER_ROLES
    }  # fmt: skip
    # Creating Tasks runs pods as any ServiceAccount: never part of `view`.
    assert aggregated == {
        "drover-task-author": ["admin", "edit"],
        "drover-run-trigger": ["admin", "edit"],
        "drover-viewer": ["admin", "edit", "view"],
        "drover-waitpoint-completer": ["admin", "edit"],
    }

    def verbs(role: str, resource: str) -> set[str]:
        return {
            verb
            for rule in roles[role]["rules"]
            if resource in rule["resources"]
            for verb in rule["verbs"]
        }

    writes = {"create", "update", "patch", "delete"}
    assert writes <= verbs("drover-task-author", "tasks")
    assert not verbs("drover-task-author", "taskruns")
    assert writes <= verbs("drover-run-trigger", "taskruns")
    assert verbs("drover-run-trigger", "tasks") == {"get", "list", "watch"}
    for role in USER_ROLES:  # nobody but the operator writes status
        assert not writes & (verbs(role, "tasks/status") | verbs(role, "taskruns/status"))
    for resource in ("tasks", "taskruns"):
        assert verbs("drover-viewer", resource) == {"get", "list", "watch"}
    # The dashboard's way in through the API server; its actions are authorized on drover.dev.
    assert verbs("drover-viewer", "ui") == {"get", "create"}
    # Approving (completing tokens) is its own grant: neither triggering nor viewing gives it.
    assert "update" in verbs("drover-waitpoint-completer", "waitpoints")
    assert "create" in verbs("drover-waitpoint-completer", "waitpoints/complete")
    for role in ("drover-viewer", "drover-run-trigger"):
        assert not {"update", "create"} & (
            verbs(role, "waitpoints") | verbs(role, "waitpoints/complete")
        )
    # Only Drover's groups: the roles grant nothing else (no pods, no Secrets).
    assert {g for r in USER_ROLES for rule in roles[r]["rules"] for g in rule["apiGroups"]} == {
        "drover.dev",
        "api.drover.dev",
    }
    unaggregated = cluster_roles(render(helm, DB, "userRoles.aggregate=false"))
    assert not any(
        k.startswith(AGGREGATE) for r in USER_ROLES for k in unaggregated[r]["metadata"]["labels"]
    )
    assert not set(USER_ROLES) & set(cluster_roles(render(helm, DB, "userRoles.create=false")))


def test_task_policy_is_optional_and_bound_where_the_operator_watches(helm: Path) -> None:
    assert "ValidatingAdmissionPolicy" not in kinds(render(helm, DB))
    docs = render(helm, DB, "taskPolicy.enabled=true", "operator.namespaces={shop,billing}")
    policy = one(docs, "ValidatingAdmissionPolicy")
    binding = one(docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"] == [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["shop", "billing"]}
    ]
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    # The prefix the operator gives token Secrets, as a CEL string.
    assert variables["tokenPrefix"] == f"'{TOKEN_SECRET_PREFIX}'"
    assert json.loads(variables["allowedAccounts"]) == []
    assert "hostPath" not in json.loads(variables["volumeTypes"])
    cluster_wide = render(
        helm,
        DB,
        "taskPolicy.enabled=true",
        "taskPolicy.namespaceSelector.matchLabels.drover=on",
        "taskPolicy.serviceAccountNames={worker,reporter}",
        "taskPolicy.validationActions={Warn,Audit}",
    )
    binding = one(cluster_wide, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["matchResources"]["namespaceSelector"] == {
        "matchLabels": {"drover": "on"}
    }
    assert binding["spec"]["validationActions"] == ["Warn", "Audit"]
    variables = {
        v["name"]: v["expression"]
        for v in one(cluster_wide, "ValidatingAdmissionPolicy")["spec"]["variables"]
    }
    assert json.loads(variables["allowedAccounts"]) == ["worker", "reporter"]


@pytest.mark.parametrize(
    ("sets", "field"),
    [
        (("taskPolicy.volumeTypes={hostPath}",), "volumeTypes"),
        (("taskPolicy.serviceAccountNames={Not An Account}",), "serviceAccountNames"),
        (("taskPolicy.validationActions={Deny,Warn}",), "validationActions"),
        (("taskPolicy.validationActions={Block}",), "validationActions"),
        (("userRoles.create=maybe",), "create"),
    ],
)
def test_schema_refuses_bad_policy_values(helm: Path, sets: tuple[str, ...], field: str) -> None:
    message = refusal(helm, DB, *sets)
    assert "values don't meet the specifications of the schema" in message, message
    assert field in message, message


def test_task_pods_reach_the_api_over_tls_when_the_chart_has_a_certificate(helm: Path) -> None:
    env = env_of(render(helm, DB))
    assert env["DROVER_API_URL"] == "https://rel-drover.drover-system.svc:8443"
    assert env["DROVER_API_CA_FILE"] == "/etc/drover/tls/ca.crt"  # mounted with the cert
    plain = env_of(render(helm, DB, "api.tls=false"))
    assert plain["DROVER_API_URL"] == "http://rel-drover.drover-system.svc:8080"
    assert "DROVER_API_CA_FILE" not in plain
    without = env_of(render(helm, DB, "aggregation.enabled=false"))
    assert without["DROVER_API_URL"].startswith("http://") and "DROVER_API_CA_FILE" not in without
    given = env_of(render(helm, DB, "api.url=https://drover.example.com"))
    assert given["DROVER_API_URL"] == "https://drover.example.com"


def test_a_network_policy_can_restrict_who_reaches_the_api(helm: Path) -> None:
    assert "NetworkPolicy" not in kinds(render(helm, DB))
    docs = render(
        helm,
        DB,
        "networkPolicy.enabled=true",
        "networkPolicy.from[0].ipBlock.cidr=10.0.0.0/24",
    )
    policy = one(docs, "NetworkPolicy")
    [rule] = policy["spec"]["ingress"]
    task_pods, api_server = rule["from"]
    assert task_pods["podSelector"]["matchExpressions"] == [
        {"key": "drover.dev/run-uid", "operator": "Exists"}
    ]
    assert task_pods["namespaceSelector"] == {}
    assert api_server == {"ipBlock": {"cidr": "10.0.0.0/24"}}
    assert sorted(p["port"] for p in rule["ports"]) == [8080, 8443]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    operator = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= operator.items()
