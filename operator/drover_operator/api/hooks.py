"""Signed webhooks: `POST /v1/hooks/{namespace}/{task}` starts a run of a Task that declares
`spec.webhook`. The body is the payload; the request must carry the body's HMAC-SHA256 under
the Task's key (`X-Drover-Signature-256: sha256=<hex>`, or GitHub's `X-Hub-Signature-256`);
the idempotency header's value, when present, is the run's idempotency key, so a redelivery
starts nothing new. Nothing is created unless the signature is right.
"""

from __future__ import annotations

import json

from aiohttp import web

from drover.protocol.runs import MAX_PAYLOAD_BYTES, TriggerRequest
from drover_operator.api.errors import ProblemError
from drover_operator.api.limits import LIMITS
from drover_operator.api.state import STORE, TRIGGERS
from drover_operator.api.triggers import read_body, started_view, storable
from drover_operator.domain.triggers import LABEL_WEBHOOK
from drover_operator.domain.webhooks import SIGNATURE_HEADERS, valid


async def hook(request: web.Request) -> web.Response:
    namespace, task = request.match_info["namespace"], request.match_info["task"]
    await request.app[LIMITS].check(request, f"hook:{namespace}/{task}")
    webhook = await request.app[STORE].webhooks.get(namespace, task)
    if webhook is None:
        raise ProblemError(404, "not-found", f'no webhook for Task "{task}" in "{namespace}"')
    raw = await read_body(request, MAX_PAYLOAD_BYTES)
    signature = next((request.headers[h] for h in SIGNATURE_HEADERS if h in request.headers), None)
    if not valid(webhook.key, raw, signature):
        raise ProblemError(
            401,
            "bad-signature",
            f"{SIGNATURE_HEADERS[0]} must be sha256=<hex HMAC-SHA256 of the body> under the"
            " Task's webhook key",
        )
    payload = storable(json.loads(raw)) if raw else None
    body = TriggerRequest(
        payload=payload, idempotency_key=request.headers.get(webhook.idempotency_header) or None
    )
    started = await request.app[TRIGGERS].trigger(
        namespace, task, body, labels={LABEL_WEBHOOK: "true"}
    )
    return web.json_response(
        started_view(started, namespace, task), status=200 if started.cached else 201
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/hooks/{namespace}/{task}", hook)
