"""Starting and stopping runs over HTTP: trigger, batch trigger, replay, cancel.

Served at `/v1/namespaces/{ns}/...` (bearer tokens, in-cluster callers) and, through the
Kubernetes API server, at `/apis/api.drover.dev/v1/namespaces/{ns}/...`. The caller is
authorized (the Kubernetes verb on `taskruns.drover.dev` in the namespace) before the body
is read.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from drover.protocol.runs import (
    MAX_BATCH_BYTES,
    MAX_PAYLOAD_BYTES,
    BatchRequest,
    ReplayRequest,
    RunView,
    TriggerRequest,
)
from drover_operator.api.auth import authorize
from drover_operator.api.errors import ProblemError
from drover_operator.api.history import view_of
from drover_operator.api.state import PREFIXES, STORE, TRIGGERS
from drover_operator.domain.validation import has_nul
from drover_operator.engine.triggers import Started


async def read_body(request: web.Request, limit: int) -> bytes:
    """The body, refused (413) past `limit` bytes without reading more than that."""
    if request.content_length is not None and request.content_length > limit:
        raise ProblemError(413, "too-large", f"the body is over {limit} bytes")
    # `read(n)` returns what has arrived so far, up to n: a body sent in pieces (chunked, or
    # slow) is read to its end, or one byte past the limit.
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await request.content.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise ProblemError(413, "too-large", f"the body is over {limit} bytes")
    return b"".join(chunks)


async def read_json(request: web.Request, limit: int) -> Any:
    raw = await read_body(request, limit)
    return storable(json.loads(raw)) if raw else None


def storable(value: Any) -> Any:
    """`value`, refused (422) if Postgres could not store it: a NUL character (`\\u0000`) in
    any string or key. Caught here, before a TaskRun exists: a TaskRun with one can only be
    recorded as Failed."""
    if has_nul(value):
        raise ProblemError(422, "invalid-body", "the body contains a NUL character (\\u0000)")
    return value


def _payload_size(payload: Any, where: str = "payload") -> None:
    if payload is not None and len(json.dumps(payload)) > MAX_PAYLOAD_BYTES:
        raise ProblemError(
            413,
            "too-large",
            f"{where} is over {MAX_PAYLOAD_BYTES} bytes: store large inputs elsewhere and pass"
            " a reference",
        )


def started_view(started: Started, namespace: str, task: str) -> dict[str, Any]:
    view = RunView(
        name=started.name,
        id=started.id,
        namespace=namespace,
        task=task,
        phase=started.phase,
        cached=started.cached,
    )
    return view.model_dump(mode="json", by_alias=True, exclude_defaults=True) | {
        "cached": started.cached
    }


async def trigger(request: web.Request) -> web.Response:
    namespace, task = request.match_info["namespace"], request.match_info["task"]
    await authorize(request, namespace, "create")
    body = TriggerRequest.model_validate(await read_json(request, MAX_PAYLOAD_BYTES + 64 * 1024))
    _payload_size(body.payload)
    started = await request.app[TRIGGERS].trigger(namespace, task, body)
    return web.json_response(
        started_view(started, namespace, task), status=200 if started.cached else 201
    )


async def batch(request: web.Request) -> web.Response:
    namespace, task = request.match_info["namespace"], request.match_info["task"]
    await authorize(request, namespace, "create")
    body = BatchRequest.model_validate(await read_json(request, MAX_BATCH_BYTES))
    for index, item in enumerate(body.items):
        _payload_size(item.payload, f"items[{index}].payload")
    started = await request.app[TRIGGERS].batch(namespace, task, body.items)
    items = [started_view(s, namespace, task) for s in started]
    created = any(not s.cached for s in started)
    return web.json_response({"items": items}, status=201 if created else 200)


async def replay(request: web.Request) -> web.Response:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    await authorize(request, namespace, "create")
    raw = await read_json(request, MAX_PAYLOAD_BYTES + 1024)
    body = ReplayRequest.model_validate(raw or {})
    _payload_size(body.payload)
    triggers = request.app[TRIGGERS]
    source = await triggers.run(namespace, name)
    started = await triggers.replay(namespace, name, body.payload)
    return web.json_response(started_view(started, namespace, source.task), status=201)


async def cancel(request: web.Request) -> web.Response:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    await authorize(request, namespace, "patch", name=name)
    await request.app[TRIGGERS].cancel(namespace, name)
    record = await request.app[STORE].runs.by_name(namespace, name)
    assert record is not None
    return web.json_response(await view_of(request, record))


def add_routes(app: web.Application) -> None:
    for prefix in PREFIXES:
        tasks = f"{prefix}/namespaces/{{namespace}}/tasks/{{task}}"
        runs = f"{prefix}/namespaces/{{namespace}}/taskruns/{{name}}"
        app.router.add_post(f"{tasks}/trigger", trigger)
        app.router.add_post(f"{tasks}/batch", batch)
        app.router.add_post(f"{runs}/replay", replay)
        app.router.add_post(f"{runs}/cancel", cancel)
