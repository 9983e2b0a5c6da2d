"""Start, watch and stop the local cluster's processes.

Every process we start (control plane, Postgres, node agent and the pods it runs) carries the
cluster's marker in its environment. Stopping first signals the recorded process groups, then
sweeps `/proc` for anything still carrying the marker, so a daemonizing pod or a SIGKILLed
node agent cannot leave processes behind.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from drover_localcluster.errors import StartupError

MARKER_ENV = "DROVER_LOCALCLUSTER_ID"


#: Where free ports are picked: above the well-known and below the kernel's ephemeral range.
_PORTS = (10000, 32768)


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return _PORTS[1]


def free_port() -> int:
    """A free TCP port on the loopback interface, outside the kernel's ephemeral range: a port
    from that range can be taken by any outgoing connection between this check and the
    server's bind (a component then failed to start with "address already in use")."""
    high = min(_PORTS[1], _ephemeral_low())
    for _ in range(200):
        port = random.randrange(_PORTS[0], high) if high > _PORTS[0] + 1000 else 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            found: int = sock.getsockname()[1]
            return found
    raise StartupError("no free TCP port on 127.0.0.1")


def spawn(
    args: Sequence[str | Path],
    *,
    log: Path,
    marker: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start a daemon in its own session, output appended to `log`; returns its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ if env is None else env)
    full_env[MARKER_ENV] = marker
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(a) for a in args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
    return proc.pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_group(pid: int, *, grace: float = 10.0) -> None:
    """SIGTERM a process group, SIGKILL it after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not alive(pid):
                return
            time.sleep(0.05)


def marked_pids(marker: str) -> list[int]:
    """Processes whose environment carries the marker."""
    needle = f"{MARKER_ENV}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def sweep(marker: str) -> None:
    """SIGKILL every process still carrying the marker (after the graceful stops)."""
    for _ in range(50):
        pids = [p for p in marked_pids(marker) if alive(p)]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _reap(pid)
        time.sleep(0.1)


def wait_until(
    check: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    log: Path | None = None,
    pid: int | None = None,
    interval: float = 0.1,
) -> None:
    """Poll `check` until true; fail fast if the process `pid` died, naming its log."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:
            pass
        if pid is not None and not alive(pid):
            raise StartupError(f"{what} exited during start-up{_log_tail(log)}")
        if time.monotonic() > deadline:
            raise StartupError(f"{what} not ready after {timeout:.0f}s{_log_tail(log)}")
        time.sleep(interval)


def _log_tail(log: Path | None, lines: int = 20) -> str:
    if log is None or not log.exists():
        return ""
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    return f"; see {log}:\n" + "\n".join(tail)
