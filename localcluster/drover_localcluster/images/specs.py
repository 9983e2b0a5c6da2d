"""The images `make images` builds, what each is built from, and its cache key.

A key hashes every input of a build: the Dockerfile, each file of the build context the
Dockerfile copies (as git sees the working tree: tracked and untracked-but-not-ignored
files), the tag, the parent image's key and, for offline builds, the wheelhouse's key. Equal
keys mean equal builds, so a cached archive is reused across checkouts and CI runs.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

KEY_FORMAT = "1"  # bump to invalidate every cached image
BASE_SCRIPT = "scripts/base-rootfs.sh"
BASE_DOCKERFILE = "images/base/Dockerfile"


@dataclass(frozen=True)
class ImageSpec:
    """One image built from a Dockerfile in this repository."""

    name: str
    repository: str
    dockerfile: str
    # Repository paths (files or directories) the build context must hold.
    context: tuple[str, ...]
    parent: str  # the image it is built FROM ("base" or another spec's name)
    parent_arg: str  # the build argument that names the parent
    offline_wheels: bool = False
    # Build outputs the context must hold although git ignores them (their inputs, such as a
    # lockfile, are tracked and so in the key).
    generated: tuple[str, ...] = ()

    def reference(self, tag: str) -> str:
        return f"{self.repository}:{tag}"


PROJECT_IMAGES = (
    ImageSpec(
        "runner",
        "ghcr.io/drover-dev/drover-runner",
        "images/runner/Dockerfile",
        ("images/runner", "images/wheels", "runner"),
        parent="base",
        parent_arg="BASE",
        offline_wheels=True,
    ),
    ImageSpec(
        "operator",
        "ghcr.io/drover-dev/drover-operator",
        "images/operator/Dockerfile",
        ("images/operator", "images/wheels", "runner", "operator"),
        parent="base",
        parent_arg="BASE",
        offline_wheels=True,
        # The dashboard's npm libraries (scripts/dashboard-assets.sh; operator/assets).
        generated=("operator/drover_operator/api/dashboard/static/vendor",),
    ),
    ImageSpec(
        "examples",
        "ghcr.io/drover-dev/drover-examples",
        "examples/Dockerfile",
        ("examples/Dockerfile", "examples/__init__.py", "examples/tasks.py"),
        parent="runner",
        parent_arg="RUNNER",
    ),
)


def image_tag(repo: Path) -> str:
    """The tag the chart expects: its appVersion."""
    chart = (repo / "helm" / "drover" / "Chart.yaml").read_text()
    match = re.search(r'^appVersion:\s*"?([^"\s]+)"?\s*$', chart, flags=re.M)
    assert match is not None, "helm/drover/Chart.yaml has no appVersion"
    return match.group(1)


def context_files(repo: Path, paths: tuple[str, ...]) -> list[str]:
    """The files under `paths` a build sees: git's view of the working tree (so caches,
    virtualenvs and build leftovers that .gitignore names never reach an image)."""
    proc = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *paths],
        cwd=repo,
        capture_output=True,
        check=True,
    )
    names = {n.decode() for n in proc.stdout.split(b"\0") if n}
    return sorted(n for n in names if (repo / n).is_file())  # deleted but still tracked: gone


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:16]


def base_key(repo: Path) -> str:
    mirrors = (os.environ.get("DEBIAN_MIRROR", ""), os.environ.get("DEBIAN_SECURITY_MIRROR", ""))
    return _digest(
        KEY_FORMAT.encode(),
        platform.machine().encode(),
        (repo / BASE_SCRIPT).read_bytes(),
        (repo / BASE_DOCKERFILE).read_bytes(),
        "\n".join(mirrors).encode(),
    )


def image_key(repo: Path, spec: ImageSpec, tag: str, parent_key: str, wheels_key: str) -> str:
    parts = [KEY_FORMAT, spec.name, spec.reference(tag), spec.dockerfile, parent_key, wheels_key]
    blobs = [p.encode() for p in parts]
    for name in context_files(repo, (*spec.context, spec.dockerfile)):
        path = repo / name
        executable = b"x" if os.access(path, os.X_OK) else b"-"
        blobs += [name.encode(), executable, path.read_bytes()]
    return _digest(*blobs)
