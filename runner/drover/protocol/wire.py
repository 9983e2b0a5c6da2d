"""Request and response bodies of the run API, shared by the runner (client) and the
operator (server). The operator imports these; this module never imports the operator."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

# Caps the server enforces and the client checks first, for a clear error in task code.
MAX_STEP_VALUE_BYTES = 256 * 1024
MAX_STEP_NAME = 256
MAX_STEPS_PER_REQUEST = 500
MAX_LOG_LINES_PER_REQUEST = 1000
MAX_LOG_MESSAGE = 16 * 1024
MAX_METADATA_BYTES = 64 * 1024
MAX_OUTPUT_BYTES = 1024 * 1024
MAX_REQUEST_BYTES = 4 * 1024 * 1024


class Wire(BaseModel):
    """A request body: the server refuses fields it does not know (422 names them)."""

    # camelCase on the wire, snake_case in Python (either accepted when parsing).
    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)


class Reply(Wire):
    """A response body: clients ignore fields they do not know, so a newer operator can add
    fields without breaking older task images and clients (the protocol grows by addition)."""

    model_config = ConfigDict(extra="ignore", validate_by_name=True, validate_by_alias=True)


class StepRecord(Wire):
    """One completed step: its position in the run, its name and its JSON value."""

    seq: Annotated[int, Field(ge=0, le=1_000_000)]
    name: Annotated[str, Field(min_length=1, max_length=MAX_STEP_NAME)]
    value: Any = None
    #: When the step began (protocol 2; runners send it only to operators that serve 2).
    started_at: datetime | None = Field(default=None, alias="startedAt")


class RunContext(Reply):
    """What an attempt needs to run: identity, payload, and the steps already completed."""

    run_id: str = Field(alias="runId")
    name: str
    namespace: str
    task: str
    #: The try under the retry policy (a run resumed after a wait keeps it) ...
    attempt: int
    #: ... and this pod's number among all of the run's pods.
    execution: int | None = None
    max_attempts: int = Field(alias="maxAttempts")
    payload: Any = None
    scheduled_time: datetime | None = Field(default=None, alias="scheduledTime")
    metadata: dict[str, Any] = Field(default_factory=dict)
    heartbeat_seconds: float = Field(alias="heartbeatSeconds")
    steps: list[StepRecord] = Field(default_factory=list)
    #: The highest protocol version the operator serves (protocol 2; absent: 1).
    protocol: int | None = None


class StepBatch(Wire):
    """Checkpoints to store, in order. Storing one that exists with the same name is a no-op
    (a retried request); a different name at a recorded position is a conflict."""

    steps: Annotated[list[StepRecord], Field(min_length=1, max_length=MAX_STEPS_PER_REQUEST)]


class Completion(Wire):
    output: Any = None


class Failure(Wire):
    type: Annotated[str, Field(min_length=1, max_length=256)]
    message: Annotated[str, Field(max_length=32768)]
    traceback: Annotated[str, Field(max_length=65536)] | None = None
    retryable: bool = True


class MetadataPatch(Wire):
    """Keys to set (null deletes a key)."""

    set: dict[str, Any]


class LogLine(Wire):
    time: datetime
    level: Annotated[str, Field(max_length=16)]
    logger: Annotated[str, Field(max_length=256)] = ""
    message: Annotated[str, Field(max_length=MAX_LOG_MESSAGE)]


class LogBatch(Wire):
    lines: Annotated[list[LogLine], Field(min_length=1, max_length=MAX_LOG_LINES_PER_REQUEST)]


class HeartbeatReply(Reply):
    """`cancel` tells the runner to stop: the run was canceled or the attempt superseded."""

    cancel: bool = False


class Problem(Reply):
    """Every error response: a machine-readable `type` and a message a person can act on."""

    type: str
    message: str
