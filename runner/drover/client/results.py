"""What the client hands back: a started run's handle, and a finished run's result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drover.errors import RunFailedError
from drover.protocol.phases import Phase
from drover.protocol.runs import RunView


@dataclass(frozen=True)
class RunHandle:
    """A run a trigger started (or found: `cached` when its idempotency key matched)."""

    name: str
    id: str
    namespace: str
    task: str
    phase: str
    cached: bool = False


@dataclass(frozen=True)
class RunResult:
    """How a run ended."""

    name: str
    phase: str
    output: Any = None
    error: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.phase == Phase.SUCCEEDED

    def unwrap(self) -> Any:
        """The run's output; raises `drover.RunFailedError` if it did not succeed."""
        if not self.ok:
            error = self.error or {}
            detail = f"{error.get('type', self.phase)}: {error.get('message', '')}".strip(": ")
            raise RunFailedError(self, f"run {self.name} ended {self.phase}: {detail}")
        return self.output

    @classmethod
    def of(cls, view: RunView) -> RunResult:
        return cls(name=view.name, phase=view.phase, output=view.output, error=view.error)


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
