"""Pinned versions and locations, overridable from the environment.

The versions here are the single place where the local cluster's components are pinned.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default) or default


def cache_root() -> Path:
    """Where built binaries are cached, outside any checkout."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(_env("DROVER_CACHE_DIR", str(Path(base) / "drover")))


@dataclass(frozen=True)
class Versions:
    """Component versions. etcd follows what the pinned Kubernetes release is tested with."""

    kubernetes: str = field(default_factory=lambda: _env("DROVER_KUBERNETES_VERSION", "1.35.4"))
    etcd: str = field(default_factory=lambda: _env("DROVER_ETCD_VERSION", "3.6.16"))
    helm: str = field(default_factory=lambda: _env("DROVER_HELM_VERSION", "3.22.0"))
    # promtool only (metrics tests). Newer releases need module versions the proxy may not
    # serve yet.
    prometheus: str = field(default_factory=lambda: _env("DROVER_PROMETHEUS_VERSION", "0.313.5"))


@dataclass(frozen=True)
class Timing:
    """How fast the node reports itself, and how fast the control plane notices it is gone.

    These are shorter than a production kubelet's so tests observing a lost node stay short;
    the lease is still renewed several times per grace period, so a busy machine doesn't flap.
    """

    lease_duration_s: int = 40
    lease_renew_s: float = 2.0
    node_status_update_s: float = 5.0
    node_monitor_grace_s: int = int(_env("DROVER_NODE_MONITOR_GRACE_SECONDS", "16"))
    node_monitor_period_s: int = 2
    ready_timeout_s: float = float(_env("DROVER_CLUSTER_READY_TIMEOUT", "120"))


NODE_NAME = "drover-local"
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
