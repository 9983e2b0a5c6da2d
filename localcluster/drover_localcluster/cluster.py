"""One local cluster: Postgres, the control plane and node agents, rooted in a directory.

`make cluster-up` and the pytest fixtures both go through `LocalCluster`. Its state (ports,
pids, the process marker) lives in `<dir>/state.json`, so a later command can find and stop
what an earlier one started.
"""

from __future__ import annotations

import base64
import json
import secrets
import shlex
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from drover_localcluster.binaries import Binaries, ensure_binaries
from drover_localcluster.controlplane import ControlPlane, Ports
from drover_localcluster.errors import StartupError
from drover_localcluster.images.build import image_store, rootfs_cache
from drover_localcluster.nodeagent.config import AgentConfig
from drover_localcluster.postgres import Postgres
from drover_localcluster.processes import alive, free_port, spawn, stop_group, sweep, wait_until
from drover_localcluster.settings import NODE_NAME, Timing, Versions

# Names a local operator's HTTPS certificate is good for (the aggregator checks the last).
_OPERATOR_HOSTS = ("localhost", "127.0.0.1", "drover-api.default.svc")

# The checkout this package was installed from (editable): pods import task code from it.
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ClusterState:
    """What a running cluster's later commands need to find it."""

    marker: str
    ports: dict[str, int]
    postgres_port: int
    # Reserved for a locally started operator's HTTP API (DROVER_API_PORT in .cluster/env).
    operator_api_port: int = 0
    # ... and its HTTPS port, where the API server forwards the aggregated API.
    operator_tls_port: int = 0
    # Reserved for the Helm-installed operator's API (.cluster/helm-values.yaml), so it and a
    # `make dev` operator can run side by side: every pod here shares the host's loopback.
    helm_api_port: int = 0
    pids: dict[str, int] = field(default_factory=dict)
    nodes: dict[str, int] = field(default_factory=dict)  # node name -> agent pid
    # etcd and Postgres fsync as in production (benchmarks), rather than not at all (tests).
    durable: bool = False
    # The controller-manager's client rate limit (--kube-api-qps, --kube-api-burst); None is
    # its default (20, 30). Benchmarks raise it so the Job controller is not held back.
    controller_manager_qps: tuple[int, int] | None = None
    # kube-apiserver writes an audit log (logs/audit.log): benchmarks count requests by client.
    audit: bool = False


