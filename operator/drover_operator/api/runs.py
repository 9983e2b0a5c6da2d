"""`/v1/runs/{run_id}/...`: what a running attempt calls, authenticated by its token.

A token from another run is refused (403); one whose attempt is no longer the run's active
attempt — a zombie after a stall, or after the run finished — is refused with 409 and
changes nothing, and reads nothing.

Untrusted input, in order: the token is verified first, with the replicas' HMAC key alone (no
database, constant time), before a byte of the body is read; only a genuine token for this
run gets its body read and parsed (up to 4 MiB), and only then is the database asked whether
its attempt is still the active one. Checkpoints keep their one round trip: the database's
part of the check (active attempt, stored token hash) is in the insert's statement.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web

from drover.protocol import MIN_PROTOCOL_VERSION, PROTOCOL_HEADER, PROTOCOL_VERSION
from drover.protocol.wire import (
    MAX_METADATA_BYTES,
    MAX_OUTPUT_BYTES,
    MAX_STEP_VALUE_BYTES,
    Completion,
    Failure,
    HeartbeatReply,
    LogBatch,
    MetadataPatch,
    RunContext,
    StepBatch,
    StepRecord,
)
from drover_operator.api.errors import ProblemError
from drover_operator.api.state import LIFECYCLE, STORE
from drover_operator.crd import TaskSpec, parse_duration
from drover_operator.domain.attempts import AttemptState, Outcome
from drover_operator.domain.records import ApiAttempt
from drover_operator.domain.tokens import matches, token_hash, verify
from drover_operator.store.runapi import StepConflictError


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        raise ProblemError(400, "invalid-json", "a JSON body is required")
    return json.loads(raw)


def check_protocol(request: web.Request) -> None:
    """The runner's protocol version is one this operator serves (no header: version 1)."""
    value = request.headers.get(PROTOCOL_HEADER, "1").strip()
    if not value.isdigit() or not MIN_PROTOCOL_VERSION <= int(value) <= PROTOCOL_VERSION:
        raise ProblemError(
            400,
            "unsupported-protocol",
            f"{PROTOCOL_HEADER} {value[:16]!r} is not served here: this operator serves "
            f"versions {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}; upgrade the operator",
        )


def credential(request: web.Request) -> tuple[str, int, str]:
    """(run id, attempt, token) of a genuine attempt token for the run in the path, checked
    without the database and without reading the body."""
    check_protocol(request)
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise ProblemError(401, "unauthenticated", "an `Authorization: Bearer <token>` is required")
    token = header.removeprefix("Bearer ").strip()
    key = request.app[LIFECYCLE].policy.signing_key
    claimed = verify(key, token) if key is not None else None
    if claimed is None:
        raise ProblemError(401, "unauthenticated", "the token is not a valid Drover attempt token")
    try:
        run_id = str(uuid.UUID(request.match_info["run_id"]))
    except ValueError:
        raise ProblemError(404, "not-found", "no such run") from None
    if claimed[0] != run_id:
        raise ProblemError(403, "forbidden", "the token belongs to another run")
    return run_id, claimed[1], token


async def authenticate(request: web.Request) -> ApiAttempt:
    """The attempt, if the token is genuine and its attempt is the run's active one."""
    run_id, number, token = credential(request)
    row = await request.app[STORE].runapi.attempt(run_id, number)
    if row is None or not matches(token, row.token_hash):
        raise ProblemError(401, "unauthenticated", "the token is not valid for this run")
    if not (row.active and row.current):
        raise ProblemError(
            409,
            "attempt-inactive",
            f"attempt {row.try_number} (execution {row.number}) is no longer the run's active"
            " attempt",
        )
    return row


async def context(request: web.Request) -> web.Response:
    attempt = await authenticate(request)
    task = TaskSpec.model_validate(attempt.task_spec)
    steps = await request.app[STORE].runapi.steps(attempt.run_id)
    heartbeat = attempt.heartbeat_timeout or parse_duration(task.timeouts.heartbeat)
    body = RunContext(
        run_id=attempt.run_id,
        name=attempt.name,
        namespace=attempt.namespace,
        task=attempt.task,
        attempt=attempt.try_number,
        execution=attempt.number,
        max_attempts=task.retry.max_attempts,
        payload=attempt.payload,
        scheduled_time=attempt.scheduled_at,
        metadata=attempt.metadata or {},
        heartbeat_seconds=heartbeat.total_seconds(),
        steps=[StepRecord(seq=s.seq, name=s.name, value=s.value) for s in steps],
        protocol=PROTOCOL_VERSION,
    )
    return web.json_response(text=body.model_dump_json(by_alias=True))


