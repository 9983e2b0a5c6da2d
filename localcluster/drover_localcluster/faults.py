"""Killing and restarting one component of a running local cluster: the faults the chaos suite
injects (`make chaos`), and what a developer replays by hand with
`python -m drover_localcluster kill|restart <component> --dir <cluster>`.

A kill is a crash, never a clean stop: SIGKILL of the process group (or, for Postgres, an
immediate shutdown or SIGKILL of the postmaster and its backends), so whatever was in flight
is lost and the restart has to recover from it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from drover_localcluster.cluster import ClusterState, LocalCluster
from drover_localcluster.errors import LocalClusterError
from drover_localcluster.processes import alive
from drover_localcluster.settings import NODE_NAME

CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
COMPONENTS = ("postgres", *CONTROL_PLANE, "node-agent")


def kill(cluster: LocalCluster, component: str, *, postgres_mode: str = "sigkill") -> None:
    """Crash `component` (see COMPONENTS); `postgres_mode` is `sigkill` (the postmaster and
    its backends) or `immediate` (`pg_ctl -m immediate`: no checkpoint, recovery on start)."""
    state = _state(cluster)
    if component == "postgres":
        if postgres_mode == "immediate":
            cluster.postgres.stop("immediate")
        else:
            _kill_postgres(cluster.postgres.data)
    elif component in CONTROL_PLANE:
        _kill_group(state.pids[component])
    elif component == "node-agent":
        cluster.stop_node(NODE_NAME, kill=True)
    else:
        raise LocalClusterError(f"unknown component {component!r}; one of {', '.join(COMPONENTS)}")


def restart(cluster: LocalCluster, component: str) -> None:
    """Start `component` again (after `kill`) and wait until it serves."""
    state = _state(cluster)
    if component == "postgres":
        cluster.postgres.start(state.marker, durable=state.durable)
    elif component in CONTROL_PLANE:
        if alive(state.pids.get(component, 0) or -1):
            return
        cluster.record_pid(component, cluster.control_plane.start_one(component, state.marker))
    elif component == "node-agent":
        if NODE_NAME not in state.nodes:
            cluster.start_node(NODE_NAME)
    else:
        raise LocalClusterError(f"unknown component {component!r}; one of {', '.join(COMPONENTS)}")


def _state(cluster: LocalCluster) -> ClusterState:
    if cluster.state is None:
        raise LocalClusterError(f"no cluster is up in {cluster.directory}")
    return cluster.state


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    _wait_dead([pid])


def _kill_postgres(data: Path) -> None:
    """SIGKILL the postmaster, then its backends (which would otherwise linger, holding the
    shared memory a restart needs): as the machine losing the process tree."""
    pid_file = data / "postmaster.pid"
    if not pid_file.exists():
        return
    postmaster = int(pid_file.read_text().splitlines()[0])
    children = [pid for pid in _all_pids() if _parent(pid) == postmaster]
    for pid in (postmaster, *children):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_dead([postmaster, *children])
    # Nobody may reap the postmaster here (it was reparented), and a zombie still "exists" to
    # pg_ctl and to Postgres' own stale-lock check: drop the lock file a real crash leaves
    # pointing at a dead pid.
    pid_file.unlink(missing_ok=True)


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def _wait_dead(pids: list[int]) -> None:
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.02)
