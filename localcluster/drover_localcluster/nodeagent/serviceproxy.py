"""The `kubernetes` Service, for pods inside images: `https://kubernetes.default.svc` works.

In a cluster, `kubernetes.default.svc` resolves (cluster DNS) to the `kubernetes` Service's
ClusterIP, port 443, which kube-proxy forwards to the API server. Clients in pods rely on
that name: kopf's in-cluster login, for one, connects to `https://kubernetes.default.svc`
whatever `KUBERNETES_SERVICE_HOST` says. Here there is neither DNS nor kube-proxy, so each
node agent forwards TCP from port 443 of a loopback address of its own (any of 127.0.0.0/8
works on Linux without configuration) to the API server, and the `/etc/hosts` of its image
pods maps the Service's names to that address. TLS passes through untouched: the API
server's certificate names `kubernetes.default.svc`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
_PORT = 443


def _candidates(seed: str) -> list[str]:
    """Loopback addresses derived from `seed`, outside 127.0.0.0/24 (which others use)."""
    found = []
    for attempt in range(16):
        digest = hashlib.sha256(f"{seed}/{attempt}".encode()).digest()
        found.append(f"127.{1 + digest[0] % 254}.{digest[1]}.{1 + digest[2] % 254}")
    return found


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class ApiServerProxy:
    """Forwards `<loopback address>:443` to the API server."""

    def __init__(self, apiserver_port: int, seed: str) -> None:
        self.apiserver_port = apiserver_port
        self.seed = seed
        self.address: str | None = None
        self._server: asyncio.Server | None = None

    async def start(self) -> str | None:
        """Listen; the address, or None when no port 443 could be had (pods in images then
        reach the API server only through KUBERNETES_SERVICE_HOST)."""
        last: OSError | None = None
        for address in _candidates(self.seed):
            try:
                self._server = await asyncio.start_server(self._forward, address, _PORT)
            except OSError as exc:
                last = exc
                continue
            self.address = address
            return address
        log.warning("no loopback address for the kubernetes Service (%s)", last)
        return None

    async def _forward(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        try:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.apiserver_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, upstream_w), _pipe(upstream_r, client_w))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
