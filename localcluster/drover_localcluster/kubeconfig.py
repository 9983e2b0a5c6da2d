"""Kubeconfig files for the local cluster's users."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca: Path,
    user: str,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    token: str | None = None,
    token_file: Path | None = None,
    namespace: str | None = None,
) -> Path:
    """Write a single-context kubeconfig, atomically (readers never see half a file)."""
    creds: dict[str, Any] = {}
    if client_cert is not None and client_key is not None:
        creds["client-certificate"] = str(client_cert)
        creds["client-key"] = str(client_key)
    if token is not None:
        creds["token"] = token
    if token_file is not None:
        # client-go re-reads tokenFile, so refreshed tokens are picked up by long-lived clients.
        creds["tokenFile"] = str(token_file)
    context: dict[str, Any] = {"cluster": "drover-local", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "drover-local",
                "cluster": {"server": server, "certificate-authority": str(ca)},
            }
        ],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": "drover-local", "context": context}],
        "current-context": "drover-local",
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path
