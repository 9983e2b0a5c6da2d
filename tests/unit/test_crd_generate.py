"""CRD generation: deterministic, committed files up to date, and the output is a structural
schema the API server will accept (a type and a description on every field, bounded strings
for CEL cost, printer columns pointing at real fields)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from drover_operator.crd.__main__ import check, main
from drover_operator.crd.definitions import (
    HEADER,
    POLICY_FILE,
    POLICY_HEADER,
    RESOURCES,
    crd_manifest,
    generated_files,
)
from drover_operator.crd.schema import iter_nodes

REPO_ROOT = Path(__file__).resolve().parents[2]
CRDS = REPO_ROOT / "crds"


def _schema(resource_index: int) -> dict[str, Any]:
    manifest = crd_manifest(RESOURCES[resource_index])
    schema: dict[str, Any] = manifest["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


ALL_NODES = [
    (f"{RESOURCES[i].kind}.{path}", node)
    for i in range(len(RESOURCES))
    for part in ("spec", "status")
    for path, node in iter_nodes(_schema(i)["properties"][part], part)
]


def test_committed_crds_match_the_models() -> None:
    diffs = check(CRDS)
    assert not diffs, "crds/ is out of date; run `make crds`:\n" + "".join(diffs)


def test_generation_is_deterministic_across_processes(tmp_path: Path) -> None:
    outputs = []
    for seed in ("1", "2"):
        out = tmp_path / seed
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run(
            [sys.executable, "-m", "drover_operator.crd", "--dir", str(out)],
            check=True, env=env, capture_output=True,
        )  # fmt: skip
        outputs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert outputs[0] == outputs[1]
    assert set(outputs[0]) == {
        "drover.dev_tasks.yaml",
        "drover.dev_taskruns.yaml",
        "drover.dev_taskruns-payload-policy.yaml",
    }
    assert generated_files() == {k: v.decode() for k, v in outputs[0].items()}


def test_check_mode_reports_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check", "--dir", str(tmp_path)]) == 1  # missing files
    assert main(["--dir", str(tmp_path)]) == 0
    assert main(["--check", "--dir", str(tmp_path)]) == 0
    path = tmp_path / "drover.dev_tasks.yaml"
    path.write_text(path.read_text().replace("maxAttempts", "maxTries", 1))
    capsys.readouterr()
    assert main(["--check", "--dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "+++" in captured.out and "maxTries" in captured.out
    assert "make crds" in captured.err


def test_files_have_header_and_parse() -> None:
    for name, text in generated_files().items():
        assert "do not edit" in text.split("\n---", 1)[0], name
        kinds = [doc["kind"] for doc in yaml.safe_load_all(text)]
        if name == POLICY_FILE:
            assert text.startswith(POLICY_HEADER)
            assert kinds == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
        else:
            assert text.startswith(HEADER), name
            assert kinds == ["CustomResourceDefinition"]


def test_resource_names() -> None:
    short = [s for r in RESOURCES for s in r.short_names]
    assert len(short) == len(set(short))
    assert "tr" not in short  # Tekton's TaskRun short name
    for resource in RESOURCES:
        spec = crd_manifest(resource)["spec"]
        assert spec["group"] == "drover.dev" and spec["scope"] == "Namespaced"
        assert spec["names"]["categories"] == ["drover"]
        (version,) = spec["versions"]
        assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}


@pytest.mark.parametrize(("path", "node"), ALL_NODES, ids=[p for p, _ in ALL_NODES])
def test_schema_node_is_structural(path: str, node: dict[str, Any]) -> None:
    assert not {"$ref", "$defs", "title", "nullable", "allOf", "oneOf"} & set(node)
    assert (
        "type" in node
        or node.get("x-kubernetes-preserve-unknown-fields")
        or node.get("x-kubernetes-int-or-string")
    )
    if "anyOf" in node:
        assert node.get("x-kubernetes-int-or-string")
    assert not ("properties" in node and "additionalProperties" in node)
    if node.get("type") == "string" and "enum" not in node and node.get("format") != "date-time":
        # Unbounded strings make CEL cost estimates explode and the CRD gets refused.
        assert "maxLength" in node, f"{path} needs a maxLength"
    if node.get("type") in ("array",):
        assert "maxItems" in node, f"{path} needs maxItems"


def test_every_field_has_a_description() -> None:
    missing = [
        path
        for path, node in ALL_NODES
        if not path.endswith(("[]", ".*")) and not node.get("description")
    ]
    assert not missing


def test_printer_columns_point_at_schema_fields() -> None:
    for index, resource in enumerate(RESOURCES):
        schema = _schema(index)
        paths = {
            p
            for part in ("spec", "status")
            for p, _ in iter_nodes(schema["properties"][part], part)
        }
        for column in resource.columns:
            json_path = re.sub(r"\[\?\(.*?\)\]", "[]", column.json_path).lstrip(".")
            if json_path.startswith("metadata."):
                continue
            assert json_path in paths, (resource.kind, column.name, json_path)


def test_rules_have_messages() -> None:
    for path, node in ALL_NODES:
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["message"], path
            assert set(rule) <= {"rule", "message", "fieldPath", "reason"}, path
