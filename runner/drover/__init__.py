"""Drover SDK: durable background tasks for Python teams on Kubernetes.

```python
import drover

@drover.step
def fetch(customer_id: str) -> dict: ...

def sync_customer(payload: SyncRequest) -> dict:
    orders = fetch(payload.customer_id)      # checkpointed: not re-run by a retry
    drover.current_run().set_metadata(orders=len(orders))
    drover.wait_for("2h")                    # the pod exits; a new one resumes here
    report = drover.trigger_and_wait("report", {"customer": payload.customer_id})
    return {"orders": len(orders), "report": report.unwrap()}
```

Task code imports this package; it stays light because it goes into users' images.
"""

from typing import TYPE_CHECKING, Any

from drover.context import Run, current_run, heartbeat
from drover.errors import (
    AbortRun,
    CheckpointTooLargeError,
    ChildRunFailed,
    ClientError,
    ConflictError,
    DroverError,
    ForbiddenError,
    InvalidRequestError,
    NonDeterminismError,
    NotFoundError,
    RunCanceled,
    RunFailedError,
    UnauthorizedError,
    UnavailableError,
    WaitTimeout,
)
from drover.results import RunHandle, RunResult
from drover.steps import step
from drover.workflows import (
    TokenResult,
    WaitToken,
    batch_trigger_and_wait,
    batch_trigger_and_wait_async,
    create_token,
    create_token_async,
    trigger,
    trigger_and_wait,
    trigger_and_wait_async,
    trigger_async,
    wait_for,
    wait_for_async,
    wait_for_token,
    wait_for_token_async,
    wait_until,
    wait_until_async,
)

if TYPE_CHECKING:
    from drover.client import AsyncClient, Client

# The client needs the `client` extra (an HTTP and Kubernetes client): imported on first use,
# so task images without it import `drover` as before.
_CLIENT = ("AsyncClient", "Client")


def __getattr__(name: str) -> Any:
    if name in _CLIENT:
        import drover.client

        return getattr(drover.client, name)
    raise AttributeError(f"module 'drover' has no attribute {name!r}")


__version__ = "0.1.0.dev0"

__all__ = [
    "AbortRun",
    "AsyncClient",
    "CheckpointTooLargeError",
    "ChildRunFailed",
    "Client",
    "ClientError",
    "ConflictError",
    "DroverError",
    "ForbiddenError",
    "InvalidRequestError",
    "NonDeterminismError",
    "NotFoundError",
    "Run",
    "RunCanceled",
    "RunFailedError",
    "RunHandle",
    "RunResult",
    "TokenResult",
    "UnauthorizedError",
    "UnavailableError",
    "WaitTimeout",
    "WaitToken",
    "__version__",
    "batch_trigger_and_wait",
    "batch_trigger_and_wait_async",
    "create_token",
    "create_token_async",
    "current_run",
    "heartbeat",
    "step",
    "trigger",
    "trigger_and_wait",
    "trigger_and_wait_async",
    "trigger_async",
    "wait_for",
    "wait_for_async",
    "wait_for_token",
    "wait_for_token_async",
    "wait_until",
    "wait_until_async",
]
