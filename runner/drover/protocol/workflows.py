"""Bodies of the workflow calls a running task makes (`/v1/runs/{run_id}/children`, `waits`,
`tokens`) and of token completion. Every call names its position in the run's code (`seq`,
shared with steps): a retried or resumed run that reaches the position again gets the
recorded result back instead of acting twice."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from drover.protocol.runs import MAX_BATCH, MAX_TAGS, PositiveDuration, Tag, TriggerRequest
from drover.protocol.wire import Reply, Wire

#: A completed token's data, as JSON.
MAX_TOKEN_DATA_BYTES = 256 * 1024
DEFAULT_TOKEN_TIMEOUT = "24h"

Seq = Annotated[int, Field(ge=0, le=1_000_000)]


class ChildRequest(Wire):
    """Start a child run of `task` (in the parent's namespace) at position `seq`."""

    seq: Seq
    task: Annotated[str, StringConstraints(min_length=1, max_length=63)]
    run: TriggerRequest = Field(default_factory=TriggerRequest)


class ChildBatchRequest(Wire):
    """Start children of `task`, one per item, at position `seq` (one position for the
    whole batch)."""

    seq: Seq
    task: Annotated[str, StringConstraints(min_length=1, max_length=63)]
    items: Annotated[list[TriggerRequest], Field(min_length=1, max_length=MAX_BATCH)]


class Child(Reply):
    """A child run started (or, on a replay, recorded) at the call's position."""

    name: str
    id: str
    task: str


class Children(Reply):
    items: list[Child]


class WaitRequest(Wire):
    """Wait at position `seq`: until a time, for a token, or for runs to finish."""

    seq: Seq
    kind: Literal["Duration", "Token", "Runs"]
    #: Duration: how long (from when the code first reaches the position)...
    seconds: Annotated[float, Field(ge=0, le=10 * 365 * 86400)] | None = None
    #: ... or until when.
    until: datetime | None = None
    token: str | None = None
    runs: Annotated[list[str], Field(max_length=MAX_BATCH)] | None = None


class WaitReply(Reply):
    """`resolved`: go on with `value`; `sleep`: wait `sleepSeconds` in the pod, then ask
    again; `suspended`: the run is suspended, the process must exit now."""

    state: Literal["resolved", "sleep", "suspended"]
    value: Any = None
    sleep_seconds: float | None = Field(default=None, alias="sleepSeconds")


class TokenRequest(Wire):
    """Create a waitpoint token at position `seq`."""

    seq: Seq
    timeout: PositiveDuration = DEFAULT_TOKEN_TIMEOUT
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = (
        Field(default=None, alias="idempotencyKey")
    )
    tags: Annotated[list[Tag], Field(max_length=MAX_TAGS)] | None = None


class Token(Reply):
    """A waitpoint token: complete it by POSTing JSON to `url` (no other credential)."""

    id: str
    url: str
    timeout_at: datetime | None = Field(default=None, alias="timeoutAt")


class TokenCompletion(Wire):
    """Complete a token through the API (Kubernetes identity)."""

    data: Any = None


class TokenState(Reply):
    """A token as the API shows it."""

    id: str
    namespace: str
    #: The run that created it, and its Task.
    run: str
    task: str | None = None
    state: Literal["waiting", "completed", "timed_out", "canceled"]
    created_at: datetime | None = Field(default=None, alias="createdAt")
    timeout_at: datetime | None = Field(default=None, alias="timeoutAt")
    completed_at: datetime | None = Field(default=None, alias="completedAt")
    tags: list[str] = Field(default_factory=list)
    #: The data it was completed with.
    data: Any = None
    #: Whether this request completed it (false: an earlier completion or timeout won).
    completed_now: bool | None = Field(default=None, alias="completedNow")


class TokenList(Reply):
    items: list[TokenState]
