"""Rendering the dashboard: the Jinja2 templates (autoescaped), where the dashboard's root is
as the browser sees it, the security headers, and errors as the viewer should read them."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from drover.protocol.timestamps import now
from drover_operator.api.state import PREFIXES
from drover_operator.errors import RequestError

HERE = Path(__file__).parent
STATIC = HERE / "static"
#: Where the dashboard is served: directly, and through the Kubernetes API server. Every
#: page, fragment, stream, action and file is one level below (`/ui/run?namespace=&name=`),
#: with relative links: through the API server that makes each request `get` (or `create`)
#: on the one resource `ui` of api.drover.dev, never a subresource, and leaves the links
#: alone (its proxy rewrites absolute paths in HTML to its own address).
ROOTS = ("/ui", f"{PREFIXES[1]}/ui")

#: Scripts, styles and connections from the dashboard's own origin only; no inline scripts
#: or styles (the waterfall is SVG attributes, charts are drawn by our own script).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _pretty(value: Any) -> str:
    """JSON for people (escaped by the template like any text)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _took(start: dt.datetime | None, end: dt.datetime | None) -> str:
    if start is None:
        return ""
    seconds = ((end or now()) - start).total_seconds()
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}s"


ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    enable_async=True,
)
ENV.filters.update(pretty=_pretty, when=_when, seconds=_seconds)


def run_link(namespace: str, name: str) -> str:
    """A run's page, relative to the dashboard's root (as every link of the dashboard)."""
    return f"./run?{urlencode({'namespace': namespace, 'name': name})}"


ENV.globals.update(took=_took, run_link=run_link)


def root_of(request: web.Request) -> str:
    """The dashboard's root as the browser reached it (`/ui`, or the aggregated path)."""
    path = request.path
    return next((r for r in ROOTS[::-1] if path == r or path.startswith(f"{r}/")), ROOTS[0])


def is_fragment(request: web.Request) -> bool:
    return request.headers.get("HX-Request") == "true"


async def render(
    request: web.Request, template: str, status: int = 200, **context: Any
) -> web.Response:
    text = await ENV.get_template(template).render_async(root=".", query=request.query, **context)
    return web.Response(
        text=text, status=status, content_type="text/html", headers=SECURITY_HEADERS
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def page(handler: Handler) -> Handler:
    """Refusals and bad input as the viewer reads them: a page saying what is wrong, or (for
    htmx) the sentence alone, which the dashboard's script shows."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except RequestError as exc:
            if is_fragment(request):
                return web.Response(text=exc.message, status=exc.status, headers=SECURITY_HEADERS)
            return await render(
                request, "error.html", status=exc.status, status_code=exc.status, detail=exc.message
            )

    return wrapped
