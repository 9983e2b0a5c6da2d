"""Image archives that every usual loader accepts, and the node's image store fed from them.

An archive is written the way `docker save` (25 and later) writes one: an OCI image layout
(`oci-layout`, `index.json`, `blobs/`) plus Docker's `manifest.json` naming the same blobs.
So `docker load` (any version), `kind load image-archive` (containerd's import, which names the
image by `io.containerd.image.name`), `skopeo copy oci-archive:…` and `skopeo copy
docker-archive:…` all read it. Entries are sorted with fixed owners and times, so the same
image gives the same archive bytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from drover_localcluster.images.layout import CONTAINERD_NAME, REF_NAME, Layout, normalize


def _tag(reference: str) -> str:
    name = normalize(reference).split("@", 1)[0]
    return name.rsplit(":", 1)[1]


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> None:
    info = tarfile.TarInfo(name)
    info.size = path.stat().st_size
    info.mode = 0o644
    with path.open("rb") as data:
        tar.addfile(info, data)


def write_archive(layout: Layout, reference: str, out: Path) -> None:
    """Write the one image of `layout` (as `buildah push … oci:` leaves it) to `out`."""
    entries = layout.index()["manifests"]
    if len(entries) != 1:
        raise ValueError(f"{layout.path}: expected one image, found {len(entries)}")
    descriptor = dict(entries[0])
    descriptor["annotations"] = {CONTAINERD_NAME: reference, REF_NAME: _tag(reference)}
    index = {"schemaVersion": 2, "manifests": [descriptor]}
    manifest = layout.read_json(descriptor["digest"])
    blob = "blobs/{}/{}".format
    docker_manifest = [
        {
            "Config": blob(*manifest["config"]["digest"].split(":", 1)),
            "RepoTags": [reference],
            "Layers": [blob(*layer["digest"].split(":", 1)) for layer in manifest["layers"]],
        }
    ]
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add_bytes(tar, "index.json", json.dumps(index).encode())
        _add_bytes(tar, "manifest.json", json.dumps(docker_manifest).encode())
        digests = sorted(layout.blobs_of(descriptor["digest"]))
        for digest in digests:
            _add_file(tar, blob(*digest.split(":", 1)), layout.blob(digest))
    tmp.replace(out)


def archive_index(archive: Path) -> dict[str, Any]:
    """The `index.json` of an archive (written near its start, so this reads little)."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        assert member is not None
        data: dict[str, Any] = json.load(member)
        return data


class Store(Layout):
    """The node agent's image store: one OCI layout holding every published image by its
    full reference. Writers hold its lock exclusively, the agent shares it while it reads."""

    @contextlib.contextmanager
    def locked(self, *, exclusive: bool) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        with (self.path / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield

    def replace_all(self, archives: list[Path]) -> None:
        """Hold exactly the images of `archives`; blobs nothing names any more are removed.
        Call under the exclusive lock."""
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        manifests = []
        for archive in archives:
            with tarfile.open(archive) as tar:
                for member in tar:
                    if member.isfile() and member.name.startswith("blobs/"):
                        target = self.path / member.name
                        if not target.exists():
                            source = tar.extractfile(member)
                            assert source is not None
                            partial = target.with_name(target.name + ".partial")
                            with partial.open("wb") as out:
                                shutil.copyfileobj(source, out)
                            partial.replace(target)
            for entry in archive_index(archive)["manifests"]:
                annotations = entry.get("annotations") or {}
                reference = annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME)
                if not reference:
                    raise ValueError(f"{archive}: an image without a name")
                manifests.append({**entry, "annotations": {REF_NAME: normalize(reference)}})
        tmp = self.path / "index.json.tmp"
        tmp.write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}, indent=1))
        tmp.replace(self.path / "index.json")
        used = set().union(*(self.blobs_of(m["digest"]) for m in manifests)) if manifests else set()
        for path in (self.path / "blobs" / "sha256").iterdir():
            if f"sha256:{path.name}" not in used:
                path.unlink()
