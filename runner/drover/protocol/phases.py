"""Run phases, as `status.phase` of a TaskRun and the API's run views show them."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """Where a run is in its lifecycle. The last five are final: the run never changes
    phase again."""

    QUEUED = "Queued"
    """Accepted, waiting for `notBefore`/`delay` or a concurrency slot."""
    STARTING = "Starting"
    """A slot is granted; the pod is being created, scheduled or pulling its image."""
    RUNNING = "Running"
    """The attempt's container is running."""
    WAITING = "Waiting"
    """The run suspended itself without a pod (waiting on a time, a token or other runs)."""
    RETRYING = "Retrying"
    """An attempt failed; the next one starts at `status.nextAttemptTime`."""
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"
    TIMED_OUT = "TimedOut"
    """The last attempt exceeded `timeouts.maxDuration`."""
    EXPIRED = "Expired"
    """Not started within `spec.ttl`."""

    @property
    def finished(self) -> bool:
        return self in FINISHED_PHASES


FINISHED_PHASES: frozenset[Phase] = frozenset(
    {Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELED, Phase.TIMED_OUT, Phase.EXPIRED}
)
#: Waiting for admission (a first attempt or a retry).
WAITING_PHASES: frozenset[Phase] = frozenset({Phase.QUEUED, Phase.RETRYING})
#: Holding a concurrency slot.
ACTIVE_PHASES: frozenset[Phase] = frozenset({Phase.STARTING, Phase.RUNNING})
