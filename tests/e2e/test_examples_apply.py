"""Every manifest in `examples/` applies cleanly to the real API server and reads back as
written (plus the defaults the CRD fills in)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from drover_operator.crd import Task, TaskRun
from tests.conftest import REPO_ROOT, E2ECluster

pytestmark = pytest.mark.e2e

EXAMPLES = REPO_ROOT / "examples"


def example_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def is_subset(applied: Any, stored: Any) -> bool:
    """Everything applied is stored unchanged (the server may add defaults)."""
    if isinstance(applied, dict):
        return isinstance(stored, dict) and all(
            key in stored and is_subset(value, stored[key]) for key, value in applied.items()
        )
    return bool(applied == stored)


def test_examples_apply_cleanly(cluster: E2ECluster, drover_crds: None, namespace: str) -> None:
    proc = cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", str(EXAMPLES))
    assert "Warning" not in proc.stderr, proc.stderr
    for doc in example_documents():
        kind, name = doc["kind"].lower(), doc["metadata"]["name"]
        stored = json.loads(
            cluster.kubectl("get", "-n", namespace, kind, name, "-o", "json").stdout
        )
        assert is_subset(doc["spec"], stored["spec"]), (name, stored["spec"])
        # What the operator will parse: the stored object validates against the models.
        (Task if doc["kind"] == "Task" else TaskRun).model_validate(stored)

    tasks = cluster.kubectl("get", "-n", namespace, "tasks.drover.dev").stdout
    assert "examples.tasks:sync_customer" in tasks  # the Entrypoint column
    assert "30 2 * * *" in tasks  # the Schedule column
