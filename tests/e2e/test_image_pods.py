"""Pods whose image is in the node's store run inside it: the image's root filesystem, user,
entrypoint, working directory and environment, volumes, securityContext; and nothing of the
host's files. What a container sees is checked from inside (its output) and from outside (the
kernel's view of its process under /proc, which the node agent does not write)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from lightkube.models.core_v1 import (
    Capabilities,
    Container,
    EmptyDirVolumeSource,
    EnvVar,
    NFSVolumeSource,
    PodSecurityContext,
    PodSpec,
    SecurityContext,
    Volume,
    VolumeMount,
)
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Pod

from drover_localcluster.images.build import Published, rootfs_cache
from drover_localcluster.images.layout import Layout
from tests.conftest import REPO_ROOT, E2ECluster, wait_for
from tests.e2e.pods import get, logs, main_status, wait_gone, wait_phase

pytestmark = pytest.mark.e2e

RUNNER = "ghcr.io/drover-dev/drover-runner:0.1.0"
OPERATOR = "ghcr.io/drover-dev/drover-operator:0.1.0"
EXAMPLES = "ghcr.io/drover-dev/drover-examples:0.1.0"

# What the container reports about its world, as JSON on stdout.
INSPECT = """
import json, os, socket, sys
def can_write(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        return "yes"
    except OSError as exc:
        return exc.strerror
paths = json.loads(sys.argv[1])
print(json.dumps({
    "pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
    "cwd": os.getcwd(), "hostname": socket.gethostname(), "env": dict(os.environ),
    "root": sorted(os.listdir("/")),
    "processes": sorted(p for p in os.listdir("/proc") if p.isdigit()),
    "visible": {p: os.path.exists(p) for p in paths},
    "greeting": open("/data/greeting").read() if os.path.exists("/data/greeting") else None,
    "write_app": can_write("/app/scratch"), "write_etc": can_write("/etc/scratch"),
    "write_data": can_write("/data/scratch"),
}), flush=True)
"""


def image_pod(name: str, namespace: str, containers: list[Container], **spec: Any) -> Pod:
    return Pod(
        metadata=ObjectMeta(name=name, namespace=namespace),
        spec=PodSpec(
            restartPolicy="Never",
            terminationGracePeriodSeconds=2,
            containers=containers,
            volumes=[Volume(name="data", emptyDir=EmptyDirVolumeSource())],
            **spec,
        ),
    )


def inspect(name: str, image: str, paths: list[str], **container: Any) -> Container:
    return Container(
        name=name,
        image=image,
        command=["python", "-c", INSPECT, json.dumps(paths)],
        volumeMounts=[VolumeMount(name="data", mountPath="/data")],
        **container,
    )


def output(cluster: E2ECluster, namespace: str, pod: str, container: str) -> dict[str, Any]:
    text = "".join(cluster.client.log(pod, namespace=namespace, container=container))
    result: dict[str, Any] = json.loads(text)
    return result


def host_pid(p: Pod, container: int = 0) -> int:
    """The container's PID 1 as the host sees it (the node agent's container ID)."""
    assert p.status is not None and p.status.containerStatuses is not None
    return int((p.status.containerStatuses[container].containerID or "").split("://")[1])


def test_a_pod_in_an_image_sees_its_image_and_volumes_and_none_of_the_host(
    cluster: E2ECluster, namespace: str, images: Published, tmp_path: Path
) -> None:
    secret = tmp_path / "host-only.txt"
    secret.write_text("the host's")
    visible = [str(secret), str(REPO_ROOT), "/opt/venv/bin/python", "/app/examples/tasks.py"]
    writer = Container(
        name="writer",
        image=RUNNER,
        command=["python", "-c", "open('/data/greeting', 'w').write('from the init container')"],
        volumeMounts=[VolumeMount(name="data", mountPath="/data")],
    )
    p = image_pod(
        "inside",
        namespace,
        [inspect("main", EXAMPLES, visible, env=[EnvVar(name="GREETING", value="hi")])],
        initContainers=[writer],
    )
    cluster.client.create(p)
    done = wait_phase(cluster.client, namespace, "inside", "Succeeded", "Failed")
    assert done.status is not None and done.status.phase == "Succeeded", main_status(done)
    seen = output(cluster, namespace, "inside", "main")
    assert seen["visible"] == {
        str(secret): False,  # the host's files are not there ...
        str(REPO_ROOT): False,
        "/opt/venv/bin/python": True,  # ... the image's are
        "/app/examples/tasks.py": True,
    }
    assert "opt" in seen["root"] and "app" in seen["root"] and "work" not in seen["root"]
    assert seen["greeting"] == "from the init container"  # one emptyDir, both containers
    # The image's USER, WORKDIR and ENV, the pod's env on top; PID 1 of its own namespace.
    assert (seen["uid"], seen["gid"], seen["cwd"]) == (10001, 10001, "/app")
    assert seen["env"]["PYTHONPATH"] == "/app" and seen["env"]["GREETING"] == "hi"
    assert seen["env"]["HOME"] == "/home/drover" and seen["env"]["PATH"].startswith("/opt/venv/bin")
    assert "VIRTUAL_ENV" not in seen["env"]  # nothing of the node agent's environment
    assert seen["pid"] == 1 and seen["processes"] == ["1"]
    assert seen["hostname"] == "inside"
    # Writable where the image lets UID 10001 write (its /app), and its volume; not /etc.
    assert seen["write_app"] == "yes" and seen["write_data"] == "yes"
    assert seen["write_etc"] == "Permission denied"
    status = main_status(done)
    image = Layout(images.store).find(EXAMPLES)
    assert image is not None and status["imageID"] == image.image_id
    # What the container wrote stayed in its own layer: the shared unpacked image is unchanged.
    unpacked = rootfs_cache() / image.digest.replace(":", "-")
    assert (unpacked / "app" / "examples" / "tasks.py").is_file()
    assert not (unpacked / "app" / "scratch").exists()


def test_security_context_user_groups_read_only_root_and_capabilities(
    cluster: E2ECluster, namespace: str, images: Published
) -> None:
    context = PodSecurityContext(
        runAsUser=4242, runAsGroup=4343, fsGroup=5000, supplementalGroups=[6000]
    )
    locked = SecurityContext(
        readOnlyRootFilesystem=True,
        allowPrivilegeEscalation=False,
        capabilities=Capabilities(drop=["ALL"]),
    )
    container = inspect("main", RUNNER, [], securityContext=locked)
    # Stays up after reporting, so its process can be examined from the host.
    container.command = ["sh", "-c", 'python -c "$0" "$1" && exec sleep 600', INSPECT, "[]"]
    cluster.client.create(image_pod("locked", namespace, [container], securityContext=context))

    def reported() -> Pod | None:
        current = get(cluster.client, namespace, "locked")
        if not main_status(current).get("state", {}).get("running"):
            return None
        return current if "write_app" in logs(cluster.client, namespace, "locked") else None

    running = wait_for(reported, timeout=90, interval=0.5, what="the container's report")
    seen = output(cluster, namespace, "locked", "main")
    assert (seen["uid"], seen["gid"], seen["groups"]) == (4242, 4343, [4343, 5000, 6000])
    assert seen["write_app"] == "Read-only file system"
    assert seen["write_data"] == "yes"  # a volume stays writable
    pid = host_pid(running)
    status = dict(
        line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    assert status["Uid"].split() == ["4242"] * 4 and status["Gid"].split() == ["4343"] * 4
    assert status["CapBnd"] == "0000000000000000" and status["NoNewPrivs"] == "1"
    assert int(status["SigIgn"], 16) == int(status["SigBlk"], 16) == 0  # as a runtime leaves them
    root_mount = next(
        line.split() for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
        if line.split()[4] == "/"
    )  # fmt: skip
    assert "ro" in root_mount[5].split(",")
    assert os.path.exists(f"/proc/{pid}/root/opt/venv/bin/python")
    assert not os.path.exists(f"/proc/{pid}/root{REPO_ROOT}")
    cluster.client.delete(Pod, "locked", namespace=namespace)
    wait_gone(cluster.client, namespace, "locked")


def test_entrypoint_and_cmd_follow_kubernetes_rules(
    cluster: E2ECluster, namespace: str, images: Published
) -> None:
    containers = [
        Container(name="args-only", image=OPERATOR, args=["--help"]),  # ENTRYPOINT + args
        Container(name="image-default", image=OPERATOR),  # ENTRYPOINT + CMD: `run`
    ]
    cluster.client.create(image_pod("entry", namespace, containers))
    done = wait_phase(cluster.client, namespace, "entry", "Failed", "Succeeded")
    assert done.status is not None and done.status.containerStatuses is not None
    states = {s.name: s.state for s in done.status.containerStatuses}
    help_text = "".join(cluster.client.log("entry", namespace=namespace, container="args-only"))
    assert "usage: drover-operator" in help_text
    assert states["args-only"].terminated.exitCode == 0  # type: ignore[union-attr]
    run = "".join(cluster.client.log("entry", namespace=namespace, container="image-default"))
    assert "DROVER_DATABASE_URL" in run  # `drover-operator run` without its settings
    assert states["image-default"].terminated.exitCode != 0  # type: ignore[union-attr]


def test_refusals_are_reported_as_the_kubelet_reports_them(
    cluster: E2ECluster, namespace: str, images: Published
) -> None:
    c = cluster.client
    as_root = Container(
        name="main",
        image=RUNNER,
        command=["true"],
        securityContext=SecurityContext(runAsNonRoot=True, runAsUser=0),
    )
    c.create(image_pod("as-root", namespace, [as_root]))
    missing = Container(name="main", image=RUNNER, command=["no-such-program"])
    c.create(image_pod("missing", namespace, [missing]))
    share = Container(
        name="main",
        image=RUNNER,
        command=["true"],
        volumeMounts=[VolumeMount(name="share", mountPath="/share")],
    )
    p = image_pod("share", namespace, [share])
    assert p.spec is not None and p.spec.volumes is not None
    p.spec.volumes.append(
        Volume(name="share", nfs=NFSVolumeSource(server="nfs.invalid", path="/exports"))
    )
    c.create(p)

    def waiting(name: str) -> dict[str, Any] | None:
        state = main_status(get(c, namespace, name)).get("state", {})
        return state.get("waiting") if state.get("waiting", {}).get("message") else None

    refused = wait_for(lambda: waiting("as-root"), what="runAsNonRoot refused")
    assert refused["reason"] == "CreateContainerConfigError"
    assert "runAsNonRoot and image will run as root" in refused["message"]
    failed = wait_phase(c, namespace, "missing", "Failed")
    terminated = main_status(failed)["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (128, "StartError")
    assert terminated["message"] == 'exec: "no-such-program": executable file not found in $PATH'
    unmounted = wait_for(lambda: waiting("share"), what="the NFS volume refused")
    assert "share: nfs volumes have no storage" in unmounted["message"]
    events = c.list(Event, namespace=namespace, fields={"involvedObject.name": "share"})
    assert any(e.reason == "FailedMount" for e in events)


def test_the_pod_reaches_the_api_server_as_a_pod_does(
    cluster: E2ECluster, namespace: str, images: Published
) -> None:
    """Its ServiceAccount token volume, and `https://kubernetes.default.svc` (clients such as
    kopf's in-cluster login use that name, not KUBERNETES_SERVICE_HOST)."""
    code = """
import json, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
context = ssl.create_default_context(cafile=f"{sa}/ca.crt")
token = open(f"{sa}/token").read()
namespace = open(f"{sa}/namespace").read()
def get(path):
    request = urllib.request.Request(
        f"https://kubernetes.default.svc{path}", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, context=context) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)
print(json.dumps({
    "namespace": namespace,
    "version": get("/version")[1].get("gitVersion"),
    "pods": get(f"/api/v1/namespaces/{namespace}/pods"),
}))
"""
    p = image_pod(
        "api", namespace, [Container(name="main", image=RUNNER, command=["python", "-c", code])]
    )
    cluster.client.create(p)
    done = wait_phase(cluster.client, namespace, "api", "Succeeded", "Failed")
    assert done.status is not None and done.status.phase == "Succeeded", logs(
        cluster.client, namespace, "api"
    )
    seen = output(cluster, namespace, "api", "main")
    assert seen["namespace"] == namespace
    assert seen["version"] == f"v{cluster.local.versions.kubernetes}"
    code, body = seen["pods"]
    assert code == 403  # as its ServiceAccount, which may not list pods
    assert f"system:serviceaccount:{namespace}:default" in body["message"]
