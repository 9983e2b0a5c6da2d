"""What a viewer may do from the dashboard: cancel a run, replay it (with an edited payload),
complete a waitpoint token. Each is authorized as the JSON API authorizes it (`patch
taskruns`, `create taskruns`, `update waitpoints` of drover.dev in the namespace), so the
dashboard lets a viewer do exactly what their Kubernetes identity may.

Forms are posted by htmx, which sends `HX-Request`: a header a page of another site cannot
send without a CORS preflight this server never grants, so a viewer's browser cannot be made
to post here from elsewhere.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from drover.protocol.runs import MAX_PAYLOAD_BYTES
from drover.protocol.workflows import MAX_TOKEN_DATA_BYTES
from drover_operator.api.auth import authorize
from drover_operator.api.dashboard.pages import required
from drover_operator.api.dashboard.render import is_fragment, page, render, run_link
from drover_operator.api.errors import ProblemError
from drover_operator.api.state import TRIGGERS, WORKFLOWS

_MAX_FORM = MAX_PAYLOAD_BYTES + 64 * 1024


async def _form(request: web.Request) -> dict[str, str]:
    if not is_fragment(request):
        raise ProblemError(403, "forbidden", "dashboard actions are posted by the dashboard")
    if request.content_length is not None and request.content_length > _MAX_FORM:
        raise ProblemError(413, "too-large", f"the form is over {_MAX_FORM} bytes")
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _json_field(form: dict[str, str], name: str, limit: int) -> Any:
    text = form.get(name, "").strip()
    if not text:
        return None
    if len(text.encode()) > limit:
        raise ProblemError(413, "too-large", f"{name} is over {limit} bytes")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProblemError(422, "invalid-json", f"{name} is not JSON: {exc}") from None


@page
async def cancel(request: web.Request) -> web.StreamResponse:
    namespace, name = required(request, "namespace", "name")
    await authorize(request, namespace, "patch", name=name)
    await _form(request)
    await request.app[TRIGGERS].cancel(namespace, name)
    return await render(request, "message.html", text=f"Cancel requested for {name}.", link=None)


@page
async def replay(request: web.Request) -> web.StreamResponse:
    namespace, name = required(request, "namespace", "name")
    await authorize(request, namespace, "create")
    payload = _json_field(await _form(request), "payload", MAX_PAYLOAD_BYTES)
    started = await request.app[TRIGGERS].replay(namespace, name, payload)
    return await render(
        request,
        "message.html",
        text=f"Replayed {name} as",
        link=(run_link(namespace, started.name), started.name),
    )


@page
async def complete_token(request: web.Request) -> web.StreamResponse:
    namespace, token_id = required(request, "namespace", "token")
    await authorize(request, namespace, "update", "waitpoints", name=token_id)
    data = _json_field(await _form(request), "data", MAX_TOKEN_DATA_BYTES)
    state = await request.app[WORKFLOWS].complete(token_id, data, namespace=namespace)
    done = "Completed" if state.completed_now else f"Already {state.state.replace('_', ' ')}:"
    return await render(request, "message.html", text=f"{done} token {token_id}.", link=None)


def add_routes(app: web.Application, root: str) -> None:
    app.router.add_post(f"{root}/cancel", cancel)
    app.router.add_post(f"{root}/replay", replay)
    app.router.add_post(f"{root}/complete-token", complete_token)
