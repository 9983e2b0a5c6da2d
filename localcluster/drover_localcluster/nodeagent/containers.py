"""One container's process: start, capture output to a log file, stop. A host process, or
`unshare` running a container inside its image (imagerun.py).

Each process runs in its own session, so stopping it signals its whole process tree.
Log lines are stored as `<RFC 3339 time> <stream> <line>`, like the CRI log format, so the
log server can filter by time and add timestamps on request.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

_READ_LIMIT = 1 << 20


class ContainerStartError(Exception):
    """The process could not be started (like a runtime's StartError, exit code 128)."""


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def timestamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ContainerProcess:
    """A started container process."""

    def __init__(self, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path
        self.started_at = now()
        self.finished_at: dt.datetime | None = None
        self._pumps: list[asyncio.Task[None]] = []
        self._log: TextIO | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(
        cls,
        argv: list[str],
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path,
        *,
        pass_fds: tuple[int, ...] = (),
    ) -> ContainerProcess:
        if not argv:
            raise ContainerStartError(
                "no command: this container's image is not in the node's image store, so it "
                "runs as a host process and has no ENTRYPOINT to fall back on; set `command`"
            )
        executable = argv[0]
        if "/" not in executable:
            found = shutil.which(executable, path=env.get("PATH", ""))
            if found is None:
                raise ContainerStartError(
                    f'exec: "{executable}": executable file not found in $PATH'
                )
            executable = found
        if not cwd.is_dir():
            raise ContainerStartError(f"working directory {cwd} does not exist")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            process = await asyncio.create_subprocess_exec(
                executable,
                *argv[1:],
                env=dict(env),
                cwd=cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                limit=_READ_LIMIT,
                pass_fds=pass_fds,
            )
        except OSError as exc:
            raise ContainerStartError(f"exec: {executable!r}: {exc.strerror or exc}") from exc
        container = cls(process, log_path)
        log = log_path.open("a", encoding="utf-8")
        assert process.stdout is not None and process.stderr is not None
        container._pumps = [
            asyncio.create_task(_pump(process.stdout, "stdout", log)),
            asyncio.create_task(_pump(process.stderr, "stderr", log)),
        ]
        container._log = log
        return container

    async def wait(self) -> int:
        """Wait for exit; the exit code as a container runtime reports it (128+N for signal N)."""
        code = await self.process.wait()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if self._log is not None:
            self._log.close()
        self.finished_at = self.finished_at or now()
        return 128 - code if code < 0 else code

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    async def stop(self, grace_seconds: float) -> None:
        """SIGTERM the process group; SIGKILL it once the grace period is over."""
        if self.process.returncode is not None:
            self.signal(signal.SIGKILL)  # stray children of an exited main process
            return
        self.signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.process.wait()), timeout=grace_seconds)
        self.signal(signal.SIGKILL)


async def _pump(stream: asyncio.StreamReader, name: str, log: TextIO) -> None:
    """Copy a stream into the log file line by line, each stamped with its arrival time."""
    while True:
        try:
            line = await stream.readline()
        except ValueError:
            # A line longer than the limit: take what is buffered as one line.
            line = await stream.read(_READ_LIMIT)
        if not line:
            return
        text = line.decode("utf-8", errors="replace").rstrip("\n")
        log.write(f"{timestamp(now())} {name} {text}\n")
        log.flush()
