"""The local end of `drover dashboard`: an HTTP server on 127.0.0.1 that forwards the
browser's requests for the dashboard to the operator, with the user's kubeconfig
credentials (through the Kubernetes API server, or directly with `--api-url`).

Only the dashboard's own paths are forwarded, so the browser cannot use the proxy to reach
anything else with the user's credentials. Requests must name this server as their host
(against DNS rebinding), and those that change something must come from its own pages
(their `Origin`), so another site open in the same browser cannot act as the user.
"""

from __future__ import annotations

import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import httpx2

from drover.client.connection import AGGREGATED, Connection

#: The browser's request headers the dashboard needs (never its cookies or credentials).
_REQUEST_HEADERS = (
    "Accept",
    "Content-Type",
    "HX-Request",
    "HX-Target",
    "HX-Trigger",
    "HX-Current-URL",
    "Last-Event-ID",
    "Cache-Control",
    "If-None-Match",
    "If-Modified-Since",
)
_RESPONSE_HEADERS = (
    "Content-Type",
    "Content-Security-Policy",
    "X-Content-Type-Options",
    "Referrer-Policy",
    "Cache-Control",
    "Location",
    "ETag",
    "Last-Modified",
    "X-Accel-Buffering",
)
_SAFE_METHODS = ("GET", "HEAD")


def dashboard_root(connection: Connection) -> str:
    """Where the operator serves the dashboard, as the connection reaches it."""
    return f"{AGGREGATED}/ui" if connection.prefix == AGGREGATED else "/ui"


class DashboardProxy:
    """Serves the dashboard on 127.0.0.1:`port` (0: any free port) until `shutdown()`."""

    def __init__(self, connection: Connection, port: int = 0) -> None:
        self.connection = connection
        self.root = dashboard_root(connection)
        # No read timeout: event streams stay open (the operator sends keep-alives).
        params = {**connection.params, "timeout": httpx2.Timeout(30.0, read=None)}
        self.upstream = httpx2.Client(**params)
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])

    @property
    def url(self) -> str:
        """The runs page of the connection's namespace."""
        namespace = quote(self.connection.namespace)
        return f"http://127.0.0.1:{self.port}{self.root}/runs?namespace={namespace}"

    def serve_forever(self) -> None:
        try:
            self.server.serve_forever(poll_interval=0.2)
        finally:
            self.server.server_close()
            self.upstream.close()

    def start(self) -> threading.Thread:
        """Serve in a background thread."""
        thread = threading.Thread(target=self.serve_forever, name="dashboard-proxy", daemon=True)
        thread.start()
        return thread

    def shutdown(self) -> None:
        self.server.shutdown()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            # One response per connection: a streamed body simply ends when it closes.
            protocol_version = "HTTP/1.0"
            server_version = "drover-dashboard"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the terminal shows the URL, not every request

            def do_GET(self) -> None:
                proxy.forward(self)

            def do_HEAD(self) -> None:
                proxy.forward(self)

            def do_POST(self) -> None:
                proxy.forward(self)

        return Handler

    @staticmethod
    def _answer(
        request: BaseHTTPRequestHandler, status: HTTPStatus, text: str, location: str = ""
    ) -> None:
        body = text.encode()
        request.send_response(status)
        request.send_header("Content-Type", "text/plain; charset=utf-8")
        request.send_header("Content-Length", str(len(body)))
        if location:
            request.send_header("Location", location)
        request.end_headers()
        request.wfile.write(body)

    def _refusal(self, request: BaseHTTPRequestHandler) -> tuple[HTTPStatus, str] | None:
        host = request.headers.get("Host", "")
        if host not in (f"127.0.0.1:{self.port}", f"localhost:{self.port}"):
            return HTTPStatus.FORBIDDEN, f"unexpected Host {host!r}"
        origin = request.headers.get("Origin")
        if request.command not in _SAFE_METHODS and origin != f"http://{host}":
            return HTTPStatus.FORBIDDEN, "only the dashboard's own pages may post to it"
        path = request.path
        if not (path == self.root or path.startswith((f"{self.root}/", f"{self.root}?"))):
            return HTTPStatus.NOT_FOUND, f"only the dashboard is served here: {self.url}"
        return None

    def forward(self, request: BaseHTTPRequestHandler) -> None:
        if request.path in ("/", ""):
            self._answer(request, HTTPStatus.FOUND, "", location=self.url)
            return
        refusal = self._refusal(request)
        if refusal is not None:
            self._answer(request, *refusal)
            return
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else None
        headers = {h: request.headers[h] for h in _REQUEST_HEADERS if h in request.headers}
        outgoing = self.upstream.build_request(
            request.command, request.path, headers=headers, content=body
        )
        try:
            response = self.upstream.send(outgoing, stream=True)
        except httpx2.HTTPError as exc:
            self._answer(request, HTTPStatus.BAD_GATEWAY, f"cannot reach Drover's API: {exc}")
            return
        try:
            request.send_response(response.status_code)
            for name in _RESPONSE_HEADERS:
                if name in response.headers:
                    request.send_header(name, response.headers[name])
            request.end_headers()
            if request.command != "HEAD":
                for chunk in response.iter_raw():
                    request.wfile.write(chunk)
                    request.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser left (a closed tab, another page)
        except httpx2.HTTPError:
            pass  # the stream from the operator ended; event streams reconnect
        finally:
            response.close()
