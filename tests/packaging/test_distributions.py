"""The three distributions built from this repository: a task image installs `drover` alone,
and gets the SDK and the wire protocol without the operator or its libraries."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.packaging

UV = Path(sys.executable).parent / "uv"


def _run(*args: str | Path, cwd: Path = REPO_ROOT) -> str:
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, f"{' '.join(map(str, args))}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    # Built from copies: setuptools leaves a build/ directory next to the sources.
    sources = tmp_path_factory.mktemp("sources")
    for project in ("runner", "operator", "localcluster", "cli"):
        shutil.copytree(
            REPO_ROOT / project,
            sources / project,
            ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"),
        )
        _run(UV, "build", "--wheel", "--quiet", "--out-dir", out, sources / project)
    found = {p.name.split("-")[0]: p for p in out.glob("*.whl")}
    assert set(found) == {"drover", "drover_operator", "drover_localcluster", "drover_cli"}, found
    return found


def test_the_sdk_wheel_holds_the_sdk_and_the_protocol_only(wheels: dict[str, Path]) -> None:
    names = zipfile.ZipFile(wheels["drover"]).namelist()
    packages = {n.split("/")[0] for n in names if not n.startswith("drover-")}
    assert packages == {"drover"}
    assert "drover/protocol/wire.py" in names and "drover/runner.py" in names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    requires = [
        line.removeprefix("Requires-Dist: ")
        for line in zipfile.ZipFile(wheels["drover"]).read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist: ")
    ]
    assert [r for r in requires if "extra ==" not in r] == ["pydantic>=2.7"]


def test_pip_install_drover_brings_no_operator(wheels: dict[str, Path], tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    # From uv's cache when the development install filled it; from the index otherwise.
    install: list[str | Path] = [UV, "pip", "install", "--python", python, wheels["drover"]]
    proc = subprocess.run(
        [str(a) for a in [*install, "--offline"]], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        _run(*install)
    installed = {
        re.split(r"==| @ ", line)[0].lower()
        for line in _run(UV, "pip", "freeze", "--python", python).splitlines()
    }
    assert "drover" in installed and "pydantic" in installed
    forbidden = {"kopf", "psycopg", "psycopg-binary", "psycopg-pool", "lightkube", "aiohttp"}
    assert installed & forbidden == set()
    assert not any(name.startswith("drover-") for name in installed)
    probe = (
        "import importlib.util as u, drover, drover.protocol.wire, drover.runner;"
        "print(u.find_spec('drover_operator'), u.find_spec('kopf'), u.find_spec('psycopg'))"
    )
    assert _run(python, "-c", probe, cwd=tmp_path).strip() == "None None None"
    assert (venv / "bin" / "drover-runner").exists()


def test_the_operator_depends_on_the_same_sdk(wheels: dict[str, Path]) -> None:
    archive = zipfile.ZipFile(wheels["drover_operator"])
    metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    text = archive.read(metadata).decode()
    assert "Requires-Dist: drover==0.1.0.dev0" in text
    assert "Requires-Dist: kopf" in text
    assert not any(n.startswith("drover/") for n in archive.namelist())


def test_the_operator_ships_the_dashboard_with_its_libraries(wheels: dict[str, Path]) -> None:
    """Templates, its own script and styles, and the npm libraries (never committed: copied
    in by scripts/dashboard-assets.sh, which `make bootstrap` runs)."""
    names = set(zipfile.ZipFile(wheels["drover_operator"]).namelist())
    where = "drover_operator/api/dashboard"
    for name in (
        "templates/base.html",
        "templates/run.html",
        "static/app.js",
        "static/dashboard.css",
        "static/vendor/htmx.min.js",
        "static/vendor/sse.min.js",
        "static/vendor/uPlot.iife.min.js",
        "static/vendor/uPlot.min.css",
    ):
        assert f"{where}/{name}" in names, name


def test_the_command_line_is_a_client_with_two_console_scripts(wheels: dict[str, Path]) -> None:
    archive = zipfile.ZipFile(wheels["drover_cli"])
    names = archive.namelist()
    assert {n.split("/")[0] for n in names if not n.startswith("drover_cli-")} == {"drover_cli"}
    scripts = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "drover = drover_cli.main:main" in scripts
    assert "kubectl-drover = drover_cli.main:main" in scripts
    metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Requires-Dist: drover[client]==0.1.0.dev0" in metadata
    assert "kopf" not in metadata and "psycopg" not in metadata
