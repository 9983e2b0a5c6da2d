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

from drover.context import Run, current_run, heartbeat
from drover.errors import (
    AbortRun,
    CheckpointTooLargeError,
    DroverError,
    NonDeterminismError,
    RunCanceled,
)
from drover.steps import step

__version__ = "0.1.0.dev0"

__all__ = [
    "AbortRun",
    "CheckpointTooLargeError",
    "DroverError",
    "NonDeterminismError",
    "Run",
    "RunCanceled",
    "__version__",
    "current_run",
    "heartbeat",
    "step",
]