async def heartbeat(request: web.Request) -> web.Response:
    attempt = await authenticate(request)
    alive = await request.app[STORE].runapi.heartbeat(attempt.run_id, attempt.number)
    cancel = not alive or attempt.cancel_requested
    return web.json_response(HeartbeatReply(cancel=cancel).model_dump(by_alias=True))


async def put_steps(request: web.Request) -> web.Response:
    run_id, number, token = credential(request)  # before a byte of the body is read
    raw = await request.read()
    if not raw:
        raise ProblemError(400, "invalid-json", "a JSON body is required")
    batch = StepBatch.model_validate_json(raw)
    if len(raw) > MAX_STEP_VALUE_BYTES:  # only then can a single value be over the cap
        for record in batch.steps:
            if len(json.dumps(record.value)) > MAX_STEP_VALUE_BYTES:
                limit = MAX_STEP_VALUE_BYTES
                message = f"step #{record.seq}: checkpoint value over {limit} bytes"
                raise ProblemError(413, "too-large", message)
    store = request.app[STORE].runapi
    try:
        if len(batch.steps) == 1:
            # The runner's case, on every step's critical path: one statement checks that the
            # attempt is active and stores the checkpoint; a refusal takes the slow path.
            step = batch.steps[0]
            if await store.put_step_checked(run_id, number, token_hash(token), step):
                return web.json_response({"stored": 1})
        attempt = await authenticate(request)
        await store.put_steps(attempt.run_id, attempt.try_number, batch.steps)
    except StepConflictError as exc:
        raise ProblemError(409, "non-determinism", str(exc)) from None
    return web.json_response({"stored": len(batch.steps)})


async def complete(request: web.Request) -> web.Response:
    attempt = await authenticate(request)
    body = Completion.model_validate(await _body(request))
    if len(json.dumps(body.output)) > MAX_OUTPUT_BYTES:
        raise ProblemError(
            413, "too-large", "output over 1 MiB: store it elsewhere and return a reference"
        )
    outcome = Outcome(
        AttemptState.SUCCEEDED,
        "Completed",
        "the task returned",
        retryable=False,
        exit_code=0,
        output=body.output,
    )
    await request.app[LIFECYCLE].end_attempt(attempt.run_id, attempt.number, outcome)
    return web.json_response({"phase": "Succeeded"})


async def fail(request: web.Request) -> web.Response:
    attempt = await authenticate(request)
    body = Failure.model_validate(await _body(request))
    outcome = Outcome(
        AttemptState.FAILED,
        body.type,
        body.message,
        retryable=body.retryable,
        traceback=body.traceback,
    )
    ended = await request.app[LIFECYCLE].end_attempt(attempt.run_id, attempt.number, outcome)
    return web.json_response({"phase": ended.end.phase.value if ended else None})


async def get_metadata(request: web.Request) -> web.Response:
    attempt = await authenticate(request)
    return web.json_response(await request.app[STORE].runapi.metadata(attempt.run_id))


async def patch_metadata(request: web.Request) -> web.Response:
    attempt = await authenticate(request)
    body = MetadataPatch.model_validate(await _body(request))
    store = request.app[STORE].runapi
    current = await store.metadata(attempt.run_id)
    merged = {k: v for k, v in {**current, **body.set}.items() if v is not None}
    if len(json.dumps(merged)) > MAX_METADATA_BYTES:
        raise ProblemError(413, "too-large", "metadata would be over 64 KiB")
    stored = await store.patch_metadata(attempt.run_id, body.set)
    return web.json_response(stored)


async def post_logs(request: web.Request) -> web.Response:
    attempt = await authenticate(request)
    body = LogBatch.model_validate(await _body(request))
    await request.app[STORE].runapi.append_logs(attempt.run_id, attempt.number, body.lines)
    return web.json_response({"stored": len(body.lines)}, status=202)


def add_routes(app: web.Application) -> None:
    prefix = "/v1/runs/{run_id}"
    app.router.add_get(f"{prefix}/context", context)
    app.router.add_post(f"{prefix}/heartbeat", heartbeat)
    app.router.add_put(f"{prefix}/steps", put_steps)
    app.router.add_post(f"{prefix}/complete", complete)
    app.router.add_post(f"{prefix}/fail", fail)
    app.router.add_get(f"{prefix}/metadata", get_metadata)
    app.router.add_patch(f"{prefix}/metadata", patch_metadata)
    app.router.add_post(f"{prefix}/logs", post_logs)
