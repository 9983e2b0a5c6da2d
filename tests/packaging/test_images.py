"""The images `make images` builds: a second build reuses the cache, the archives load by
both the OCI and the Docker archive formats under the chart's tags, and each image holds what
its entrypoint imports (the runner image the SDK without the operator's libraries)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import subprocess
import tarfile
from pathlib import Path

import pytest

from drover_localcluster.images.build import Published, ensure_images, images_cache
from drover_localcluster.images.layout import Layout
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.packaging

RUNNER = "ghcr.io/drover-dev/drover-runner"
OPERATOR = "ghcr.io/drover-dev/drover-operator"
EXAMPLES = "ghcr.io/drover-dev/drover-examples"


@pytest.fixture(scope="module")
def published() -> Published:
    return ensure_images(REPO_ROOT)  # cold on a fresh machine: builds them (minutes)


def reference_of(published: Published, repository: str) -> str:
    return next(ref for ref in published.archives if ref.startswith(repository + ":"))


@functools.cache
def layer_files(blob: Path) -> frozenset[str]:
    with gzip.open(blob) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        return frozenset(member.name.removeprefix("./") for member in tar)


def files_of(layout: Layout, reference: str) -> set[str]:
    """Every path the image adds to its base (Debian and an empty venv, the first layer of
    every image here)."""
    image = layout.find(reference)
    assert image is not None
    return set().union(*(layer_files(layout.blob(layer)) for layer in image.layers[1:]))


def test_a_second_build_reuses_the_cache(published: Published) -> None:
    def state() -> dict[str, tuple[int, int]]:
        files = [images_cache() / f"{i.name}-{i.key}" / "image.tar" for i in published.images]
        files += list(published.archives.values())
        return {str(f): (f.stat().st_ino, f.stat().st_mtime_ns) for f in files}

    before = state()
    again = ensure_images(REPO_ROOT)
    assert again.built == []
    assert [i.key for i in again.images] == [i.key for i in published.images]
    assert state() == before  # nothing rebuilt, nothing copied again


@pytest.mark.parametrize("transport", ["oci-archive", "docker-archive"])
def test_archives_load_in_both_formats_under_the_charts_tags(
    published: Published, transport: str
) -> None:
    chart = (REPO_ROOT / "helm" / "drover" / "Chart.yaml").read_text()
    app_version = next(
        line.split(":", 1)[1].strip().strip('"')
        for line in chart.splitlines()
        if line.startswith("appVersion:")
    )
    store = Layout(published.store)
    for reference, archive in published.archives.items():
        assert reference.endswith(f":{app_version}")
        # docker-archive selects by RepoTags (what `docker load` names the image by);
        # oci-archive by the tag annotation (what containerd's import uses, with the full name).
        name = reference if transport == "docker-archive" else app_version
        config = subprocess.run(
            ["skopeo", "inspect", "--config", "--raw", f"{transport}:{archive}:{name}"],
            capture_output=True,
            check=True,
        ).stdout
        image = store.find(reference)
        assert image is not None
        manifest = store.read_json(image.digest)
        assert f"sha256:{hashlib.sha256(config).hexdigest()}" == manifest["config"]["digest"]


def test_images_run_as_10001_with_their_entrypoints(published: Published) -> None:
    store = Layout(published.store)
    configs = {r.rsplit(":", 1)[0]: store.find(r) for r in published.archives}
    for image in configs.values():
        assert image is not None and image.config.user == "10001:10001"
    operator, runner = configs[OPERATOR], configs[RUNNER]
    assert operator is not None and runner is not None
    assert (operator.config.entrypoint, operator.config.cmd) == (("drover-operator",), ("run",))
    assert runner.config.cmd == ("python", "-m", "drover.runner")
    assert "PYTHONPATH=/app" in runner.config.env and runner.config.working_dir == "/app"


def test_the_runner_image_holds_the_sdk_and_nothing_of_the_operator(
    published: Published,
) -> None:
    store = Layout(published.store)
    site = "opt/venv/lib/python3.11/site-packages"
    runner = files_of(store, reference_of(published, RUNNER))
    assert f"{site}/drover/runner.py" in runner and f"{site}/pydantic/__init__.py" in runner
    for absent in ("kopf", "psycopg", "drover_operator", "lightkube"):
        assert f"{site}/{absent}/__init__.py" not in runner, absent
    operator = files_of(store, reference_of(published, OPERATOR))
    for present in ("kopf", "psycopg", "drover_operator", "lightkube", "drover"):
        assert f"{site}/{present}/__init__.py" in operator, present
    examples = files_of(store, reference_of(published, EXAMPLES))
    assert {"app/examples/tasks.py", "app/examples/__init__.py"} <= examples
