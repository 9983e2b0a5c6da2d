"""A container that runs inside its image: what the sandbox gets, by Kubernetes' rules, and
its start.

- process: the container's `command` replaces the image's ENTRYPOINT (and then its CMD is
  dropped too), `args` replace the CMD; `$(VAR)` expands in both, never in the image's parts;
- user: `runAsUser`/`runAsGroup` (container over pod) over the image's USER, names resolved
  in the image's /etc/passwd and /etc/group, plus the user's groups there, `supplementalGroups`
  and `fsGroup`; `runAsNonRoot` refuses root and names it cannot check, as the kubelet does;
- environment: the image's ENV, then the pod's (`env`, `envFrom`) on top; HOME from passwd;
- working directory: `workingDir`, else the image's WORKDIR, else `/`;
- `readOnlyRootFilesystem`, `allowPrivilegeEscalation: false` (no_new_privs),
  `capabilities` (containerd's default set, `drop`/`add`, `privileged` keeps all);
- mounts: the container's `volumeMounts` (with `subPath`, `readOnly`) and the pod's
  /etc/hosts, /etc/hostname and /etc/resolv.conf.

The process starts through sandbox.py (mount, PID, UTS and IPC namespaces); a start pipe
tells whether `exec` happened or why not.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightkube.models.core_v1 import Container
from lightkube.resources.core_v1 import Pod

from drover_localcluster.images.layout import Image
from drover_localcluster.nodeagent import sandbox
from drover_localcluster.nodeagent.containers import ContainerProcess, ContainerStartError
from drover_localcluster.nodeagent.podenv import EnvError, expand
from drover_localcluster.nodeagent.serviceproxy import SERVICE_NAMES
from drover_localcluster.processes import MARKER_ENV

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ContainerConfigError(EnvError):
    """The container cannot be created as specified (its user, runAsNonRoot, a volume)."""


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def _table(rootfs: Path, name: str) -> list[list[str]]:
    path = Path(sandbox.resolve_in(str(rootfs), f"/etc/{name}"))
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line.split(":") for line in lines if line and not line.startswith("#")]


def identity(rootfs: Path, image_user: str, pod: Pod, container: Container) -> Identity:
    """The container's UID, GID, groups and home, as containerd resolves them."""
    assert pod.metadata is not None and pod.spec is not None
    pod_context, context = pod.spec.securityContext, container.securityContext

    def pick(field: str) -> Any:
        for source in (context, pod_context):
            value = getattr(source, field, None) if source is not None else None
            if value is not None:
                return value
        return None

    passwd = [e for e in _table(rootfs, "passwd") if len(e) >= 6 and e[2].isdigit()]
    groups = [e for e in _table(rootfs, "group") if len(e) >= 3 and e[2].isdigit()]
    run_as_user: int | None = pick("runAsUser")
    user, _, group = (image_user or "0").partition(":")
    entry: list[str] | None
    if run_as_user is not None:
        uid = run_as_user
        entry = next((e for e in passwd if int(e[2]) == uid), None)
        group = ""
    elif user.isdigit():
        uid = int(user)
        entry = next((e for e in passwd if int(e[2]) == uid), None)
    else:
        entry = next((e for e in passwd if e[0] == user), None)
        if entry is None:
            raise ContainerConfigError(
                f"unable to find user {user}: no matching entries in passwd file"
            )
        uid = int(entry[2])
    if pick("runAsNonRoot"):
        where = (
            f'(pod: "{pod.metadata.name}_{pod.metadata.namespace}", container: {container.name})'
        )
        if run_as_user is None and not user.isdigit():
            raise ContainerConfigError(
                f"container has runAsNonRoot and image has non-numeric user ({user}), "
                f"cannot verify user is non-root {where}"
            )
        if uid == 0:
            raise ContainerConfigError(
                f"container has runAsNonRoot and image will run as root {where}"
            )
    if group.isdigit():
        gid = int(group)
    elif group:
        found = next((g for g in groups if g[0] == group), None)
        if found is None:
            raise ContainerConfigError(
                f"unable to find group {group}: no matching entries in group file"
            )
        gid = int(found[2])
    else:
        gid = int(entry[3]) if entry is not None and entry[3].isdigit() else 0
    run_as_group: int | None = pick("runAsGroup")
    if run_as_group is not None:
        gid = run_as_group
    extra: list[int] = []
    if entry is not None:
        extra += [int(g[2]) for g in groups if len(g) > 3 and entry[0] in g[3].split(",")]
    if pod_context is not None:
        extra += list(pod_context.supplementalGroups or [])
        if pod_context.fsGroup is not None:
            extra.append(pod_context.fsGroup)
    unique = tuple(dict.fromkeys(g for g in [gid, *extra]))
    home = entry[5] if entry is not None and entry[5] else "/"
    return Identity(uid, gid, unique, home)


def process_argv(container: Container, image: Image, env: dict[str, str]) -> list[str]:
    """Kubernetes' combination of the container's command/args and the image's
    ENTRYPOINT/CMD."""
    command = [expand(part, env) for part in container.command or []]
    args = [expand(part, env) for part in container.args or []]
    if command:
        return command + args
    if args:
        return [*image.config.entrypoint, *args]
    return [*image.config.entrypoint, *image.config.cmd]


