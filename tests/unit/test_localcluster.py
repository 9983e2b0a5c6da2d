"""Pure pieces of the local cluster: wrapper modules, env expansion, status shapes, PKI."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

from cryptography import x509
from lightkube.models.core_v1 import Container

from drover_localcluster.binaries import etcd_wrapper_gomod, kubernetes_wrapper_gomod
from drover_localcluster.nodeagent.podenv import container_argv, expand
from drover_localcluster.nodeagent.status import ContainerRecord, Terminated, pod_status
from drover_localcluster.pki import CertificateAuthority

KUBE_MOD = """module k8s.io/kubernetes

go 1.25.0

godebug default=go1.25

require (
\tk8s.io/api v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
)
"""


def test_kubernetes_wrapper_pins_staging_modules() -> None:
    mod = kubernetes_wrapper_gomod(KUBE_MOD, "1.35.4")
    assert "require k8s.io/kubernetes v1.35.4" in mod
    assert "\tk8s.io/api => k8s.io/api v0.35.4" in mod
    assert "\tk8s.io/client-go => k8s.io/client-go v0.35.4" in mod
    assert "go 1.25.0" in mod and "godebug default=go1.25" in mod
    assert "./staging" not in mod


def test_etcd_wrapper_pins_sibling_modules_and_drops_forbidden() -> None:
    upstream = """module go.etcd.io/etcd/server/v3

go 1.24

replace (
\tgo.etcd.io/etcd/api/v3 => ../api
\tgo.etcd.io/etcd/client/pkg/v3 => ../client/pkg
)

replace go.etcd.io/etcd => ./FORBIDDEN_DEPENDENCY
"""
    mod = etcd_wrapper_gomod(upstream, "3.6.16")
    assert "\tgo.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 v3.6.16" in mod
    assert "\tgo.etcd.io/etcd/client/pkg/v3 => go.etcd.io/etcd/client/pkg/v3 v3.6.16" in mod
    assert "FORBIDDEN" not in mod


def test_env_expansion_follows_kubernetes_rules() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$$(A)", env) == "$(A)"
    assert expand("$(UNKNOWN)", env) == "$(UNKNOWN)"
    assert expand("$A", env) == "$A"
    container = Container(name="c", command=["echo", "$(B)"], args=["$(A)"])
    assert container_argv(container, env) == ["echo", "two", "1"]


def test_pod_status_shapes() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    record = ContainerRecord("main", "img")
    waiting = pod_status(
        phase="Pending",
        start_time=start,
        init=[],
        main=[record],
        existing_conditions=[{"type": "PodScheduled", "status": "True"}],
    )
    assert waiting["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert next(c["type"] for c in waiting["conditions"]) == "PodScheduled"

    record.set_running(start, "drover://1")
    running = pod_status(
        phase="Running",
        start_time=start,
        init=[],
        main=[record],
        existing_conditions=waiting["conditions"],
    )
    ready = {c["type"]: c["status"] for c in running["conditions"]}
    assert ready["Ready"] == "True" and running["containerStatuses"][0]["ready"] is True

    record.set_terminated(Terminated(1, "Error", start, start + dt.timedelta(seconds=1)))
    record.set_running(start + dt.timedelta(seconds=2), "drover://2")
    restarted = record.to_api()
    assert restarted["restartCount"] == 1
    assert restarted["lastState"]["terminated"]["exitCode"] == 1


def test_certificates_chain_to_the_ca(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    pair = ca.issue("server", "srv", hosts=("127.0.0.1", "localhost"), server=True)
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    context = ssl.create_default_context(cafile=str(ca.pair.cert))
    context.load_cert_chain(str(pair.cert), str(pair.key))  # key matches the cert
    # Issuing again reuses the files.
    assert ca.issue("server", "srv").cert.read_bytes() == pair.cert.read_bytes()
