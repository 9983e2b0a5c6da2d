"""ServiceAccount credentials for pods, as a kubeconfig instead of a mounted token.

A container here is a host process, so the projected token volume cannot be mounted at
`/var/run/secrets/...`. Instead, when the ServiceAccount admission plugin gave the pod a
projected token (automountServiceAccountToken not false), the agent requests a token bound
to the pod through the TokenRequest API and writes a kubeconfig into the pod's directory;
`KUBECONFIG` points at it, so software in the pod acts under its own RBAC identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

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
        self._refreshers: dict[str, asyncio.Task[None]] = {}

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
        assert pod.metadata is not None and pod.metadata.uid is not None
        self._refreshers[pod.metadata.uid] = asyncio.create_task(
            self._refresh(pod, kubeconfig, token_file, expiration)
        )
        return {"KUBECONFIG": str(kubeconfig)}

    async def forget(self, uid: str) -> None:
        task = self._refreshers.pop(uid, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _request(self, pod: Pod, expiration: int) -> str:
        assert pod.metadata is not None and pod.spec is not None
        request = ServiceAccountToken(
            metadata=ObjectMeta(),
            spec=TokenRequestSpec(
                audiences=[],
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
        token_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = token_file.with_suffix(".tmp")
        tmp.write_text(token)
        tmp.chmod(0o600)
        tmp.replace(token_file)
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
        """Renew at 80% of the lifetime, as the kubelet does for projected tokens."""
        while True:
            await asyncio.sleep(expiration * 0.8)
            try:
                self._write(pod, kubeconfig, token_file, await self._request(pod, expiration))
            except Exception:
                log.exception("refreshing the ServiceAccount token failed; retrying in 10s")
                await asyncio.sleep(10)
