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


class ClientError(DroverError):
    """The Drover API refused a request from `drover.Client`: `status` is the HTTP status,
    `type` the problem type (`not-found`, `forbidden`, `invalid-payload`, ...), `message` what
    the API said."""

    def __init__(self, status: int, type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.type, self.message = status, type, message


class NotFoundError(ClientError):
    """404: no such Task or run (in that namespace)."""


class UnauthorizedError(ClientError):
    """401: no Kubernetes identity the API accepts."""


class ForbiddenError(ClientError):
    """403: the identity lacks the RBAC permission the message names."""


class InvalidRequestError(ClientError):
    """400, 413 or 422: the request (or its payload) is wrong; nothing was created."""


class ConflictError(ClientError):
    """409: e.g. canceling a run that already finished."""


class UnavailableError(ClientError):
    """503, or no answer: the operator or its database is briefly unavailable; retry."""


class RunFailedError(DroverError):
    """`RunResult.unwrap()` of a run that did not succeed: `result` tells how it ended."""

    def __init__(self, result: object, message: str) -> None:
        super().__init__(message)
        self.result = result


class ChildRunFailed(RunFailedError):  # noqa: N818 - the name task code knows
    """`RunResult.unwrap()` of a child run (`drover.trigger_and_wait`) that did not
    succeed: `result.error` is the child's error."""


class WaitTimeout(DroverError):  # noqa: N818 - the name task code knows (drover.WaitTimeout)
    """Waiting gave up before the awaited thing happened."""


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


class RunSuspended(RunControl):
    """The run suspended on a durable wait: the process exits, and a new one replays the
    code to the wait once it is over. Raised by `drover.wait_for` and friends; task code
    must let it pass (`finally` blocks run, as for any exit)."""
