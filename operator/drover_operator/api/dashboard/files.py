"""The dashboard's static files (its script and styles, and the npm libraries copied in by
scripts/dashboard-assets.sh), each served at `<root>/<file name>`, beside the pages."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from drover_operator.api.dashboard.render import SECURITY_HEADERS, STATIC

log = logging.getLogger(__name__)

#: One of the npm libraries, there when scripts/dashboard-assets.sh has run.
VENDOR_FILE = "htmx.min.js"
_TYPES = {".js": "text/javascript", ".css": "text/css"}


def _file(path: Path) -> web.Response:
    return web.Response(
        body=path.read_bytes(),
        content_type=_TYPES.get(path.suffix, "application/octet-stream"),
        charset="utf-8",
        headers={**SECURITY_HEADERS, "Cache-Control": "max-age=3600"},
    )


def _handler(path: Path) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(_: web.Request) -> web.Response:
        return _file(path)

    return serve


def add_routes(app: web.Application, root: str) -> None:
    found = {p.name: p for p in sorted(STATIC.rglob("*")) if p.suffix in _TYPES}
    if VENDOR_FILE not in found:
        log.warning("the dashboard's libraries are missing: run scripts/dashboard-assets.sh")
    for name, path in found.items():
        app.router.add_get(f"{root}/{name}", _handler(path))
