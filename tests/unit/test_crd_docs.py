"""docs/resources.md documents every field the CRDs define (so new fields get documented)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drover_operator.crd import TaskRunSpec, TaskRunStatus, TaskSpec, TaskStatus
from drover_operator.crd.schema import iter_nodes, structural_schema

DOC = Path(__file__).resolve().parents[2] / "docs" / "resources.md"
FIELDS = sorted(
    {
        path
        for model in (TaskSpec, TaskStatus, TaskRunSpec, TaskRunStatus)
        for path, _ in iter_nodes(structural_schema(model))
        if path and not path.endswith(("[]", ".*"))
    }
)


@pytest.mark.parametrize("path", FIELDS)
def test_field_is_documented(path: str) -> None:
    """Either the full path appears in backticks, or a line mentions the parent's path
    together with the field name (`env[].valueFrom.secretKeyRef` ... `key`); list items may
    be documented on the list (`podTemplate.spec.volumes` ... `name`)."""
    text = DOC.read_text()
    parent, _, leaf = path.rpartition(".")
    parents = {f"`{parent}`", f"`{parent.removesuffix('[]')}`"}
    documented = f"`{path}`" in text or any(
        f"`{leaf}`" in line and any(p in line for p in parents) for line in text.splitlines()
    )
    assert documented, f"{path} is not documented in docs/resources.md"
