"""OCI image layouts (https://github.com/opencontainers/image-spec/blob/main/image-layout.md):
finding an image by reference, its manifest and its config.

A layout is what `make images` publishes for the node agent (`dist/images/oci/`) and what
each image archive holds. Images are named by the full reference in the
`org.opencontainers.image.ref.name` annotation (`ghcr.io/drover-dev/drover-runner:0.1.0`);
references are normalized as Docker does, so `busybox` means `docker.io/library/busybox:latest`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REF_NAME = "org.opencontainers.image.ref.name"
# What `docker save` (25+) and containerd's `ctr import` name an image by.
CONTAINERD_NAME = "io.containerd.image.name"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def normalize(reference: str) -> str:
    """`busybox` → `docker.io/library/busybox:latest`; digests and explicit tags are kept."""
    name, digest = reference.split("@", 1) if "@" in reference else (reference, "")
    slash = name.find("/")
    first = name[:slash] if slash >= 0 else ""
    if slash < 0 or ("." not in first and ":" not in first and first != "localhost"):
        name = f"docker.io/{name}" if slash >= 0 else f"docker.io/library/{name}"
    if not digest and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return f"{name}@{digest}" if digest else name


def repository(reference: str) -> str:
    """The reference without tag or digest: `ghcr.io/drover-dev/drover-runner`."""
    name = normalize(reference).split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}"


@dataclass(frozen=True)
class ImageConfig:
    """What a runtime takes from an image's config (the OCI image config's `config`)."""

    user: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[str, ...]
    working_dir: str

    @classmethod
    def from_blob(cls, blob: dict[str, Any]) -> ImageConfig:
        config = blob.get("config") or {}
        return cls(
            user=config.get("User") or "",
            entrypoint=tuple(config.get("Entrypoint") or ()),
            cmd=tuple(config.get("Cmd") or ()),
            env=tuple(config.get("Env") or ()),
            working_dir=config.get("WorkingDir") or "",
        )


@dataclass(frozen=True)
class Image:
    """One image of a layout: its reference, manifest digest, layers and config."""

    reference: str
    digest: str
    config: ImageConfig
    layers: tuple[str, ...]

    @property
    def image_id(self) -> str:
        """As a kubelet reports `imageID`: `<repository>@<manifest digest>`."""
        return f"{repository(self.reference)}@{self.digest}"


class Layout:
    """An OCI image layout directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def blob(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        return self.path / "blobs" / algorithm / hexdigest

    def read_json(self, digest: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.blob(digest).read_text())
        return data

    def index(self) -> dict[str, Any]:
        index_file = self.path / "index.json"
        if not index_file.is_file():
            return {"schemaVersion": 2, "manifests": []}
        data: dict[str, Any] = json.loads(index_file.read_text())
        return data

    def references(self) -> dict[str, str]:
        """Full reference → manifest digest, for every named image."""
        found: dict[str, str] = {}
        for entry in self.index().get("manifests", []):
            name = (entry.get("annotations") or {}).get(REF_NAME)
            if name:
                found[normalize(name)] = entry["digest"]
        return found

    def find(self, reference: str) -> Image | None:
        """The image named `reference`, None when the layout has none by that name."""
        wanted = normalize(reference)
        digest = self.references().get(wanted)
        if digest is None and "@" in wanted:  # by digest: any image with that manifest
            digest = next(
                (d for d in self.references().values() if d == wanted.split("@", 1)[1]), None
            )
        if digest is None:
            return None
        return self.image(wanted, digest)

    def image(self, reference: str, digest: str) -> Image:
        manifest = self.read_json(digest)
        config = self.read_json(manifest["config"]["digest"])
        return Image(
            reference=reference,
            digest=digest,
            config=ImageConfig.from_blob(config),
            layers=tuple(layer["digest"] for layer in manifest.get("layers", [])),
        )

    def blobs_of(self, digest: str) -> set[str]:
        """Every blob an image uses: manifest, config, layers."""
        manifest = self.read_json(digest)
        return {
            digest,
            manifest["config"]["digest"],
            *(layer["digest"] for layer in manifest.get("layers", [])),
        }
