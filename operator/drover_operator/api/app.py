"""The HTTP server: the run API (task pods), the trigger and history API (applications),
webhooks, the aggregated API's discovery, `/healthz`, `/readyz`, `/metrics` and
`/v1/openapi.json`.

One application, served on plain HTTP (`DROVER_API_PORT`) and, when a certificate is
configured, on HTTPS (`DROVER_API_TLS_PORT`) — the port the Kubernetes API server forwards
`api.drover.dev` requests to.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from drover.protocol.wire import MAX_REQUEST_BYTES
from drover_operator.api import (
    dashboard,
    discovery,
    history,
    hooks,
    overviews,
    runs,
    triggers,
    workflows,
)
from drover_operator.api.auth import AUTH, Authenticator
from drover_operator.api.errors import problems
from drover_operator.api.limits import LIMITS, RateLimits
from drover_operator.api.openapi import document
from drover_operator.api.state import LIFECYCLE, STORE, TRIGGERS, WORKFLOWS
from drover_operator.engine.lifecycle import RunLifecycle
from drover_operator.engine.triggers import Triggers
from drover_operator.engine.workflows import Workflows
from drover_operator.store import Store
from drover_operator.telemetry import metrics as drover_metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listen:
    """Where the API listens: plain HTTP, and HTTPS when a certificate is given."""

    host: str
    port: int
    tls_port: int = 0
    tls_cert_file: str = ""
    tls_key_file: str = ""


def make_app(
    store: Store,
    lifecycle: RunLifecycle,
    triggers_: Triggers,
    workflows_: Workflows,
    auth: Authenticator,
    limits: RateLimits | None = None,
) -> web.Application:
    app = web.Application(
        middlewares=[drover_metrics.api_latency, problems], client_max_size=MAX_REQUEST_BYTES
    )
    app[STORE] = store
    app[LIFECYCLE] = lifecycle
    app[TRIGGERS] = triggers_
    app[WORKFLOWS] = workflows_
    app[AUTH] = auth
    app[LIMITS] = limits or RateLimits("100/second", "50/second")

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        try:
            await store.ping()
        except Exception as exc:  # any failure means: do not send traffic here
            # The reason goes to the log, not to whoever asks.
            log.warning("not ready: database unavailable: %s", exc)
            return web.Response(status=503, text="database unavailable")
        return web.Response(text="ok")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(document())

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/openapi.json", openapi)
    runs.add_routes(app)
    history.add_routes(app)
    triggers.add_routes(app)
    workflows.add_routes(app)
    overviews.add_routes(app)
    hooks.add_routes(app)
    discovery.add_routes(app)
    dashboard.add_routes(app)
    return app


def tls_context(listen: Listen, auth: Authenticator) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(listen.tls_cert_file, listen.tls_key_file)
    auth.trust_context(context)  # the Kubernetes API server's front-proxy certificate
    return context


async def serve(app: web.Application, listen: Listen) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, listen.host, listen.port).start()
    log.info("API listening on %s:%d", listen.host, listen.port)
    if listen.tls_cert_file:
        context = tls_context(listen, app[AUTH])
        await web.TCPSite(runner, listen.host, listen.tls_port, ssl_context=context).start()
        log.info("API listening on %s:%d (TLS)", listen.host, listen.tls_port)
    return runner
