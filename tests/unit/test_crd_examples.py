"""The manifests in `examples/` are valid for the models and cover what the README says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from drover_operator.crd import Task, TaskRun

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def test_examples_validate_and_cover_each_kind_of_task() -> None:
    tasks = [Task.model_validate(d) for d in _documents() if d["kind"] == "Task"]
    runs = [TaskRun.model_validate(d) for d in _documents() if d["kind"] == "TaskRun"]
    assert {d["kind"] for d in _documents()} == {"Task", "TaskRun"}
    names = {t.metadata["name"] for t in tasks}
    assert any(t.spec.entrypoint for t in tasks)  # SDK task
    assert any(t.spec.command for t in tasks)  # command task
    assert any(t.spec.schedule for t in tasks)  # scheduled task
    run_targets = {r.spec.task_ref.name for r in runs}
    assert run_targets == names  # every run targets an example task, and each task has a run
