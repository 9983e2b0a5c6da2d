"""How a container's process starts: as a host process, or inside its image (imagerun.py).
The pod worker decides which; both give the started process and the PID its container ID
names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drover_localcluster.nodeagent import imagerun
from drover_localcluster.nodeagent.containers import ContainerProcess


@dataclass(frozen=True)
class HostLaunch:
    """A container as a host process."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path

    async def start(self, log_file: Path, marker: str) -> tuple[ContainerProcess, int]:
        process = await ContainerProcess.start(self.argv, self.env, self.cwd, log_file)
        return process, process.pid


@dataclass(frozen=True)
class ImageLaunch:
    """A container inside its image: the sandbox's spec (imagerun.plan)."""

    spec: dict[str, Any]
    run_dir: Path

    async def start(self, log_file: Path, marker: str) -> tuple[ContainerProcess, int]:
        """The PID is the container's PID 1 as the host sees it."""
        return await imagerun.start(self.spec, self.run_dir, log_file, marker)
