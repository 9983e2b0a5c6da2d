"""The SDK's errors.

`AbortRun`, `NonDeterminismError` and `RunCanceled` derive from `BaseException`, like
`KeyboardInterrupt`: they stop the run, and a task's `except Exception:` must not swallow them.
"""

from __future__ import annotations


class DroverError(Exception):
    """Base class of the SDK's ordinary errors."""


class ApiError(DroverError):
    """The run API refused a request; `status` is the HTTP status, `type` the problem type."""

    def __init__(self, status: int, type: str, message: str) -> None:
        super().__init__(f"{status} {type}: {message}")
        self.status, self.type, self.message = status, type, message


class CheckpointTooLargeError(DroverError):
    """A step's value is over the checkpoint size cap."""


class RunControl(BaseException):
    """Control flow of the runner: ends the attempt; not for task code to catch."""


class AbortRun(RunControl):
    """Raise to fail the run now, without retries: `raise drover.AbortRun("bad input")`."""

    def __init__(self, message: str = "aborted") -> None:
        super().__init__(message)
        self.message = message


class NonDeterminismError(RunControl):
    """The code called a different step than the one recorded at this position: replaying
    checkpoints would hand it the wrong values, so the run fails without retry."""


class RunCanceled(RunControl):
    """The run was canceled, or this attempt was superseded: stop at once."""
