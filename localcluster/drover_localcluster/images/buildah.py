"""buildah, daemonless: Dockerfiles built as root with the `vfs` storage driver and `chroot`
isolation (no container runtime, no overlay storage, no cgroups needed), in a storage
directory of one `make images` run."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from drover_localcluster.errors import BuildError

TOOLS = ("buildah", "mmdebstrap", "umoci", "skopeo")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


class Buildah:
    """buildah over a private storage directory; every call's output goes to `log`."""

    def __init__(self, root: Path, log: Path) -> None:
        self.root = root
        self.log = log

    def _run(self, *args: str) -> str:
        command = [
            "buildah",
            "--storage-driver",
            "vfs",
            "--root",
            str(self.root / "storage"),
            "--runroot",
            str(self.root / "run"),
            *args,
        ]
        env = dict(os.environ, BUILDAH_ISOLATION="chroot")
        with self.log.open("ab") as out:
            out.write(f"\n$ {' '.join(command)}\n".encode())
            out.flush()
            proc = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=out)
            out.write(proc.stdout)
        if proc.returncode != 0:
            tail = self.log.read_text(errors="replace").splitlines()[-30:]
            raise BuildError(f"buildah {args[0]} failed (log: {self.log}):\n" + "\n".join(tail))
        return proc.stdout.decode().strip()

    def build(
        self, context: Path, dockerfile: Path, tag: str, build_args: Mapping[str, str]
    ) -> None:
        """Build from this storage only: every FROM must be in it already (or be `scratch`).
        (chroot isolation shares the host's network; offline builds set PIP_NO_INDEX.)"""
        args = [f"--build-arg={k}={v}" for k, v in build_args.items()]
        self._run(
            "build",
            "--isolation=chroot",
            "--pull=never",
            "--layers=false",
            "-f",
            str(dockerfile),
            "-t",
            tag,
            *args,
            str(context),
        )

    def load(self, archive: Path, tag: str) -> None:
        """Put an image archive into this storage under `tag`."""
        image_id = self._run("pull", "--quiet", f"oci-archive:{archive}")
        self._run("tag", image_id.splitlines()[-1], tag)

    def export(self, tag: str, layout: Path, reference: str) -> None:
        """Write the image as an OCI layout naming it `reference` (gzip-compressed layers)."""
        self._run("push", "--quiet", tag, f"oci:{layout}:{reference}")
