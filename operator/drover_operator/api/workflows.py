"""Workflow calls and waitpoint tokens over HTTP.

- `/v1/runs/{run_id}/children`, `/children/batch`, `/waits`, `/tokens`: what a running task
  calls (its attempt token), each at a position of its code.
- `POST /v1/tokens/{id}/{secret}`: complete a token through its URL (the secret in the URL
  is the credential; an unknown token or a wrong secret is the same 404).
- `/v1/namespaces/{ns}/waitpoints[/{id}[/complete]]`: list, read and complete tokens as a
  Kubernetes identity (RBAC on the virtual resource `waitpoints.drover.dev`: `list`, `get`,
  `update`), also through the Kubernetes API server as `api.drover.dev`.
"""

from __future__ import annotations

import json

from aiohttp import web

from drover.protocol.runs import MAX_BATCH_BYTES, MAX_PAYLOAD_BYTES
from drover.protocol.workflows import (
    MAX_TOKEN_DATA_BYTES,
    ChildBatchRequest,
    Children,
    ChildRequest,
    TokenCompletion,
    TokenList,
    TokenRequest,
    WaitRequest,
)
from drover_operator.api.auth import authorize
from drover_operator.api.errors import ProblemError
from drover_operator.api.limits import LIMITS
from drover_operator.api.runs import authenticate
from drover_operator.api.state import PREFIXES, STORE, WORKFLOWS
from drover_operator.api.triggers import read_body, read_json
from drover_operator.domain.waits import TokenState as TokenStates
from drover_operator.engine.workflows import token_state

RESOURCE = "waitpoints"


def _json(model: object, status: int = 200) -> web.Response:
    text = model.model_dump_json(by_alias=True)  # type: ignore[attr-defined]
    return web.json_response(text=text, status=status)


async def child(request: web.Request) -> web.Response:
    attempt = await authenticate(request)
    body = ChildRequest.model_validate(await read_json(request, MAX_PAYLOAD_BYTES + 64 * 1024))
    items = await request.app[WORKFLOWS].children(
        attempt, body.seq, body.task, [body.run], batch=False
    )
    return _json(Children(items=items), status=201)


async def children_batch(request: web.Request) -> web.Response:
    attempt = await authenticate(request)
    body = ChildBatchRequest.model_validate(await read_json(request, MAX_BATCH_BYTES))
    items = await request.app[WORKFLOWS].children(
        attempt, body.seq, body.task, body.items, batch=True
    )
    return _json(Children(items=items), status=201)


async def wait(request: web.Request) -> web.Response:
    attempt = await authenticate(request)
    body = WaitRequest.model_validate(await read_json(request, 256 * 1024))
    return _json(await request.app[WORKFLOWS].wait(attempt, body))


async def create_token(request: web.Request) -> web.Response:
    attempt = await authenticate(request)
    body = TokenRequest.model_validate(await read_json(request, 16 * 1024))
    token = await request.app[WORKFLOWS].create_token(attempt, body)
    return _json(token, status=201)


async def _token_data(request: web.Request) -> object:
    raw = await read_body(request, MAX_TOKEN_DATA_BYTES)
    return json.loads(raw) if raw else None


async def complete_by_url(request: web.Request) -> web.Response:
    """The body is the data, as JSON (none: `null`). Bounded per source and per token, and
    the secret is checked before the body is read."""
    token_id, secret = request.match_info["token"], request.match_info["secret"]
    await request.app[LIMITS].check(request, f"token:{token_id[:64]}")
    workflows = request.app[WORKFLOWS]
    workflows.check_secret(token_id, secret)
    data = await _token_data(request)
    return _json(await workflows.complete(token_id, data, secret=secret))


async def complete(request: web.Request) -> web.Response:
    """`{"data": ...}`."""
    namespace, token_id = request.match_info["namespace"], request.match_info["token"]
    await authorize(request, namespace, "update", RESOURCE, name=token_id)
    raw = await read_body(request, MAX_TOKEN_DATA_BYTES + 1024)
    body = TokenCompletion.model_validate(json.loads(raw) if raw else {})
    if len(json.dumps(body.data)) > MAX_TOKEN_DATA_BYTES:
        raise ProblemError(413, "too-large", f"data is over {MAX_TOKEN_DATA_BYTES} bytes")
    state = await request.app[WORKFLOWS].complete(token_id, body.data, namespace=namespace)
    return _json(state)


async def get_token(request: web.Request) -> web.Response:
    namespace, token_id = request.match_info["namespace"], request.match_info["token"]
    await authorize(request, namespace, "get", RESOURCE, name=token_id)
    return _json(token_state(await request.app[WORKFLOWS].token(namespace, token_id)))


async def list_tokens(request: web.Request) -> web.Response:
    """`?state=waiting|completed|timed_out|canceled&task=&run=&limit=` (newest first), in the
    path's namespace or (without one) in every namespace."""
    namespace = request.match_info.get("namespace")
    await authorize(request, namespace, "list", RESOURCE)
    query = request.query
    state = query.get("state") or None
    if state is not None and state not in {s.value for s in TokenStates}:
        allowed = ", ".join(s.value for s in TokenStates)
        raise ProblemError(400, "invalid-query", f"state: must be one of {allowed}")
    limit_text = query.get("limit", "100")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
        raise ProblemError(400, "invalid-query", "limit: must be an integer from 1 to 1000")
    tokens = await request.app[STORE].tokens.list(
        namespace,
        state=TokenStates(state) if state else None,
        task=query.get("task") or None,
        run=query.get("run") or None,
        limit=int(limit_text),
    )
    return _json(TokenList(items=[token_state(t) for t in tokens]))


def add_routes(app: web.Application) -> None:
    runs = "/v1/runs/{run_id}"
    app.router.add_post(f"{runs}/children", child)
    app.router.add_post(f"{runs}/children/batch", children_batch)
    app.router.add_post(f"{runs}/waits", wait)
    app.router.add_post(f"{runs}/tokens", create_token)
    app.router.add_post("/v1/tokens/{token}/{secret}", complete_by_url)
    for prefix in PREFIXES:
        app.router.add_get(f"{prefix}/waitpoints", list_tokens)
        waitpoints = f"{prefix}/namespaces/{{namespace}}/waitpoints"
        app.router.add_get(waitpoints, list_tokens)
        app.router.add_get(f"{waitpoints}/{{token}}", get_token)
        app.router.add_post(f"{waitpoints}/{{token}}/complete", complete)
