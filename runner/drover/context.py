"""`drover.current_run()`: what the running task knows about its run."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from drover._state import AttemptState, current_state
from drover.errors import DroverError


class Run:
    """The run this code is executing for. Obtain with `drover.current_run()`."""

    def __init__(self, state: AttemptState) -> None:
        self._state = state

    @property
    def id(self) -> str:
        return self._state.context.run_id

    @property
    def name(self) -> str:
        return self._state.context.name

    @property
    def namespace(self) -> str:
        return self._state.context.namespace

    @property
    def task(self) -> str:
        return self._state.context.task

    @property
    def attempt(self) -> int:
        """1 for the first attempt, 2 for the first retry, …"""
        return self._state.context.attempt

    @property
    def max_attempts(self) -> int:
        return self._state.context.max_attempts

    @property
    def payload(self) -> Any:
        return self._state.context.payload

    @property
    def scheduled_time(self) -> datetime | None:
        """The schedule tick that created this run (cron runs); None otherwise."""
        return self._state.context.scheduled_time

    @property
    def metadata(self) -> Mapping[str, Any]:
        """Metadata as persisted (a read-only view); change it with `set_metadata`."""
        return dict(self._state.metadata)

    def set_metadata(self, **values: Any) -> None:
        """Persist metadata keys (JSON values; None deletes a key). Visible in the API."""
        self._state.set_metadata(values)


def current_run() -> Run:
    state = current_state()
    if state is None:
        raise DroverError("drover.current_run() is only available inside a Drover run")
    return Run(state)


def heartbeat() -> None:
    """Report progress now (the runner also beats automatically in the background)."""
    state = current_state()
    if state is not None:
        state.heartbeat()
        state.check_canceled()