class LocalCluster:
    def __init__(
        self,
        directory: Path,
        *,
        timing: Timing | None = None,
        durable: bool = False,
        controller_manager_qps: tuple[int, int] | None = None,
        audit: bool = False,
    ) -> None:
        self.directory = directory.resolve()
        self.timing = timing or Timing()
        self.versions = Versions()
        self.state_file = self.directory / "state.json"
        self.state: ClusterState | None = self._load()
        self.durable = self.state.durable if self.state is not None else durable
        self.controller_manager_qps = (
            self.state.controller_manager_qps if self.state is not None else controller_manager_qps
        )
        self.audit = self.state.audit if self.state is not None else audit
        self._binaries: Binaries | None = None
        self._control_plane: ControlPlane | None = None

    # -- paths and derived objects -----------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def env_file(self) -> Path:
        return self.directory / "env"

    @property
    def binaries(self) -> Binaries:
        if self._binaries is None:
            self._binaries = ensure_binaries(self.versions)
        return self._binaries

    @property
    def control_plane(self) -> ControlPlane:
        if self._control_plane is None:
            assert self.state is not None, "cluster is not up"
            self._control_plane = ControlPlane(
                self.directory,
                self.binaries,
                Ports(**self.state.ports),
                self.timing,
                durable=self.state.durable,
                controller_manager_qps=self.state.controller_manager_qps,
                audit=self.state.audit,
            )
        return self._control_plane

    @property
    def postgres(self) -> Postgres:
        assert self.state is not None, "cluster is not up"
        return Postgres(self.directory / "postgres", self.state.postgres_port)

    @property
    def server(self) -> str:
        return self.control_plane.server

    def serving_cert(self, name: str, hosts: tuple[str, ...]) -> tuple[Path, Path]:
        """(certificate, key) for a server on this host, signed by the cluster's CA (which
        `ca_bundle` returns): e.g. an aggregated API server the API server forwards to."""
        pair = self.control_plane.ca.issue(f"{name}-serving", name, hosts=hosts, server=True)
        return pair.cert, pair.key

    def ca_bundle(self) -> bytes:
        return self.control_plane.ca.pair.cert.read_bytes()

    def aggregated_api(
        self, group: str, version: str, port: int, service: str, namespace: str = "default"
    ) -> list[dict[str, Any]]:
        """Manifests registering an API served on this host at `port` (HTTPS, with a
        certificate from `serving_cert` for `<service>.<namespace>.svc`) as `group/version`.

        No pod network here: the Service is an ExternalName for `localhost`, which the API
        server's aggregator dials directly (it does not route through endpoints here)."""
        return [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": service, "namespace": namespace},
                "spec": {
                    "type": "ExternalName",
                    "externalName": "localhost",
                    "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
                },
            },
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": f"{version}.{group}"},
                "spec": {
                    "group": group,
                    "version": version,
                    "service": {"name": service, "namespace": namespace, "port": port},
                    "caBundle": base64.b64encode(self.ca_bundle()).decode(),
                    "groupPriorityMinimum": 1000,
                    "versionPriority": 15,
                },
            },
        ]

    def env(self) -> dict[str, str]:
        """Environment for tools that talk to this cluster (kubectl, helm, the operator)."""
        path = ":".join(str(p) for p in [*self.binaries.directories, Path(sys.executable).parent])
        assert self.state is not None
        if not self.state.operator_tls_port:  # a state file from before this field existed
            self.state.operator_tls_port = free_port()
            self._save()
        api_port = str(self.state.operator_api_port)
        tls_cert, tls_key = self.serving_cert("operator", _OPERATOR_HOSTS)
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "PATH_PREPEND": path,
            "DROVER_DATABASE_URL": self.postgres.dsn,
            "DROVER_LOCALCLUSTER_DIR": str(self.directory),
            # What `drover-operator run` needs here: its API on loopback, where pods reach it.
            "DROVER_API_HOST": "127.0.0.1",
            "DROVER_API_PORT": api_port,
            "DROVER_API_URL": f"http://127.0.0.1:{api_port}",
            # HTTPS for the aggregated API (`kubectl create --raw /apis/api.drover.dev/...`).
            "DROVER_API_TLS_PORT": str(self.state.operator_tls_port),
            "DROVER_API_TLS_CERT_FILE": str(tls_cert),
            "DROVER_API_TLS_KEY_FILE": str(tls_key),
        }

    def helm_values(self, *, api_port: int | None = None) -> dict[str, Any]:
        """Chart values for installing helm/drover onto this cluster.

        Pods here share the host's network (pod IP 127.0.0.1) and Services do not proxy, so
        task pods reach the operator's API on loopback rather than the Service URL. One
        replica, replaced with Recreate on upgrades: two would both bind the same port.
        """
        assert self.state is not None
        if api_port is None:
            if not self.state.helm_api_port:  # a state file from before this field existed
                self.state.helm_api_port = free_port()
                self._save()
            api_port = self.state.helm_api_port
        return {
            "replicas": 1,
            "updateStrategy": {"type": "Recreate"},
            # Host-process pods get no Secret volumes here, so no HTTPS certificate: the
            # aggregated API is served by `make dev`'s operator instead (.cluster/apiservice).
            "aggregation": {"enabled": False},
            "database": {"url": self.postgres.dsn},
            "api": {
                "host": "127.0.0.1",
                "port": api_port,
                "url": f"http://127.0.0.1:{api_port}",
            },
        }

    # -- lifecycle ---------------------------------------------------------------------------

    def up(self) -> None:
        """Start everything, or do nothing when it is already up and healthy."""
        if self.state is not None and self.healthy():
            self._write_env_files()
            return
        if self.state is not None:
            self.down()
        self.directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.directory / "logs", ignore_errors=True)
        self.binaries  # noqa: B018 - build any missing binary before starting anything
        self.state = ClusterState(
            marker=f"drover-{secrets.token_hex(6)}",
            ports={
                "etcd_client": free_port(),
                "etcd_peer": free_port(),
                "apiserver": free_port(),
                "controller_manager": free_port(),
                "scheduler": free_port(),
            },
            postgres_port=free_port(),
            operator_api_port=free_port(),
            operator_tls_port=free_port(),
            helm_api_port=free_port(),
            durable=self.durable,
            controller_manager_qps=self.controller_manager_qps,
            audit=self.audit,
        )
        self._save()
        try:
            self.postgres.start(self.state.marker, durable=self.durable)
            self.state.pids.update(self.control_plane.start(self.state.marker))
            self._save()
            self.start_node(NODE_NAME)
            self._wait_default_service_account()
        except BaseException:
            self.down()
            raise
        self._write_env_files()

    def down(self) -> None:
        """Stop every process of this cluster; nothing is left running."""
        state = self.state
        if state is None:
            return
        for pid in state.nodes.values():
            stop_group(pid, grace=15)
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            if name in state.pids:
                stop_group(state.pids[name])
        self.postgres.stop("immediate")
        sweep(state.marker)
        # A cluster is throwaway: the next `up` starts from empty etcd and Postgres, so the
        # two stores can never disagree. Logs stay for post-mortems until then.
        for data in ("etcd", "postgres", "nodes"):
            shutil.rmtree(self.directory / data, ignore_errors=True)
        self.state_file.unlink(missing_ok=True)
        self.state = None

    def healthy(self) -> bool:
        if self.state is None:
            return False
        pids = [*self.state.pids.values(), *self.state.nodes.values()]
        if not pids or not all(alive(p) for p in pids) or not self.postgres.running():
            return False
        try:
            return bool(self.get("/readyz", raw=True) == "ok")
        except (OSError, StartupError):
            return False

    # -- nodes -------------------------------------------------------------------------------

    def start_node(self, name: str, *, taints: list[dict[str, str]] | None = None) -> int:
        """Start a node agent registering Node `name` (with `taints`, e.g. so that other
        tests' pods are never scheduled there); wait until the Node is Ready."""
        assert self.state is not None
        cp = self.control_plane
        serving = cp.ca.issue(f"node-{name}-serving", name, hosts=("127.0.0.1", name), server=True)
        config = AgentConfig(
            node_name=name,
            kubeconfig=cp.component_kubeconfig(
                f"node-{name}", f"system:node:{name}", orgs=("system:nodes",)
            ),
            state_dir=self.directory / "nodes" / name,
            cluster_ca=cp.ca.pair.cert,
            apiserver_url=cp.server,
            serving_cert=serving.cert,
            serving_key=serving.key,
            kubelet_port=free_port(),
            kubernetes_version=self.versions.kubernetes,
            marker=self.state.marker,
            path_prepend=(str(Path(sys.executable).parent),),
            python_path=(str(REPO_ROOT),),
            image_store=image_store(REPO_ROOT),
            rootfs_cache=rootfs_cache(),
            lease_duration_s=self.timing.lease_duration_s,
            lease_renew_s=self.timing.lease_renew_s,
            status_update_s=self.timing.node_status_update_s,
            taints=list(taints or []),
        )
        config_file = self.directory / "nodes" / f"{name}.json"
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(json.dumps(config.to_json(), indent=2))
        log = self.directory / "logs" / f"node-agent-{name}.log"
        pid = spawn(
            [sys.executable, "-m", "drover_localcluster.nodeagent", str(config_file)],
            log=log,
            marker=self.state.marker,
            cwd=self.directory,
        )
        self.state.nodes[name] = pid
        self._save()
        wait_until(
            lambda: self.node_ready(name),
            what=f"node agent {name}",
            timeout=self.timing.ready_timeout_s,
            log=log,
            pid=pid,
        )
        return pid

    def stop_node(self, name: str, *, kill: bool = False) -> None:
        """Stop a node agent (SIGKILL with `kill`, as a lost node); the Node object stays."""
        assert self.state is not None
        pid = self.state.nodes.pop(name)
        self._save()
        stop_group(pid, grace=0 if kill else 15)

    def record_pid(self, component: str, pid: int) -> None:
        """A restarted control-plane component's new pid (see faults.restart)."""
        assert self.state is not None
        self.state.pids[component] = pid
        self._save()

    def node_ready(self, name: str) -> bool:
        node = self.get(f"/api/v1/nodes/{name}")
        conditions = node.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def crds_established(self, *names: str, timeout: float = 60) -> None:
        """Wait until the named CRDs (none named: every CRD there is) are Established, read
        from the API. (`kubectl wait --for=condition=Established` fails at once, instead of
        waiting, on a CRD so new that its status has no conditions yet.)"""
        path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"

        def established() -> bool:
            crds = [self.get(f"{path}/{n}") for n in names] if names else self.get(path)["items"]
            return bool(crds) and all(
                any(
                    c.get("type") == "Established" and c.get("status") == "True"
                    for c in (crd.get("status") or {}).get("conditions") or []
                )
                for crd in crds
            )

        wait_until(
            established,
            what=f"CRDs {', '.join(names) or '(all)'} Established",
            timeout=timeout,
            log=self.directory / "logs" / "kube-apiserver.log",
        )

    # -- small API helpers (no client library needed to manage the cluster itself) -----------

    def get(self, path: str, *, raw: bool = False) -> Any:
        context: ssl.SSLContext = self.control_plane.admin_ssl_context()
        with urllib.request.urlopen(f"{self.server}{path}", timeout=5, context=context) as r:
            body = r.read().decode()
        return body if raw else json.loads(body)

    def _wait_default_service_account(self) -> None:
        def ready() -> bool:
            try:
                self.get("/api/v1/namespaces/default/serviceaccounts/default")
            except urllib.error.HTTPError:
                return False
            return True

        wait_until(
            ready,
            what="the default ServiceAccount (controller-manager)",
            timeout=self.timing.ready_timeout_s,
            log=self.directory / "logs" / "kube-controller-manager.log",
        )

    # -- files -------------------------------------------------------------------------------

    def _load(self) -> ClusterState | None:
        if not self.state_file.exists():
            return None
        return ClusterState(**json.loads(self.state_file.read_text()))

    def _save(self) -> None:
        assert self.state is not None
        self.state_file.write_text(json.dumps(asdict(self.state), indent=2))

    def _write_env_files(self) -> None:
        env = self.env()
        lines = ["# Written by `make cluster-up`: `source .cluster/env` to use the local cluster."]
        for key, value in env.items():
            if key != "PATH_PREPEND":
                lines.append(f"export {key}={shlex.quote(value)}")
        lines.append(f'export PATH={shlex.quote(env["PATH_PREPEND"])}:"$PATH"')
        self.env_file.write_text("\n".join(lines) + "\n")
        assert self.state is not None
        (self.directory / "apiservice.yaml").write_text(
            "# Registers a `make dev` operator's API with the API server (written by make"
            " cluster-up).\n"
            + "---\n".join(
                json.dumps(m, indent=2) + "\n"
                for m in self.aggregated_api(
                    "api.drover.dev", "v1", self.state.operator_tls_port, "drover-api"
                )
            )
        )
        (self.directory / "helm-values.yaml").write_text(
            "# Values for `helm install drover helm/drover -n drover-system --create-namespace"
            " -f .cluster/helm-values.yaml` on the local cluster (written by make cluster-up).\n"
            "# JSON is YAML; see LocalCluster.helm_values for why these differ from defaults.\n"
            + json.dumps(self.helm_values(), indent=2)
            + "\n"
        )


def wait_seconds(started: float) -> str:
    return f"{time.monotonic() - started:.1f}s"
