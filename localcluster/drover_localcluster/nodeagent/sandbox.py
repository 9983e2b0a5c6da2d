"""A container's first moments. The node agent runs this file; it enters fresh mount, PID,
UTS and IPC namespaces and forks PID 1 of the new PID namespace, which builds the container's
root filesystem and becomes the container:

1. an overlay of the image's unpacked root filesystem (shared, never written) and a fresh
   upper directory of this container run;
2. `/proc` of the new PID namespace, a small `/dev`, `/sys` read-only, the pod's `/etc/hosts`,
   `/etc/hostname`, `/etc/resolv.conf`, and the pod's volumes, bound where its `volumeMounts`
   say (symlinks in the image are followed as if the root filesystem were `/`);
3. `pivot_root` into it and detach the host's root, so nothing of the host's files stays
   reachable; the root made read-only when `readOnlyRootFilesystem` asks;
4. the hostname, the capability bounding set, groups, GID, UID, `no_new_privs`, the working
   directory, then `exec` of the container's process, which is then PID 1 itself.

The outer process stays as the container's parent, like `unshare --fork` (it ignores SIGTERM
and SIGINT, which the agent sends the whole process group, so the container decides how it
stops), and exits as the container did. Any failure before `exec` is written to the start pipe
(`error_fd`), and the container exits 128, which the node agent reports as a `StartError`, as
a container runtime does; a successful `exec` closes the pipe (the parent closed its end right
after forking). Only the standard library: the agent runs this file with `python -I -S`, and
after `pivot_root` nothing can be imported.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import signal
import sys
from typing import Any

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID = 0x20000, 0x4000000, 0x8000000, 0x20000000
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 24, 38
_PARENT_IGNORES = (signal.SIGTERM, signal.SIGINT)
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
SYS_RT_SIGACTION = {"x86_64": 13, "aarch64": 134}

# Linux capability numbers (linux/capability.h), by the names Kubernetes uses.
_CAPABILITY_NAMES = (
    "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP "
    "LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER "
    "SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE "
    "SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP "
    "MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF "
    "CHECKPOINT_RESTORE"
)
CAPABILITIES = {name: number for number, name in enumerate(_CAPABILITY_NAMES.split())}
# What containerd and Docker give a container unless its securityContext says otherwise.
DEFAULT_CAPABILITIES = frozenset(
    "CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID SETFCAP SETPCAP "  # noqa: SIM905
    "NET_BIND_SERVICE SYS_CHROOT KILL AUDIT_WRITE".split()
)
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

_libc = ctypes.CDLL(None, use_errno=True)


class SandboxError(Exception):
    """The container could not be started; the message says why, as a runtime would."""


def _check(result: int, what: str) -> None:
    if result != 0:
        raise SandboxError(f"{what}: {os.strerror(ctypes.get_errno())}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source or fstype} on {target}",
    )


def resolve_in(root: str, path: str) -> str:
    """`path` inside `root`, following symlinks as if `root` were `/`: never outside it."""
    pending = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > 40:
                raise SandboxError(f"too many levels of symbolic links resolving {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending = [p for p in target.split("/") if p not in ("", ".")] + pending
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def _target(root: str, path: str, *, directory: bool) -> str:
    """The mount point for `path` in `root`, created (as a directory or an empty file)."""
    target = resolve_in(root, path)
    if directory:
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "a"):
            pass
    return target


def _bind(source: str, target: str, *, readonly: bool) -> None:
    mount(source, target, None, MS_BIND | MS_REC)
    if readonly:
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)


def _dev(root: str) -> None:
    dev = _target(root, "/dev", directory=True)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=755,size=65536k")
    for name in _DEVICES:
        _bind(f"/dev/{name}", _target(root, f"/dev/{name}", directory=False), readonly=False)
    links = {"fd": "/proc/self/fd", "ptmx": "pts/ptmx"}
    links.update(
        {name: f"/proc/self/fd/{n}" for n, name in enumerate(("stdin", "stdout", "stderr"))}
    )
    for name, target in links.items():
        os.symlink(target, os.path.join(dev, name))
    pts = _target(root, "/dev/pts", directory=True)
    mount("devpts", pts, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
    shm = _target(root, "/dev/shm", directory=True)
    mount("shm", shm, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")


def build_root(spec: dict[str, Any]) -> str:
    """Mount the container's root filesystem and everything in it; its path on the host."""
    root: str = spec["root"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount leaks to the host
    options = f"lowerdir={spec['lower']},upperdir={spec['upper']},workdir={spec['work']}"
    mount("overlay", root, "overlay", 0, options)
    proc = _target(root, "/proc", directory=True)
    mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _dev(root)
    sysfs = _target(root, "/sys", directory=True)
    mount("sysfs", sysfs, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for entry in sorted(spec["mounts"], key=lambda m: m["target"].count("/")):
        directory = os.path.isdir(entry["source"])
        target = _target(root, entry["target"], directory=directory)
        _bind(entry["source"], target, readonly=entry["readonly"])
    os.makedirs(resolve_in(root, spec["cwd"]), exist_ok=True)
    return root


def enter(spec: dict[str, Any], root: str) -> None:
    """pivot_root into `root` and become the container's user; the host's root is gone."""
    last_cap = int(open("/proc/sys/kernel/cap_last_cap").read())  # noqa: SIM115
    os.chdir(root)
    # pivot_root(".", "."): the old root ends up stacked on the new one, then detached.
    _check(_libc.syscall(SYS_PIVOT_ROOT[platform.machine()], b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "detaching the host's root")
    os.chdir("/")
    if spec["readonly_root"]:
        mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    hostname = spec["hostname"].encode()
    _check(_libc.sethostname(hostname, len(hostname)), "sethostname")
    keep = {CAPABILITIES[name] for name in spec["capabilities"]}
    for cap in range(last_cap + 1):
        if cap not in keep:
            _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"dropping capability {cap}")
    os.setgroups(spec["groups"])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    if spec["no_new_privs"]:
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    try:
        os.chdir(spec["cwd"])
    except OSError as exc:
        raise SandboxError(f"chdir to cwd ({spec['cwd']!r}): {exc.strerror}") from None


def execute(argv: list[str], env: dict[str, str]) -> None:
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError:
        where = " in $PATH" if "/" not in argv[0] else ""
        raise SandboxError(f'exec: "{argv[0]}": executable file not found{where}') from None
    except OSError as exc:
        raise SandboxError(f'exec: "{argv[0]}": {exc.strerror}') from None


def _default_signals() -> None:
    """Every signal at its default disposition and none blocked, as a runtime starts a
    container: ignored signals stay ignored across exec, and this process inherits them
    from Python (SIGPIPE, SIGXFSZ) and from whatever started the node agent (a shell
    ignores SIGINT and SIGQUIT for a job it runs in the background). The kernel's
    rt_sigaction rather than Python's or libc's: both refuse the signals libc keeps for
    itself (32 and 33), which an ancestor may still have left ignored."""
    blank = ctypes.create_string_buffer(64)  # a zeroed kernel sigaction: SIG_DFL, no flags
    number = SYS_RT_SIGACTION[platform.machine()]
    for sig in range(1, signal.NSIG):
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            _libc.syscall(number, sig, blank, None, 8)  # fails only for an invalid number
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def container(spec: dict[str, Any]) -> None:
    """PID 1 of the new namespaces: build the root, become the container, exec."""
    error_fd: int = spec["error_fd"]
    try:
        _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "parent death signal")
        enter(spec, build_root(spec))
        _default_signals()
        os.set_inheritable(error_fd, False)  # closed by a successful exec: "started"
        execute(spec["argv"], spec["env"])
    except Exception as exc:
        os.write(error_fd, str(exc).encode(errors="replace"))
    os._exit(128)


def main() -> None:
    with open(sys.argv[1]) as file:
        spec = json.load(file)
    os.unlink(sys.argv[1])  # it holds the container's environment, secrets included
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC
    if _libc.unshare(flags) != 0:
        message = f"creating namespaces: {os.strerror(ctypes.get_errno())}"
        os.write(spec["error_fd"], message.encode())
        sys.exit(128)
    # Blocked across the fork: the parent starts ignoring them, the child unblocks them.
    signal.pthread_sigmask(signal.SIG_BLOCK, _PARENT_IGNORES)
    child = os.fork()
    if child == 0:
        container(spec)
    for sig in _PARENT_IGNORES:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _PARENT_IGNORES)
    os.close(spec["error_fd"])
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):  # die the same way, so the agent sees 128 + the signal
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
