"""The images' dependency pins, from uv.lock, and the wheels for building them offline.

`images/<image>/requirements.txt` are committed so that a plain `docker build` installs the
versions the tests ran with (pip reads them as constraints); `make lint` checks they match
uv.lock. `make images` downloads the same versions' wheels on the host, hash-checked against
uv.lock, and builds without an index: pip inside the build then needs no network and no
trust in the host's TLS setup (this machine's proxy certificate is not in the image).
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from pathlib import Path

from drover_localcluster.errors import BuildError

# image → the workspace distribution whose dependencies it installs.
DISTRIBUTIONS = {"runner": "drover", "operator": "drover-operator"}
# The build backend pip fetches to build the project's wheels (pyproject: setuptools>=68).
BUILD_REQUIREMENTS = ("setuptools==84.2.1",)

HEADER = (
    "# Generated from uv.lock by `make image-requirements`; `make lint` checks it is current.\n"
    "# The Dockerfile installs with these as constraints: the versions the tests run.\n"
)


def _uv() -> str:
    return str(Path(sys.executable).parent / "uv")


def export(repo: Path, distribution: str, *, hashes: bool) -> str:
    """`distribution`'s dependencies (not the workspace's own packages) pinned by uv.lock."""
    args = [
        _uv(),
        "export",
        "--frozen",
        "--no-dev",
        "--package",
        distribution,
        "--no-emit-workspace",
        "--no-annotate",
        "--no-header",
    ]
    if not hashes:
        args.append("--no-hashes")
    proc = subprocess.run(args, cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"uv export failed: {proc.stderr}")
    return proc.stdout


def requirements_file(repo: Path, image: str) -> Path:
    return repo / "images" / image / "requirements.txt"


def render(repo: Path, image: str) -> str:
    return HEADER + export(repo, DISTRIBUTIONS[image], hashes=False)


def stale(repo: Path) -> list[Path]:
    """Requirement files that differ from what uv.lock says."""
    return [
        requirements_file(repo, image)
        for image in DISTRIBUTIONS
        if not requirements_file(repo, image).is_file()
        or requirements_file(repo, image).read_text() != render(repo, image)
    ]


def write(repo: Path) -> None:
    for image in DISTRIBUTIONS:
        requirements_file(repo, image).write_text(render(repo, image))


def wheelhouse_inputs(repo: Path) -> str:
    """Everything the wheelhouse is made from (its cache key hashes this)."""
    pinned = "".join(export(repo, d, hashes=True) for d in DISTRIBUTIONS.values())
    return pinned + "\n".join(BUILD_REQUIREMENTS)


def key(repo: Path) -> str:
    return hashlib.sha256(wheelhouse_inputs(repo).encode()).hexdigest()[:16]


def download(repo: Path, target: Path, log: Path) -> None:
    """Every pinned wheel (hash-checked) and the build backend into `target`."""
    target.mkdir(parents=True, exist_ok=True)
    # Wheels for the images' Python (Debian bookworm's CPython 3.11, glibc 2.36), whatever
    # Python runs this.
    pip = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q"]
    pip += ["--only-binary=:all:", "--no-deps", "--dest", str(target)]
    pip += ["--implementation=cp", "--python-version=3.11", "--abi=cp311"]
    arch = platform.machine()
    pip += [f"--platform=manylinux_2_{minor}_{arch}" for minor in range(36, 16, -1)]
    pip += [f"--platform=manylinux{legacy}_{arch}" for legacy in ("2014", "2010", "1")]
    for distribution in DISTRIBUTIONS.values():
        pinned = target.parent / f"{target.name}-{distribution}.txt"
        pinned.write_text(export(repo, distribution, hashes=True))
        _pip(log, [*pip, "--require-hashes", "-r", str(pinned)])
        pinned.unlink()
    _pip(log, [*pip, *BUILD_REQUIREMENTS])


def _pip(log: Path, args: list[str]) -> None:
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(args)}\n".encode())
        out.flush()
        proc = subprocess.run(args, stdout=out, stderr=out)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        raise BuildError(f"downloading wheels failed (log: {log}):\n" + "\n".join(tail))
