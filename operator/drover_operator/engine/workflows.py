"""What a running task's workflow calls do: start child runs, wait (on a time, a token or
child runs), create waitpoint tokens; and completing tokens.

Every call names its position in the run's code (`seq`, shared with steps) and its result
is recorded there, once: a retried or resumed run that reaches the position again gets the
recorded result back — a child is never started twice, a timer never restarts — and a
different call at a recorded position is refused as non-determinism.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from drover.protocol.durations import parse_duration
from drover.protocol.names import LABEL_PARENT_RUN
from drover.protocol.runs import TriggerRequest
from drover.protocol.workflows import (
    Child,
    Token,
    TokenRequest,
    TokenState,
    WaitReply,
    WaitRequest,
)
from drover_operator.domain.pods import label_value
from drover_operator.domain.records import ApiAttempt, StepValue
from drover_operator.domain.tokens import secret_matches, waitpoint_secret
from drover_operator.domain.waits import (
    TOKEN_STEP,
    TokenRecord,
    WaitKind,
    batch_step,
    child_key,
    trigger_step,
)
from drover_operator.engine import observe
from drover_operator.engine.triggers import Triggers
from drover_operator.errors import RequestError
from drover_operator.store import Store


class WorkflowError(RequestError):
    """A workflow call refused: `status`, problem `type`, what is wrong."""


@dataclass(frozen=True)
class WorkflowSettings:
    #: Time waits with more than this left suspend the run.
    suspend_after: dt.timedelta
    #: The base of token completion URLs.
    public_url: str
    #: Derives the secret in token URLs.
    token_key: bytes


def _non_determinism(seq: int, recorded: str, called: str) -> WorkflowError:
    return WorkflowError(
        409,
        "non-determinism",
        f"position #{seq} is {recorded!r} in the run's history, not {called!r}: the task's "
        "code path changed between attempts",
    )


class Workflows:
    """Child runs, durable waits and waitpoint tokens, for the run API."""

    def __init__(self, store: Store, triggers: Triggers, settings: WorkflowSettings) -> None:
        self.store = store
        self.triggers = triggers
        self.settings = settings

    # -- children ----------------------------------------------------------------------------

    async def children(
        self,
        attempt: ApiAttempt,
        seq: int,
        task: str,
        requests: list[TriggerRequest],
        *,
        batch: bool,
    ) -> list[Child]:
        """Start children of `task` at `seq` (one, or a batch), or the ones started there
        before. Every child is checked (Task, payload schema) before any is created."""
        name = batch_step(task) if batch else trigger_step(task)
        recorded = await self.store.waits.recorded(attempt.run_id, seq)
        if recorded is None:
            keyed = [
                request
                if request.idempotency_key
                else request.model_copy(
                    update={
                        "idempotency_key": child_key(attempt.run_id, seq, index if batch else None)
                    }
                )
                for index, request in enumerate(requests)
            ]
            labels = {LABEL_PARENT_RUN: label_value(attempt.name)}
            owner = (attempt.name, attempt.run_id)
            if batch:
                started = await self.triggers.batch(
                    attempt.namespace, task, keyed, labels=labels, owner=owner
                )
            else:
                started = [
                    await self.triggers.trigger(
                        attempt.namespace, task, keyed[0], labels=labels, owner=owner
                    )
                ]
            value = [{"name": s.name, "id": s.id, "task": task} for s in started]
            recorded = await self.store.waits.record(
                attempt.run_id, attempt.number, seq, name, value
            )
        return self._children_of(recorded, seq, name)

    @staticmethod
    def _children_of(recorded: StepValue, seq: int, name: str) -> list[Child]:
        if recorded.name != name:
            raise _non_determinism(seq, recorded.name, name)
        return [Child.model_validate(item) for item in recorded.value]

    # -- waits -------------------------------------------------------------------------------

    async def wait(self, attempt: ApiAttempt, request: WaitRequest) -> WaitReply:
        kind = WaitKind(request.kind)
        runs: list[str] | None = None
        if kind == WaitKind.DURATION and (request.seconds is None) == (request.until is None):
            raise WorkflowError(400, "invalid-body", "a Duration wait takes `seconds` or `until`")
        if kind == WaitKind.TOKEN:
            token = await self._token(request.token)
            if token is None or token.namespace != attempt.namespace:
                raise WorkflowError(404, "not-found", f"no token {request.token!r}")
        if kind == WaitKind.RUNS:
            runs = await self._own_children(attempt, request.runs or [])
        waited = await self.store.waits.wait(
            attempt.run_id,
            attempt.number,
            request.seq,
            kind,
            seconds=request.seconds,
            until=request.until,
            token_id=request.token,
            runs=runs,
            suspend_after=self.settings.suspend_after,
        )
        if waited.state == "suspended":
            observe.suspended(attempt.namespace, attempt.task, kind.value)
        return WaitReply(state=waited.state, value=waited.value, sleepSeconds=waited.sleep_seconds)

    async def _own_children(self, attempt: ApiAttempt, ids: list[str]) -> list[str]:
        """The runs to wait on: each must be one this run started."""
        if not ids:
            raise WorkflowError(400, "invalid-body", "a Runs wait needs at least one run id")
        started = set(await self.store.waits.started_runs(attempt.run_id))
        unknown = [run_id for run_id in ids if run_id not in started]
        if unknown:
            raise WorkflowError(
                400,
                "invalid-body",
                f"runs: {unknown[0]!r} is not a run this run started; a run waits only on "
                "its own children",
            )
        return ids

    # -- tokens ------------------------------------------------------------------------------

    def token_url(self, token_id: str) -> str:
        secret = waitpoint_secret(self.settings.token_key, token_id)
        return f"{self.settings.public_url}/v1/tokens/{token_id}/{secret}"

    async def create_token(self, attempt: ApiAttempt, request: TokenRequest) -> Token:
        """The token at `request.seq`: created now, or the one created there before."""
        seq = request.seq
        recorded = await self.store.waits.recorded(attempt.run_id, seq)
        if recorded is None:
            token = await self.store.tokens.create(
                attempt.run_id,
                attempt.namespace,
                seq,
                parse_duration(request.timeout),
                idempotency_key=request.idempotency_key,
                tags=request.tags,
            )
            recorded = await self.store.waits.record(
                attempt.run_id, attempt.number, seq, TOKEN_STEP, {"id": token.id}
            )
        if recorded.name != TOKEN_STEP:
            raise _non_determinism(seq, recorded.name, TOKEN_STEP)
        token_id = str(recorded.value["id"])
        found = await self.store.tokens.get(token_id)
        return Token(
            id=token_id,
            url=self.token_url(token_id),
            timeoutAt=found.timeout_at if found else None,
        )

    async def _token(self, token_id: str | None) -> TokenRecord | None:
        try:
            parsed = str(uuid.UUID(token_id or ""))
        except ValueError:
            return None
        return await self.store.tokens.get(parsed)

    async def token(self, namespace: str, token_id: str) -> TokenRecord:
        token = await self._token(token_id)
        if token is None or token.namespace != namespace:
            raise WorkflowError(
                404, "not-found", f'no waitpoint token "{token_id}" in namespace "{namespace}"'
            )
        return token

    def check_secret(self, token_id: str, secret: str) -> None:
        """A token URL's secret, checked with the key alone (constant time, no database):
        a wrong one is the same 404 as an unknown token."""
        if not secret_matches(self.settings.token_key, token_id, secret):
            raise WorkflowError(404, "not-found", f'no waitpoint token "{token_id[:64]}"')

    async def complete(
        self, token_id: str, data: Any, *, namespace: str | None = None, secret: str | None = None
    ) -> TokenState:
        """Complete a token, named by its namespace (an authorized caller) or by the secret
        of its URL. The first completion wins; a later one changes nothing and says so."""
        token = await self._token(token_id)
        known = token is not None and (namespace is None or token.namespace == namespace)
        if secret is not None:
            known = known and secret_matches(self.settings.token_key, token_id, secret)
        if token is None or not known:
            raise WorkflowError(404, "not-found", f'no waitpoint token "{token_id}"')
        completed, now = await self.store.tokens.complete(token.id, data)
        assert completed is not None
        return token_state(completed, completed_now=now)


def token_state(token: TokenRecord, *, completed_now: bool | None = None) -> TokenState:
    return TokenState(
        id=token.id,
        namespace=token.namespace,
        run=token.run,
        task=token.task,
        state=token.state,
        createdAt=token.created_at,
        timeoutAt=token.timeout_at,
        completedAt=token.completed_at,
        tags=token.tags or [],
        data=token.data,
        completedNow=completed_now,
    )
