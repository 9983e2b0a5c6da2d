"""Settings of one node agent."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Host variables a pod's processes inherit; everything else comes from the pod spec, as in a
# container. The agent's own environment may hold admin credentials (KUBECONFIG), so it is
# never passed through wholesale.
PASSTHROUGH_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "VIRTUAL_ENV",
    "XDG_CACHE_HOME",
    "GOPATH",
    "GOCACHE",
    "GOMODCACHE",
    "GOFLAGS",
    "GOPROXY",
)


@dataclass(frozen=True)
class AgentConfig:
    """Everything a node agent needs; written by the local cluster, read at start-up."""

    node_name: str
    kubeconfig: Path
    state_dir: Path
    cluster_ca: Path
    apiserver_url: str
    serving_cert: Path
    serving_key: Path
    kubelet_port: int
    kubernetes_version: str
    marker: str
    # Prepended to PATH in pods, so `python` is the project's Python environment.
    path_prepend: tuple[str, ...] = ()
    # PYTHONPATH in pods: the checkout stands in for a task image's code.
    python_path: tuple[str, ...] = ()
    # The OCI layout of images whose pods run inside them (`make images`: dist/images/oci);
    # pods with other images run as host processes.
    image_store: Path | None = None
    # Where images' root filesystems are unpacked, shared by clusters (built once per image).
    rootfs_cache: Path | None = None
    lease_duration_s: int = 40
    lease_renew_s: float = 2.0
    status_update_s: float = 5.0
    labels: dict[str, str] = field(default_factory=dict)
    # Registered with the Node (`{"key", "value", "effect"}`): a node only some pods may use.
    taints: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in self.__dict__.items()
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> AgentConfig:
        paths = {"kubeconfig", "state_dir", "cluster_ca", "serving_cert", "serving_key"}
        paths |= {"image_store", "rootfs_cache"}
        values: dict[str, object] = {}
        for key, value in data.items():
            if key in paths and value is not None:
                values[key] = Path(str(value))
            elif key in ("path_prepend", "python_path") and isinstance(value, list):
                values[key] = tuple(str(v) for v in value)
            else:
                values[key] = value
        return cls(**values)  # type: ignore[arg-type]
