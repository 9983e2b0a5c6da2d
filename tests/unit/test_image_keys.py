"""Image cache keys: every input a build sees changes the key, and nothing else does."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
from pathlib import Path

from drover_localcluster.images.archive import write_archive
from drover_localcluster.images.build import archive_name, prune
from drover_localcluster.images.layout import Layout
from drover_localcluster.images.specs import ImageSpec, image_key

SPEC = ImageSpec(
    "runner", "ghcr.io/acme/runner", "images/runner/Dockerfile", ("runner",), "base", "BASE"
)


def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "runner").mkdir(parents=True)
    (root / "images" / "runner").mkdir(parents=True)
    (root / "images" / "runner" / "Dockerfile").write_text("FROM ${BASE}\n")
    (root / "runner" / "code.py").write_text("x = 1\n")
    (root / ".gitignore").write_text("__pycache__/\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    return root


def key(root: Path, *, tag: str = "1.0", parent: str = "p", wheels: str = "w") -> str:
    return image_key(root, SPEC, tag, parent, wheels)


def test_inputs_change_the_key_and_ignored_files_do_not(tmp_path: Path) -> None:
    root = repo(tmp_path)
    first = key(root)
    (root / "runner" / "__pycache__").mkdir()
    (root / "runner" / "__pycache__" / "code.cpython-311.pyc").write_bytes(b"\0")
    assert key(root) == first  # ignored by git: never in the build context
    assert key(root, tag="1.1") != first
    assert key(root, parent="q") != first
    assert key(root, wheels="v") != first
    (root / "runner" / "new.py").write_text("")  # untracked but not ignored: in the context
    second = key(root)
    assert second != first
    (root / "runner" / "code.py").write_text("x = 2\n")
    assert key(root) not in (first, second)
    (root / "images" / "runner" / "Dockerfile").write_text("FROM ${BASE}\nUSER 1\n")
    third = key(root)
    (root / "runner" / "new.py").chmod(0o755)
    assert key(root) != third  # the executable bit is copied into the image


def test_archive_names_follow_the_image_and_tag() -> None:
    assert archive_name("ghcr.io/drover-dev/drover-runner:0.1.0") == "drover-runner-0.1.0.tar"


def test_archive_holds_both_layouts_naming_the_same_blobs(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}"

    config = blob(b'{"config": {"User": "10001"}}')
    layer = blob(b"layer")
    document = {"schemaVersion": 2, "config": {"digest": config}, "layers": [{"digest": layer}]}
    manifest = blob(json.dumps(document).encode())
    (layout / "index.json").write_text(json.dumps({"manifests": [{"digest": manifest}]}))
    out = tmp_path / "image.tar"
    write_archive(Layout(layout), "ghcr.io/acme/app:1", out)
    with tarfile.open(out) as tar:
        names = tar.getnames()
        docker = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert names[:3] == ["oci-layout", "index.json", "manifest.json"]
    assert docker == [
        {
            "Config": f"blobs/sha256/{config[7:]}",
            "RepoTags": ["ghcr.io/acme/app:1"],
            "Layers": [f"blobs/sha256/{layer[7:]}"],
        }
    ]
    assert index["manifests"][0]["annotations"] == {
        "io.containerd.image.name": "ghcr.io/acme/app:1",
        "org.opencontainers.image.ref.name": "1",
    }
    assert sorted(n for n in names if n.startswith("blobs/")) == sorted(
        f"blobs/sha256/{d[7:]}" for d in (config, layer, manifest)
    )


def test_pruning_keeps_what_is_current_recent_or_among_the_last_used(tmp_path: Path) -> None:
    cache, rootfs = tmp_path / "images", tmp_path / "images" / "rootfs"
    now = 1_000_000_000.0
    ages = {  # entry → hours since last use
        "runner-current": 24 * 30,  # used by this build: kept however old
        **{f"runner-{i}": 2 + i for i in range(6)},  # 4 most recent kept, then > 1 h: removed
        "runner-fresh": 0.5,  # used within the hour: kept
        "operator-ancient": 24 * 15,  # beyond two weeks: removed even if among the last used
        "rootfs/sha256-a": 3,
        "rootfs/unpack-x": 2,  # left by a killed agent
    }
    for name, hours in ages.items():
        (cache / name).mkdir(parents=True)
        os.utime(cache / name, (now - hours * 3600, now - hours * 3600))
    prune(cache, rootfs, {"runner-current"}, now)
    left = {str(p.relative_to(cache)) for p in [*cache.iterdir(), *rootfs.iterdir()]}
    assert left == {
        "rootfs",
        "runner-current",
        "runner-fresh",
        "runner-0",
        "runner-1",
        "runner-2",
        "rootfs/sha256-a",
    }
