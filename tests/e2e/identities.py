"""Kubernetes identities for tests: ServiceAccounts with exactly the permissions a test gives
them, their tokens, and kubeconfigs and clients acting as them."""

from __future__ import annotations

from pathlib import Path

import yaml
from lightkube import AsyncClient, Client, KubeConfig
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.authorization_v1 import ResourceAttributes, SubjectAccessReviewSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.authorization_v1 import SubjectAccessReview
from lightkube.resources.core_v1 import ServiceAccount, ServiceAccountToken
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding

from tests.conftest import E2ECluster, wait_for


def rule(group: str, resources: list[str], verbs: list[str]) -> PolicyRule:
    return PolicyRule(apiGroups=[group], resources=resources, verbs=verbs)


def service_account(
    cluster: E2ECluster, namespace: str, name: str, rules: list[PolicyRule] | None = None
) -> str:
    """A ServiceAccount allowed `rules` in `namespace` (nothing else); returns a token."""
    c = cluster.client
    c.create(ServiceAccount(metadata=ObjectMeta(name=name, namespace=namespace)))
    if rules:
        grant(cluster, namespace, name, rules)
    return token(cluster, namespace, name)


def grant(
    cluster: E2ECluster, namespace: str, account: str, rules: list[PolicyRule], *, role: str = ""
) -> None:
    """Give the ServiceAccount `rules` in `namespace`, as a Role and RoleBinding."""
    role = role or account
    c = cluster.client
    c.create(Role(metadata=ObjectMeta(name=role, namespace=namespace), rules=rules))
    c.create(
        RoleBinding(
            metadata=ObjectMeta(name=role, namespace=namespace),
            roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="Role", name=role),
            subjects=[Subject(kind="ServiceAccount", name=account, namespace=namespace)],
        )
    )
    # The API server's authorizer learns of a new binding from a watch, a moment later: a
    # request made at once could still be refused. Wait until it allows every rule.
    user = f"system:serviceaccount:{namespace}:{account}"
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
    for granted in rules:
        for group in granted.apiGroups or [""]:
            for resource in granted.resources or []:
                for verb in granted.verbs:

                    def effective(g: str = group, r: str = resource, v: str = verb) -> bool:
                        return allowed(cluster, namespace, user, groups, g, r, v)

                    wait_for(effective, what=f"{account} allowed to {verb} {resource}")


def allowed(
    cluster: E2ECluster,
    namespace: str,
    user: str,
    groups: list[str],
    group: str,
    resource: str,
    verb: str,
) -> bool:
    """Whether the API server's authorizer lets `user` (in `groups`) `verb` `resource` (which
    may name a subresource: `taskruns/status`) now, as a SubjectAccessReview answers."""
    resource, _, sub = resource.partition("/")
    review = cluster.client.create(
        SubjectAccessReview(
            spec=SubjectAccessReviewSpec(
                user=user,
                groups=groups,
                resourceAttributes=ResourceAttributes(
                    namespace=namespace, verb=verb, group=group, resource=resource,
                    subresource=sub or None,
                ),
            )
        )
    )  # fmt: skip
    return bool(review.status and review.status.allowed)


def token(cluster: E2ECluster, namespace: str, account: str) -> str:
    request = ServiceAccountToken(metadata=ObjectMeta(), spec=TokenRequestSpec(audiences=[]))
    issued = cluster.client.create(request, account, namespace=namespace)
    assert issued.status is not None
    return str(issued.status.token)


def kubeconfig(cluster: E2ECluster, bearer: str, path: Path) -> Path:
    """A kubeconfig for the cluster that authenticates with `bearer` instead of the admin's
    client certificate."""
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "test", "user": {"token": bearer}}],
        "contexts": [
            {"name": "test", "context": {"cluster": admin["clusters"][0]["name"], "user": "test"}}
        ],
        "current-context": "test",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def client_as(cluster: E2ECluster, bearer: str, path: Path) -> Client:
    return Client(KubeConfig.from_file(str(kubeconfig(cluster, bearer, path))))


def async_client_as(cluster: E2ECluster, bearer: str, path: Path) -> AsyncClient:
    return AsyncClient(KubeConfig.from_file(str(kubeconfig(cluster, bearer, path))))
