"""What starting and waiting for runs hands back, in task code (`drover.trigger`, ...) and in
applications (`drover.Client`): a started run's handle, a finished run's result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from drover.errors import ChildRunFailed, RunFailedError
from drover.protocol.phases import Phase


@dataclass(frozen=True)
class RunHandle:
    """A run a trigger started (or found: `cached` when its idempotency key matched)."""

    name: str
    id: str
    namespace: str
    task: str
    phase: str = Phase.QUEUED
    cached: bool = False


@dataclass(frozen=True)
class RunResult:
    """How a run ended: `ok` when it Succeeded, with its `output`; else its `error`."""

    name: str
    phase: str
    output: Any = None
    error: dict[str, Any] | None = None
    id: str | None = None
    #: A child run awaited by task code: `unwrap()` raises `ChildRunFailed`.
    child: bool = field(default=False, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.phase == Phase.SUCCEEDED

    def unwrap(self) -> Any:
        """The run's output; raises `drover.RunFailedError` (`drover.ChildRunFailed` for a
        child run) if it did not succeed."""
        if not self.ok:
            error = self.error or {}
            detail = f"{error.get('type', self.phase)}: {error.get('message', '')}".strip(": ")
            failure = ChildRunFailed if self.child else RunFailedError
            raise failure(self, f"run {self.name} ended {self.phase}: {detail}")
        return self.output
