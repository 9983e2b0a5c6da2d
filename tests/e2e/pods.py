"""Helpers for end-to-end tests that run plain pods on the node agent."""

from __future__ import annotations

import json
from typing import Any

from lightkube import ApiError, Client
from lightkube.models.core_v1 import Container, PodSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod

from tests.conftest import wait_for

TERMINAL = ("Succeeded", "Failed")


def pod(
    name: str,
    namespace: str,
    command: list[str],
    *,
    restart_policy: str = "Never",
    node_name: str | None = None,
    **container: Any,
) -> Pod:
    return Pod(
        metadata=ObjectMeta(name=name, namespace=namespace),
        spec=PodSpec(
            restartPolicy=restart_policy,
            nodeName=node_name,
            terminationGracePeriodSeconds=5,
            containers=[
                Container(
                    name="main", image="example.invalid/unused:1", command=command, **container
                )
            ],
        ),
    )


def python(code: str) -> list[str]:
    """A container command running Python (the node's `python` is the project's venv)."""
    return ["python", "-c", code]


def get(client: Client, namespace: str, name: str) -> Pod:
    return client.get(Pod, name, namespace=namespace)


def wait_phase(client: Client, namespace: str, name: str, *phases: str, timeout: float = 90) -> Pod:
    def reached() -> Pod | None:
        current = get(client, namespace, name)
        assert current.status is not None
        return current if current.status.phase in phases else None

    def stopped() -> str:
        # Where the pod stopped: unbound, waiting for a container, or running on.
        last = get(client, namespace, name)
        status = last.status.to_dict() if last.status else {}
        return f"on node {last.spec.nodeName if last.spec else None}, its status was {status}"

    return wait_for(reached, timeout=timeout, what=f"pod {name} in {phases}", detail=stopped)


def wait_gone(client: Client, namespace: str, name: str, timeout: float = 60) -> None:
    def gone() -> bool:
        try:
            get(client, namespace, name)
        except ApiError as exc:
            return exc.status.code == 404
        return False

    wait_for(gone, timeout=timeout, what=f"pod {name} deleted")


def main_status(p: Pod) -> dict[str, Any]:
    """The first container's status as a dict; empty before the node reported any."""
    if p.status is None or not p.status.containerStatuses:
        return {}
    status: dict[str, Any] = p.status.containerStatuses[0].to_dict()
    return status


def logs(client: Client, namespace: str, name: str) -> str:
    return "".join(client.log(name, namespace=namespace, newlines=True))


def json_output(client: Client, namespace: str, name: str) -> Any:
    return json.loads(logs(client, namespace, name))
