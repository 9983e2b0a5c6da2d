"""What the client hands back: a started run's handle, and a finished run's result."""

from __future__ import annotations

from typing import Any

from drover.protocol.runs import RunView
from drover.results import RunHandle, RunResult

__all__ = ["RunHandle", "RunResult", "handle_of", "result_of"]


def result_of(view: RunView) -> RunResult:
    return RunResult(
        name=view.name, phase=view.phase, output=view.output, error=view.error, id=view.id
    )


def handle_of(body: dict[str, Any]) -> RunHandle:
    view = RunView.model_validate(body)
    return RunHandle(
        name=view.name,
        id=view.id,
        namespace=view.namespace,
        task=view.task,
        phase=view.phase,
        cached=bool(view.cached),
    )
