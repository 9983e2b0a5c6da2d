"""etcd, kube-apiserver, kube-controller-manager and kube-scheduler as local processes.

Flags follow controller-runtime's envtest (pkg/internal/testing/controlplane), plus what a
node needs: Node+RBAC authorization with the NodeRestriction admission plugin (so the node
agent acts with a kubelet's identity and rights), kubelet client certificates so the API
server can proxy `kubectl logs` to the node agent, the ServiceAccount admission plugin and
the token controller, since pods here get real ServiceAccount identities.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from drover_localcluster.binaries import Binaries
from drover_localcluster.kubeconfig import write_kubeconfig
from drover_localcluster.pki import CertificateAuthority, CertPair, service_account_keys
from drover_localcluster.processes import spawn, wait_until
from drover_localcluster.settings import SERVICE_ACCOUNT_ISSUER, SERVICE_CIDR, Timing


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int


# Who asked for what, one line per request once answered; watches left out (long-lived).
_AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
  - level: None
    verbs: ["watch"]
  - level: Metadata
"""


class ControlPlane:
    """The control plane of one local cluster rooted at `directory`."""

    def __init__(
        self,
        directory: Path,
        binaries: Binaries,
        ports: Ports,
        timing: Timing,
        *,
        durable: bool = False,
        controller_manager_qps: tuple[int, int] | None = None,
        audit: bool = False,
    ) -> None:
        self.directory = directory
        # An audit log of every request but watches (who asked what): benchmarks count
        # each client's requests from it.
        self.audit = audit
        # fsync as in production (benchmarks); tests run faster without.
        self.durable = durable
        # (qps, burst) of the controller-manager's client; None keeps its default (20, 30).
        self.controller_manager_qps = controller_manager_qps
        self.binaries = binaries
        self.ports = ports
        self.timing = timing
        self.pki_dir = directory / "pki"
        self.logs = directory / "logs"
        self.ca = CertificateAuthority(self.pki_dir)
        self.server = f"https://127.0.0.1:{ports.apiserver}"
        self.admin = self.ca.issue("admin", "drover-admin", orgs=("system:masters",), client=True)
        self.admin_kubeconfig = directory / "kubeconfig"

    # -- certificates and kubeconfigs ------------------------------------------------------

    def _prepare(self) -> dict[str, Path]:
        serving = self.ca.issue(
            "apiserver",
            "kube-apiserver",
            hosts=(
                "127.0.0.1",
                "localhost",
                "10.0.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            server=True,
        )
        kubelet_client = self.ca.issue(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            orgs=("system:masters",),
            client=True,
        )
        front_proxy = self.ca.issue("front-proxy-client", "front-proxy-client", client=True)
        sa = service_account_keys(self.pki_dir)
        write_kubeconfig(
            self.admin_kubeconfig,
            server=self.server,
            ca=self.ca.pair.cert,
            user="admin",
            client_cert=self.admin.cert,
            client_key=self.admin.key,
        )
        kcm = self.component_kubeconfig("controller-manager", "system:kube-controller-manager")
        sched = self.component_kubeconfig("scheduler", "system:kube-scheduler")
        return {
            "serving_cert": serving.cert,
            "serving_key": serving.key,
            "kubelet_cert": kubelet_client.cert,
            "kubelet_key": kubelet_client.key,
            "front_proxy_cert": front_proxy.cert,
            "front_proxy_key": front_proxy.key,
            "sa_pub": sa.cert,
            "sa_key": sa.key,
            "kcm": kcm,
            "sched": sched,
        }

    def component_kubeconfig(self, stem: str, user: str, orgs: tuple[str, ...] = ()) -> Path:
        """A client-certificate kubeconfig for a cluster component or node."""
        pair: CertPair = self.ca.issue(stem, user, orgs=orgs, client=True)
        return write_kubeconfig(
            self.directory / "kubeconfigs" / f"{stem}.kubeconfig",
            server=self.server,
            ca=self.ca.pair.cert,
            user=user,
            client_cert=pair.cert,
            client_key=pair.key,
        )

    # -- processes -------------------------------------------------------------------------

    def start(self, marker: str) -> dict[str, int]:
        """Start every component and wait until each is healthy; returns their pids."""
        files = self._prepare()
        pids: dict[str, int] = {}
        pids["etcd"] = self._start_etcd(marker)
        pids["kube-apiserver"] = self._start_apiserver(marker, files)
        pids["kube-controller-manager"] = self._start_controller_manager(marker, files)
        pids["kube-scheduler"] = self._start_scheduler(marker, files)
        for name, port in (
            ("kube-controller-manager", self.ports.controller_manager),
            ("kube-scheduler", self.ports.scheduler),
        ):
            wait_until(
                _healthz(port),
                what=name,
                timeout=self.timing.ready_timeout_s,
                log=self.logs / f"{name}.log",
                pid=pids[name],
            )
        return pids

    def start_one(self, name: str, marker: str) -> int:
        """(Re)start one component, e.g. after a fault killed it; returns its pid."""
        files = self._prepare()
        if name == "etcd":
            return self._start_etcd(marker)
        starters = {
            "kube-apiserver": self._start_apiserver,
            "kube-controller-manager": self._start_controller_manager,
            "kube-scheduler": self._start_scheduler,
        }
        return starters[name](marker, files)

    def _start_etcd(self, marker: str) -> int:
        client = f"http://127.0.0.1:{self.ports.etcd_client}"
        peer = f"http://127.0.0.1:{self.ports.etcd_peer}"
        log = self.logs / "etcd.log"
        pid = spawn(
            [
                self.binaries.etcd,
                f"--data-dir={self.directory / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                *([] if self.durable else ["--unsafe-no-fsync=true"]),
                "--log-level=warn",
            ],
            log=log,
            marker=marker,
        )
        wait_until(
            lambda: json.loads(_get(f"{client}/health", None)).get("health") == "true",
            what="etcd",
            timeout=self.timing.ready_timeout_s,
            log=log,
            pid=pid,
        )
        return pid

    def _start_apiserver(self, marker: str, f: dict[str, Path]) -> int:
        ca = self.ca.pair.cert
        log = self.logs / "kube-apiserver.log"
        pid = spawn(
            [
                self.binaries.kube_apiserver,
                f"--etcd-servers=http://127.0.0.1:{self.ports.etcd_client}",
                f"--secure-port={self.ports.apiserver}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                f"--cert-dir={self.pki_dir}",
                f"--tls-cert-file={f['serving_cert']}",
                f"--tls-private-key-file={f['serving_key']}",
                f"--client-ca-file={ca}",
                "--authorization-mode=Node,RBAC",
                # On top of the defaults; ValidatingAdmissionPolicy (a default since 1.30) is
                # named because Drover's payload policy and the chart's Task policy need it.
                "--enable-admission-plugins=NodeRestriction,ValidatingAdmissionPolicy",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={f['sa_pub']}",
                f"--service-account-signing-key-file={f['sa_key']}",
                f"--kubelet-client-certificate={f['kubelet_cert']}",
                f"--kubelet-client-key={f['kubelet_key']}",
                f"--kubelet-certificate-authority={ca}",
                "--kubelet-preferred-address-types=InternalIP",
                # Front-proxy (aggregation layer) settings; components that delegate
                # authentication read them from the extension-apiserver-authentication map.
                f"--requestheader-client-ca-file={ca}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={f['front_proxy_cert']}",
                f"--proxy-client-key-file={f['front_proxy_key']}",
                "--profiling=false",
                *self._audit_flags(),
            ],
            log=log,
            marker=marker,
        )
        context = self.admin_ssl_context()
        wait_until(
            lambda: _get(f"{self.server}/readyz", context) == "ok",
            what="kube-apiserver",
            timeout=self.timing.ready_timeout_s,
            log=log,
            pid=pid,
        )
        return pid

    def _start_controller_manager(self, marker: str, f: dict[str, Path]) -> int:
        t = self.timing
        return spawn(
            [
                self.binaries.kube_controller_manager,
                f"--kubeconfig={f['kcm']}",
                f"--authentication-kubeconfig={f['kcm']}",
                f"--authorization-kubeconfig={f['kcm']}",
                f"--secure-port={self.ports.controller_manager}",
                "--bind-address=127.0.0.1",
                "--leader-elect=false",
                "--controllers=*",
                # Each controller acts under its own ServiceAccount and bootstrap role, as in a
                # real cluster; the manager's own identity lacks most controllers' rights.
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={f['sa_key']}",
                f"--root-ca-file={self.ca.pair.cert}",
                f"--cluster-signing-cert-file={self.ca.pair.cert}",
                f"--cluster-signing-key-file={self.ca.pair.key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--node-monitor-grace-period={t.node_monitor_grace_s}s",
                f"--node-monitor-period={t.node_monitor_period_s}s",
                "--profiling=false",
                *self._controller_manager_client_limits(),
            ],
            log=self.logs / "kube-controller-manager.log",
            marker=marker,
        )

    @property
    def audit_log(self) -> Path:
        return self.logs / "audit.log"

    def _audit_flags(self) -> list[str]:
        if not self.audit:
            return []
        policy = self.directory / "audit-policy.yaml"
        policy.write_text(_AUDIT_POLICY)
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-maxsize=0",  # one file, never rotated: readers keep their offsets
        ]

    def _controller_manager_client_limits(self) -> list[str]:
        if self.controller_manager_qps is None:
            return []
        qps, burst = self.controller_manager_qps
        return [f"--kube-api-qps={qps}", f"--kube-api-burst={burst}"]

    def _start_scheduler(self, marker: str, f: dict[str, Path]) -> int:
        return spawn(
            [
                self.binaries.kube_scheduler,
                f"--kubeconfig={f['sched']}",
                f"--authentication-kubeconfig={f['sched']}",
                f"--authorization-kubeconfig={f['sched']}",
                f"--secure-port={self.ports.scheduler}",
                "--bind-address=127.0.0.1",
                "--leader-elect=false",
                "--profiling=false",
            ],
            log=self.logs / "kube-scheduler.log",
            marker=marker,
        )

    def admin_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca.pair.cert))
        context.load_cert_chain(str(self.admin.cert), str(self.admin.key))
        return context


def _healthz(port: int) -> Callable[[], bool]:
    return lambda: _get(f"https://127.0.0.1:{port}/healthz", None) == "ok"


def _get(url: str, context: ssl.SSLContext | None) -> str:
    if context is None and url.startswith("https://"):
        # Component health endpoints use self-signed serving certs; only liveness matters.
        context = ssl._create_unverified_context()
    with urllib.request.urlopen(url, timeout=2, context=context) as response:
        body: bytes = response.read()
        return body.decode()
