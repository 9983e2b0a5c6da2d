"""Where the client sends requests, and as whom.

- `api_url=` (or, in a pod with a ServiceAccount token, `DROVER_API_URL`): straight to the
  operator's API, with a bearer token (`token=`, or the pod's ServiceAccount token).
- Otherwise through the Kubernetes API server (`/apis/api.drover.dev/v1/...`), with the
  current kubeconfig context's credentials, whatever they are (client certificates, tokens,
  OIDC, exec plugins), or the pod's in-cluster credentials.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from lightkube.config.client_adapter import ConnectionParams
from lightkube.config.kubeconfig import KubeConfig

from drover.protocol.names import ENV_API_URL, ENV_NAMESPACE

#: The aggregated API, served through the Kubernetes API server.
AGGREGATED = "/apis/api.drover.dev/v1"
DIRECT = "/v1"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
ENV_API_CA_FILE = "DROVER_API_CA_FILE"


@dataclass(frozen=True)
class Connection:
    """How to reach the API: httpx client arguments, the path prefix, the default
    namespace."""

    prefix: str
    namespace: str
    params: dict[str, Any]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def connect(
    *,
    api_url: str | None = None,
    token: str | None = None,
    ca_file: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    namespace: str | None = None,
    timeout: float = 30.0,
) -> Connection:
    bearer = token or _read(SERVICE_ACCOUNT / "token")
    # In a pod with a ServiceAccount token, DROVER_API_URL (if the chart set it) is the way.
    in_pod = os.environ.get(ENV_API_URL) if bearer and not (kubeconfig or context) else None
    direct = api_url or in_pod
    if direct:
        verify: Any = ca_file or os.environ.get(ENV_API_CA_FILE) or True
        return Connection(
            prefix=DIRECT,
            namespace=namespace
            or os.environ.get(ENV_NAMESPACE)
            or _read(SERVICE_ACCOUNT / "namespace")
            or "default",
            params={
                "base_url": direct.rstrip("/"),
                "headers": {"Authorization": f"Bearer {bearer}"} if bearer else {},
                "verify": verify,
                "timeout": timeout,
            },
        )
    config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
    single = config.get(context_name=context)
    assert single is not None
    params = ConnectionParams(timeout=httpx2.Timeout(timeout)).httpx_params(single)
    return Connection(
        prefix=AGGREGATED, namespace=namespace or single.namespace or "default", params=params
    )
