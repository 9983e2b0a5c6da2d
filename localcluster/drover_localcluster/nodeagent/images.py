"""The node's local image store: which pods run inside an image, and that image's root
filesystem, unpacked once per machine.

The store is the OCI layout `make images` publishes (`dist/images/oci/` of the checkout the
cluster runs from). A container whose image is named there runs inside it; any other image
keeps running as a host process. Root filesystems are unpacked with umoci into
`<cache>/images/rootfs/<manifest digest>/`, shared read-only by every container of that image
(each gets an overlay of its own) and kept across clusters: unpacking happens once per image.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from drover_localcluster.images.archive import Store
from drover_localcluster.images.layout import Image


class ImageUnpackError(Exception):
    """The image is in the store but could not be unpacked (reported as `ErrImagePull`)."""


@dataclass(frozen=True)
class PreparedImage:
    """An image ready to run: its metadata and its unpacked root filesystem."""

    image: Image
    rootfs: Path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class ImageStore:
    """Looks images up in the store and unpacks them on first use."""

    def __init__(self, store: Path | None, rootfs_cache: Path) -> None:
        self.store = Store(store) if store is not None else None
        self.rootfs_cache = rootfs_cache

    async def prepare(self, reference: str) -> PreparedImage | None:
        """The image named `reference` with its root filesystem, None when the store has no
        such image (the container then runs as a host process)."""
        if self.store is None or not (self.store.path / "index.json").is_file():
            return None
        return await asyncio.to_thread(self._prepare, reference)

    def _prepare(self, reference: str) -> PreparedImage | None:
        assert self.store is not None
        # Shared with other readers; `make images` replaces images under the exclusive lock,
        # so an image cannot change or lose its blobs while it is unpacked.
        with self.store.locked(exclusive=False):
            try:
                image = self.store.find(reference)
            except (OSError, ValueError, KeyError) as exc:
                raise ImageUnpackError(f"reading the image store {self.store.path}: {exc}") from exc
            if image is None:
                return None
            target = self.rootfs_cache / image.digest.replace(":", "-")
            with _locked(target.with_name(target.name + ".lock")):
                if not target.is_dir():
                    self._unpack(image, target)
        target.touch()  # last use: `make images` prunes root filesystems unused for weeks
        return PreparedImage(image, target)

    def _unpack(self, image: Image, target: Path) -> None:
        assert self.store is not None
        with tempfile.TemporaryDirectory(prefix="unpack-", dir=self.rootfs_cache) as tmp:
            rootfs = Path(tmp) / "rootfs"
            proc = subprocess.run(
                [
                    "umoci",
                    "raw",
                    "unpack",
                    "--image",
                    f"{self.store.path}:{image.reference}",
                    str(rootfs),
                ],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                raise ImageUnpackError(f"unpacking {image.reference}: {proc.stderr.strip()}")
            rootfs.rename(target)