def image_env(image: Image, cluster_env: dict[str, str]) -> dict[str, str]:
    """What a container's environment starts from: the image's ENV, then the node's."""
    env = dict(entry.split("=", 1) for entry in image.config.env if "=" in entry)
    env.setdefault("PATH", DEFAULT_PATH)
    return {**env, **cluster_env}


def capabilities(container: Container) -> list[str]:
    context = container.securityContext
    if context is not None and context.privileged:
        return sorted(sandbox.CAPABILITIES)
    kept = set(sandbox.DEFAULT_CAPABILITIES)
    if context is not None and context.capabilities is not None:
        drop = {c.upper().removeprefix("CAP_") for c in context.capabilities.drop or []}
        add = {c.upper().removeprefix("CAP_") for c in context.capabilities.add or []}
        kept = set() if "ALL" in drop else kept - drop
        kept |= set(sandbox.CAPABILITIES) if "ALL" in add else add & set(sandbox.CAPABILITIES)
    return sorted(kept)


def pod_files(pod: Pod, directory: Path, service_address: str | None) -> dict[str, Path]:
    """The files the kubelet manages in every container: /etc/hosts (which also stands in
    for cluster DNS for the `kubernetes` Service, see serviceproxy.py), /etc/hostname,
    /etc/resolv.conf (the host's: pods here share its network)."""
    name = hostname(pod)
    hosts = "# Kubernetes-managed hosts file (the Drover node agent).\n"
    hosts += f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.0.1\t{name}\n"
    if service_address:
        hosts += f"{service_address}\t{' '.join(SERVICE_NAMES)}\n"
    files = {"/etc/hosts": hosts, "/etc/hostname": f"{name}\n"}
    paths = {}
    for target, text in files.items():
        path = directory / target.rsplit("/", 1)[1]
        if not path.exists():
            path.write_text(text)
        paths[target] = path
    resolv = directory / "resolv.conf"
    if not resolv.exists():
        shutil.copyfile("/etc/resolv.conf", resolv)
    paths["/etc/resolv.conf"] = resolv
    return paths


def hostname(pod: Pod) -> str:
    assert pod.metadata is not None and pod.spec is not None
    return (pod.spec.hostname or pod.metadata.name or "pod")[:63]


def plan(
    *,
    pod: Pod,
    container: Container,
    image: Image,
    rootfs: Path,
    env: dict[str, str],
    volumes: dict[str, Path],
    pod_dir: Path,
    run_dir: Path,
    service_address: str | None = None,
) -> dict[str, Any]:
    """The sandbox's spec for one run of `container` (see sandbox.py)."""
    who = identity(rootfs, image.config.user, pod, container)
    env = dict(env)
    env.setdefault("HOME", who.home)
    mounts: list[dict[str, Any]] = []
    for mount in container.volumeMounts or []:
        if mount.name not in volumes:
            raise ContainerConfigError(f"volume {mount.name!r} is not a volume of the pod")
        source = volumes[mount.name]
        if mount.subPath:
            source = source / mount.subPath
            if not source.exists():
                source.mkdir(parents=True, mode=0o777)
        mounts.append(
            {"source": str(source), "target": mount.mountPath, "readonly": bool(mount.readOnly)}
        )
    taken = {m["target"].rstrip("/") for m in mounts}
    for target, path in pod_files(pod, pod_dir, service_address).items():
        if target not in taken:
            mounts.append({"source": str(path), "target": target, "readonly": False})
    context = container.securityContext
    for part in ("upper", "work", "merged"):
        (run_dir / part).mkdir(parents=True, exist_ok=True)
    return {
        "lower": str(rootfs),
        "upper": str(run_dir / "upper"),
        "work": str(run_dir / "work"),
        "root": str(run_dir / "merged"),
        "mounts": mounts,
        "readonly_root": bool(context and context.readOnlyRootFilesystem),
        "no_new_privs": bool(context and context.allowPrivilegeEscalation is False),
        "capabilities": capabilities(container),
        "hostname": hostname(pod),
        "uid": who.uid,
        "gid": who.gid,
        "groups": list(who.groups),
        "cwd": container.workingDir or image.config.working_dir or "/",
        "argv": process_argv(container, image, env),
        "env": env,
    }


def _read_all(fd: int) -> str:
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def _first_child(pid: int) -> int | None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


async def start(
    spec: dict[str, Any], run_dir: Path, log_file: Path, marker: str
) -> tuple[ContainerProcess, int]:
    """Start the sandboxed container; the process (the sandbox's parent) and, as the host
    sees it, the PID of the container's own PID 1. Raises ContainerStartError when it could
    not `exec`."""
    if not spec["argv"]:
        raise ContainerStartError("no command specified: the image has no ENTRYPOINT or CMD")
    read, write = os.pipe()
    spec_file = run_dir / "spec.json"
    # Holds the environment, secrets included: only root may read it; the sandbox deletes it.
    descriptor = os.open(spec_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump({**spec, "error_fd": write}, out)
    argv = [sys.executable, "-I", "-S", sandbox.__file__]
    env = {"PATH": os.environ.get("PATH", DEFAULT_PATH), MARKER_ENV: marker}
    try:
        process = await ContainerProcess.start(
            [*argv, str(spec_file)], env, run_dir, log_file, pass_fds=(write,)
        )
    except BaseException:
        os.close(read)
        raise
    finally:
        os.close(write)
    error = await asyncio.to_thread(_read_all, read)
    if error:
        await process.wait()
        raise ContainerStartError(error)
    return process, _first_child(process.pid) or process.pid
