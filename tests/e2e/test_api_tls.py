"""Task pods reach the run API over TLS: the operator gives each SDK pod the CA that verifies
its certificate (in the pod's token Secret), and the runner refuses a server that CA does
not vouch for — failing at once rather than sending its token."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lightkube.resources.core_v1 import Pod, Secret

from tests.conftest import E2ECluster
from tests.e2e.operator_support import OperatorProcess, run, task, wait_phase

pytestmark = pytest.mark.e2e

GREETS = {
    "image": "busybox",
    "entrypoint": "tests.e2e.sdk_tasks:greets",
    "retry": {"maxAttempts": 1},
}


def _another_ca(path: Path) -> Path:
    """A valid CA certificate that did not sign the operator's."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone else")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _operator(
    cluster: E2ECluster, namespace: str, database: str, ca: Path, name: str
) -> Iterator[OperatorProcess]:
    log = cluster.local.directory / "logs" / f"operator-{namespace}-{name}.log"
    process = OperatorProcess(cluster, namespace, database, log)
    env = {
        "DROVER_API_URL": f"https://127.0.0.1:{process.tls_port}",
        "DROVER_API_CA_FILE": str(ca),
    }
    process.start(extra_env=env)
    yield process
    process.stop()
    print(f"--- operator log ({log}) ---\n{process.log_tail()}")


@pytest.fixture
def tls_operator(
    cluster: E2ECluster, namespace: str, database: str, drover_crds: None, tmp_path: Path
) -> Iterator[OperatorProcess]:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(cluster.local.ca_bundle())
    yield from _operator(cluster, namespace, database, ca, "tls")


def test_sdk_pods_use_https_with_the_ca_they_are_given(
    cluster: E2ECluster, namespace: str, tls_operator: OperatorProcess
) -> None:
    c = cluster.client
    task(c, namespace, "greet", GREETS)
    run(c, namespace, "greet-1", "greet", payload={"name": "tls"})
    st = wait_phase(c, namespace, "greet-1", "Succeeded", "Failed")
    assert st["phase"] == "Succeeded", st
    assert st["output"] == "hello tls"
    pod = c.get(Pod, "greet-1-a1", namespace=namespace)
    assert pod.spec is not None
    env = {e.name: e for e in pod.spec.containers[0].env or []}
    assert env["DROVER_API_URL"].value == f"https://127.0.0.1:{tls_operator.tls_port}"
    source = env["DROVER_API_CA"].valueFrom
    assert source is not None and source.secretKeyRef is not None
    assert source.secretKeyRef.name is not None
    secret = c.get(Secret, source.secretKeyRef.name, namespace=namespace)
    assert secret.data is not None and "ca.crt" in secret.data and "token" in secret.data


def test_a_runner_refuses_a_server_its_ca_does_not_vouch_for(
    cluster: E2ECluster, namespace: str, database: str, drover_crds: None, tmp_path: Path
) -> None:
    ca = _another_ca(tmp_path / "other-ca.crt")
    for process in _operator(cluster, namespace, database, ca, "wrong-ca"):
        c = cluster.client
        task(c, namespace, "greet", GREETS)
        run(c, namespace, "greet-1", "greet", payload={"name": "tls"})
        st = wait_phase(c, namespace, "greet-1", "Succeeded", "Failed")
        assert st["phase"] == "Failed"
        assert st["attempts"][0]["exitCode"] == 1
        # It never got as far as the API: nothing of the run reached the operator.
        assert "output" not in st
        assert process.proc is not None
