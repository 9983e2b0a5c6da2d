"""Drover SDK: durable background tasks for Python teams on Kubernetes.

```python
import drover

@drover.step
def fetch(customer_id: str) -> dict: ...

def sync_customer(payload: SyncRequest) -> dict:
    orders = fetch(payload.customer_id)      # checkpointed: not re-run by a retry
    drover.current_run().set_metadata(orders=len(orders))
    return {"orders": len(orders)}
```

Task code imports this package; it stays light because it goes into users' images.
"""

from typing import TYPE_CHECKING, Any

from drover.context import Run, current_run, heartbeat
from drover.errors import (
    AbortRun,
    CheckpointTooLargeError,
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
from drover.steps import step

if TYPE_CHECKING:
    from drover.client import AsyncClient, Client, RunHandle, RunResult

# The client needs the `client` extra (an HTTP and Kubernetes client): imported on first use,
# so task images without it import `drover` as before.
_CLIENT = ("AsyncClient", "Client", "RunHandle", "RunResult")


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
    "UnauthorizedError",
    "UnavailableError",
    "WaitTimeout",
    "__version__",
    "current_run",
    "heartbeat",
    "step",
]
