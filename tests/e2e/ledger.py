"""The side-effect ledger: what test task code really did, written by the task code itself.

A table of rows kept as `<directory>/ledger`, one JSON object per line, appended with a single
`write` on an `O_APPEND` descriptor so concurrent pods never interleave. Each row is keyed by
run, step and a random execution id, and says which pod, attempt and process wrote it and
when. Tests judge exactly-once, duplicates and overlaps from it (and from `podwatch`), never
from Drover's records. A file rather than a database table so the ledger survives the faults
the chaos suite injects into Drover's Postgres. Command tasks write it with
`python -m tests.e2e.ledger <directory> <event>`.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LEDGER_FILE = "ledger"
# drover.protocol.names.ENV_RUN_NAME and ENV_ATTEMPT, spelled out: importing `drover` costs a
# command task's pod half a second of CPU (tests/unit checks they agree).
ENV_RUN_NAME = "DROVER_RUN_NAME"
ENV_ATTEMPT = "DROVER_ATTEMPT"


def write(directory: str | Path, event: str, *, step: str = "", **fields: Any) -> str:
    """Append one row for the current pod's run (from its environment); returns the row's
    random execution id."""
    execution = uuid.uuid4().hex
    row = {
        "event": event,
        "run": os.environ.get(ENV_RUN_NAME, ""),
        "step": step,
        "execution": execution,
        "attempt": int(os.environ.get(ENV_ATTEMPT, "0") or 0),
        "pod": os.environ.get("HOSTNAME", ""),
        "pid": os.getpid(),
        "at": time.time(),
        **fields,
    }
    data = (json.dumps(row) + "\n").encode()
    fd = os.open(Path(directory, LEDGER_FILE), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return execution


@dataclass(frozen=True)
class Row:
    """One ledger row, as read back by a test."""

    event: str
    run: str
    step: str
    execution: str
    attempt: int
    pod: str
    pid: int
    at: float
    fields: dict[str, Any]


def read(directory: str | Path) -> list[Row]:
    path = Path(directory, LEDGER_FILE)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        raw = json.loads(line)
        known = {k: raw.pop(k) for k in ("event", "run", "step", "execution", "attempt")}
        rows.append(
            Row(
                **known,
                pod=raw.pop("pod", ""),
                pid=raw.pop("pid", 0),
                at=raw.pop("at", 0.0),
                fields=raw,
            )
        )
    return rows


def counts(rows: list[Row], event: str) -> Counter[tuple[str, str]]:
    """How many times each (run, step) wrote `event`."""
    return Counter((r.run, r.step) for r in rows if r.event == event)


def command(directory: str | Path, then: str = "true", step: str = "") -> list[str]:
    """A command task's command: one `ran` row in the ledger, then the shell command `then`."""
    write = f"{sys.executable} -m tests.e2e.ledger {directory} ran {step}".rstrip()
    return ["sh", "-c", f"{write} && {then}"]


def peak_between(rows: list[Row], start: str, end: str) -> int:
    """The most executions between their `start` and `end` rows at once (task code running,
    as opposed to pods existing)."""
    edges = [(r.at, 1) for r in rows if r.event == start]
    edges += [(r.at, -1) for r in rows if r.event == end]
    current = peak = 0
    for _, delta in sorted(edges):  # an end before a start at the same instant
        current += delta
        peak = max(peak, current)
    return peak


if __name__ == "__main__":  # a command task's side effect: ledger.py <directory> <event>
    write(sys.argv[1], sys.argv[2], step=sys.argv[3] if len(sys.argv) > 3 else "")
