"""The state of the attempt running in this process: its context, step positions, and the
background threads that send heartbeats and logs."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from drover._client import RunApi
from drover.errors import ApiError, NonDeterminismError, RunCanceled
from drover.protocol import negotiate
from drover.protocol.wire import (
    HeartbeatReply,
    LogBatch,
    LogLine,
    MetadataPatch,
    RunContext,
)
from drover.requests import error

# One attempt per process: a module global (not a context variable), so steps called from
# threads the task starts are checkpointed too.
_current: AttemptState | None = None


def current_state() -> AttemptState | None:
    return _current


class AttemptState:
    def __init__(self, api: RunApi, context: RunContext, logs: LogShipper | None = None) -> None:
        self.api = api
        self.context = context
        self.logs = logs
        self.recorded = {s.seq: s for s in context.steps}
        #: Step start times are sent to operators that serve protocol 2.
        self.step_times = negotiate(context.protocol) >= 2
        self.metadata: dict[str, Any] = dict(context.metadata)
        self.canceled = threading.Event()
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._stop = threading.Event()
        self._beats = threading.Thread(target=self._beat_loop, name="drover-heartbeat", daemon=True)

    def activate(self) -> None:
        global _current
        _current = self
        self._beats.start()

    def next_seq(self) -> int:
        with self._seq_lock:
            seq = self._seq
            self._seq += 1
            return seq

    def checkpoint(
        self, seq: int, name: str, encoded_value: str, started: datetime | None = None
    ) -> None:
        """Store a step's result before the step returns: once the code moves on, a later
        attempt never runs that step again. (The body is built by hand: this is the hot
        path, and the value is already JSON.)"""
        began = f',"startedAt":"{started.isoformat()}"' if started and self.step_times else ""
        body = (
            f'{{"steps":[{{"seq":{seq},"name":{json.dumps(name)},"value":{encoded_value}'
            f"{began}}}]}}"
        )
        try:
            self.api.send("PUT", "/steps", body.encode())
        except ApiError as exc:
            if exc.type == "non-determinism":
                raise NonDeterminismError(exc.message) from None
            if exc.status == 409:
                raise RunCanceled(exc.message) from None
            raise

    def request(self, path: str, body: BaseModel) -> Any:
        """A workflow call: the API's answer, or its refusal as the exception task code
        sees (a bad child payload: `InvalidRequestError` naming the field)."""
        try:
            return self.api.call("POST", path, body)
        except ApiError as exc:
            if exc.type == "non-determinism":
                raise NonDeterminismError(exc.message) from None
            if exc.type == "attempt-inactive":
                raise RunCanceled(exc.message) from None
            raise error(exc.status, {"type": exc.type, "message": exc.message}) from None

    def check_canceled(self) -> None:
        if self.canceled.is_set():
            raise RunCanceled("the run was canceled or this attempt superseded")

    def heartbeat(self) -> None:
        try:
            reply = HeartbeatReply.model_validate(self.api.call("POST", "/heartbeat") or {})
        except ApiError as exc:
            if exc.status == 409:
                self.canceled.set()
                return
            raise
        if reply.cancel:
            self.canceled.set()

    def _beat_loop(self) -> None:
        interval = max(self.context.heartbeat_seconds / 3, 0.5)
        while not self._stop.wait(interval):
            try:
                self.heartbeat()
            except Exception:
                continue

    def set_metadata(self, values: dict[str, Any]) -> None:
        self.api.call("PATCH", "/metadata", MetadataPatch(set=values))
        for key, value in values.items():
            if value is None:
                self.metadata.pop(key, None)
            else:
                self.metadata[key] = value

    def flush_logs(self) -> None:
        if self.logs is not None:
            self.logs.flush()

    def stop(self) -> None:
        self._stop.set()


class LogShipper(logging.Handler):
    """Sends log records to the API in batches, from a background thread."""

    def __init__(self, api: RunApi) -> None:
        super().__init__(level=logging.INFO)
        self.api = api
        self._lines: list[LogLine] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="drover-logs", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("drover._"):
            return  # our own HTTP plumbing would log about itself in a loop
        line = LogLine(
            time=datetime.fromtimestamp(record.created).astimezone(),
            level=record.levelname[:16],
            logger=record.name[:256],
            message=self.format(record)[: 16 * 1024],
        )
        with self._lock:
            self._lines.append(line)

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self.ship()

    def ship(self) -> None:
        with self._lock:
            lines, self._lines = self._lines[:1000], self._lines[1000:]
        if lines:
            with contextlib.suppress(Exception):
                self.api.call("POST", "/logs", LogBatch(lines=lines))

    def flush(self) -> None:
        """Send everything logged so far (before the attempt reports its result: after
        that, the API takes nothing more from this attempt)."""
        while self._lines:
            self.ship()

    def close(self) -> None:
        self._stop.set()
        super().close()
