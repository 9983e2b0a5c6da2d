"""CPU time by component, from /proc: where a scenario's two cores went.

Each component is a root process and all its descendants (the API server, etcd, the
scheduler, the controller-manager, the node agent with the pods it runs as host processes,
the Postgres postmaster with its backends, the operator, the bench itself). A process counts
while alive (its user + system time) and, once reaped, in its parent's children's time, so a
snapshot taken before and after a scenario gives the CPU seconds it used, pods included.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its reaped children)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return ppid, (utime + stime + cutime + cstime) / _TICKS


def snapshot(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named root process and its descendants; "other" is every
    other process on the machine (other sessions, the kernel's helpers)."""
    stats = {pid: s for pid in _pids() if (s := _stat(pid)) is not None}
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in stats.items():
        children[ppid].append(pid)
    result: dict[str, float] = {}
    counted: set[int] = set()
    for name, root in roots.items():
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            if pid in counted or pid not in stats:
                continue
            counted.add(pid)
            total += stats[pid][1]
            todo.extend(children.get(pid, []))
        result[name] = total
    result["other"] = sum(cpu for pid, (_, cpu) in stats.items() if pid not in counted)
    return result


def used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each component used between two snapshots, most first."""
    delta = {k: round(max(0.0, v - before.get(k, 0.0)), 2) for k, v in after.items()}
    return dict(sorted(delta.items(), key=lambda kv: -kv[1]))


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]
