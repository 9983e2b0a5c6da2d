"""ServiceAccount credentials for pods: bound tokens from the TokenRequest API.

A container inside an image gets its projected token volume as the kubelet writes it (see
volumes.py): `project` writes the token file and renews it. A host-process container cannot
have a volume mounted at `/var/run/secrets/...`, so when the ServiceAccount admission plugin
gave its pod a projected token (automountServiceAccountToken not false), `setup` writes a
kubeconfig into the pod's directory instead and `KUBECONFIG` points at it. Either way software
in the pod acts under its own RBAC identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.models.authentication_v1 import BoundObjectReference, TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod, ServiceAccountToken

from drover_localcluster.kubeconfig import write_kubeconfig

log = logging.getLogger(__name__)

_DEFAULT_EXPIRATION_S = 3607
_MIN_EXPIRATION_S = 600


def projected_token_expiration(pod: Pod) -> int | None:
    """The expiration of the pod's projected ServiceAccount token, None when it has none."""
    assert pod.spec is not None
    for volume in pod.spec.volumes or []:
        sources = volume.projected.sources if volume.projected else None
        for source in sources or []:
            if source.serviceAccountToken is not None:
                return source.serviceAccountToken.expirationSeconds or _DEFAULT_EXPIRATION_S
    return None


class TokenManager:
    """Requests and refreshes bound ServiceAccount tokens for the pods on this node."""

    def __init__(self, client: AsyncClient, server: str, ca: Path) -> None:
        self.client = client
        self.server = server
        self.ca = ca
        self._refreshers: dict[str, list[asyncio.Task[None]]] = {}

    async def setup(self, pod: Pod, directory: Path) -> dict[str, str]:
        """Write the pod's kubeconfig; the env vars that point at it (empty when none)."""
        expiration = projected_token_expiration(pod)
        if expiration is None:
            return {}
        expiration = max(expiration, _MIN_EXPIRATION_S)
        kubeconfig = directory / "serviceaccount" / "kubeconfig"
        token_file = kubeconfig.with_name("token")
        token = await self._request(pod, expiration)
        self._write(pod, kubeconfig, token_file, token)
        self._keep_fresh(pod, self._refresh(pod, kubeconfig, token_file, expiration))
        return {"KUBECONFIG": str(kubeconfig)}

    async def project(
        self, pod: Pod, path: Path, expiration: int | None, audience: str | None
    ) -> None:
        """Write a token bound to the pod at `path` (a projected volume's file); renewed."""
        seconds = max(expiration or _DEFAULT_EXPIRATION_S, _MIN_EXPIRATION_S)
        _write_token(path, await self._request(pod, seconds, audience))

        async def renew() -> None:
            _write_token(path, await self._request(pod, seconds, audience))

        self._keep_fresh(pod, self._renew_every(seconds, renew))

    def _keep_fresh(self, pod: Pod, renewal: Coroutine[Any, Any, None]) -> None:
        assert pod.metadata is not None and pod.metadata.uid is not None
        self._refreshers.setdefault(pod.metadata.uid, []).append(asyncio.create_task(renewal))

    async def forget(self, uid: str) -> None:
        for task in self._refreshers.pop(uid, []):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _request(self, pod: Pod, expiration: int, audience: str | None = None) -> str:
        assert pod.metadata is not None and pod.spec is not None
        request = ServiceAccountToken(
            metadata=ObjectMeta(),
            spec=TokenRequestSpec(
                audiences=[audience] if audience else [],
                expirationSeconds=expiration,
                boundObjectRef=BoundObjectReference(
                    kind="Pod", apiVersion="v1", name=pod.metadata.name, uid=pod.metadata.uid
                ),
            ),
        )
        response = await self.client.create(
            request, pod.spec.serviceAccountName or "default", namespace=pod.metadata.namespace
        )
        assert response.status is not None and response.status.token
        return response.status.token

    def _write(self, pod: Pod, kubeconfig: Path, token_file: Path, token: str) -> None:
        assert pod.metadata is not None and pod.spec is not None
        _write_token(token_file, token, mode=0o600)
        user = f"system:serviceaccount:{pod.metadata.namespace}:{pod.spec.serviceAccountName}"
        write_kubeconfig(
            kubeconfig,
            server=self.server,
            ca=self.ca,
            user=user,
            token=token,
            token_file=token_file,
            namespace=pod.metadata.namespace,
        )

    async def _refresh(self, pod: Pod, kubeconfig: Path, token_file: Path, expiration: int) -> None:
        async def renew() -> None:
            self._write(pod, kubeconfig, token_file, await self._request(pod, expiration))

        await self._renew_every(expiration, renew)

    async def _renew_every(self, expiration: int, renew: Callable[[], Awaitable[None]]) -> None:
        """Renew at 80% of the lifetime, as the kubelet does for projected tokens."""
        while True:
            await asyncio.sleep(expiration * 0.8)
            try:
                await renew()
            except Exception:
                log.exception("refreshing the ServiceAccount token failed; retrying in 10s")
                await asyncio.sleep(10)


def _write_token(path: Path, token: str, mode: int = 0o644) -> None:
    """Replace the file in one rename: a reader never sees half a token. 0644 like the
    kubelet's projected token (readable by the container's user, whichever it is)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(token)
    tmp.chmod(mode)
    tmp.replace(path)
