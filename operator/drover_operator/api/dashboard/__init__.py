"""The web dashboard: server-rendered pages (Jinja2, htmx) under `/ui/` on the API's port,
also through the Kubernetes API server at `/apis/api.drover.dev/v1/ui/`. Every page,
fragment, event stream and action is authorized as the viewer, as the JSON API is."""

from __future__ import annotations

from aiohttp import web

from drover_operator.api.dashboard import actions, files, live, pages
from drover_operator.api.dashboard.render import ROOTS


def add_routes(app: web.Application) -> None:
    live.install(app)
    for root in ROOTS:
        pages.add_routes(app, root)
        actions.add_routes(app, root)
        live.add_routes(app, root)
        files.add_routes(app, root)
