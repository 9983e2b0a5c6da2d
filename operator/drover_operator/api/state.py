"""What the API's handlers share, as typed application keys."""

from __future__ import annotations

from aiohttp import web

from drover_operator.engine.lifecycle import RunLifecycle
from drover_operator.engine.triggers import Triggers
from drover_operator.engine.workflows import Workflows
from drover_operator.store import Store

#: The aggregated API's group and version, served through the Kubernetes API server.
API_GROUP = "api.drover.dev"
API_VERSION = "v1"
#: Where the run API for applications is served: directly (`/v1`, bearer tokens), and
#: through the Kubernetes API server (any Kubernetes identity).
PREFIXES = ("/v1", f"/apis/{API_GROUP}/{API_VERSION}")

STORE: web.AppKey[Store] = web.AppKey("store", Store)
LIFECYCLE: web.AppKey[RunLifecycle] = web.AppKey("lifecycle", RunLifecycle)
TRIGGERS: web.AppKey[Triggers] = web.AppKey("triggers", Triggers)
WORKFLOWS: web.AppKey[Workflows] = web.AppKey("workflows", Workflows)
