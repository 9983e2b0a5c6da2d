"""`drover dashboard`'s local proxy: it forwards the dashboard's paths only, with the
connection's credentials and never the browser's, refuses other hosts (DNS rebinding) and
posts from other origins. The upstream here is a plain HTTP server recording what reaches
it; the proxy against the real operator and API server is tested end to end
(tests/e2e/test_dashboard.py)."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from drover.client.connection import DIRECT, Connection
from drover_cli.proxy import DashboardProxy


class _Upstream(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str, dict[str, str], bytes]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append((self.command, self.path, dict(self.headers), body))
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Security-Policy", "script-src 'self'")
        self.send_header("Set-Cookie", "leak=1")
        self.end_headers()
        self.wfile.write(b"<p>dashboard</p>")

    def do_GET(self) -> None:
        self._record()

    def do_POST(self) -> None:
        self._record()


@pytest.fixture
def proxy() -> Iterator[DashboardProxy]:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    _Upstream.seen.clear()
    connection = Connection(
        prefix=DIRECT,
        namespace="shop",
        params={
            "base_url": f"http://127.0.0.1:{upstream.server_address[1]}",
            "headers": {"Authorization": "Bearer the-users-token"},
        },
    )
    served = DashboardProxy(connection)
    served.start()
    yield served
    served.shutdown()
    upstream.shutdown()


def _call(
    proxy: DashboardProxy, method: str, path: str, headers: dict[str, str] | None = None
) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request(method, path, body=b"a=1" if method == "POST" else None, headers=headers or {})
    return conn.getresponse()


def test_the_url_and_the_root_redirect(proxy: DashboardProxy) -> None:
    assert proxy.url == f"http://127.0.0.1:{proxy.port}/ui/runs?namespace=shop"
    response = _call(proxy, "GET", "/")
    assert response.status == 302 and response.getheader("Location") == proxy.url


def test_dashboard_paths_go_through_with_the_users_credentials_only(
    proxy: DashboardProxy,
) -> None:
    response = _call(
        proxy,
        "GET",
        "/ui/runs?namespace=shop",
        {
            "Cookie": "session=browser",
            "Authorization": "Bearer from-the-browser",
            "HX-Request": "true",
        },
    )
    assert response.status == 200 and response.read() == b"<p>dashboard</p>"
    assert response.getheader("Content-Security-Policy") == "script-src 'self'"
    assert response.getheader("Set-Cookie") is None
    [(method, path, headers, _)] = _Upstream.seen
    assert (method, path) == ("GET", "/ui/runs?namespace=shop")
    assert headers["Authorization"] == "Bearer the-users-token"
    assert "Cookie" not in headers and headers["HX-Request"] == "true"


def test_other_paths_hosts_and_origins_are_refused_and_never_forwarded(
    proxy: DashboardProxy,
) -> None:
    own = f"http://127.0.0.1:{proxy.port}"
    refused = {
        "another API path": _call(proxy, "GET", "/v1/namespaces/shop/taskruns"),
        "a path beside the root": _call(proxy, "GET", "/uix"),
        "another host": _call(proxy, "GET", "/ui/runs", {"Host": "attacker.example:80"}),
        "a post without origin": _call(proxy, "POST", "/ui/cancel?namespace=shop&name=r"),
        "a post from elsewhere": _call(
            proxy, "POST", "/ui/cancel?namespace=shop&name=r", {"Origin": "https://evil.example"}
        ),
    }
    assert {what: r.status for what, r in refused.items()} == {
        "another API path": 404,
        "a path beside the root": 404,
        "another host": 403,
        "a post without origin": 403,
        "a post from elsewhere": 403,
    }
    assert _Upstream.seen == []
    posted = _call(proxy, "POST", "/ui/cancel?namespace=shop&name=r", {"Origin": own})
    assert posted.status == 200
    assert [(m, p, b) for m, p, _, b in _Upstream.seen] == [
        ("POST", "/ui/cancel?namespace=shop&name=r", b"a=1")
    ]
