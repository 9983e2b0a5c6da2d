"""`make images`: the base, runner, operator and example images, built with buildah without
Docker, cached by their inputs' hash and published to `dist/images/`.

Cache (`${XDG_CACHE_HOME:-~/.cache}/drover/images/`, shared by checkouts and CI runs):
`<name>-<key>/image.tar` per image (the base included) and `wheels-<key>/`. A build runs
in a buildah storage of its own that is thrown away afterwards; parents it did not build
itself are loaded from their cached archives. Published (`dist/images/`): one archive per
image for `docker load` / `kind load image-archive` / `skopeo copy`, and `oci/`, the layout
the local cluster's node agent runs pods from.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from drover_localcluster.errors import BuildError
from drover_localcluster.images import requirements
from drover_localcluster.images.archive import Store, write_archive
from drover_localcluster.images.buildah import Buildah, missing_tools
from drover_localcluster.images.layout import Layout
from drover_localcluster.images.specs import (
    BASE_DOCKERFILE,
    BASE_SCRIPT,
    PROJECT_IMAGES,
    ImageSpec,
    base_key,
    context_files,
    image_key,
    image_tag,
)
from drover_localcluster.settings import cache_root

# Cache pruning: every code change makes new images, so of each kind only the most recently
# used entries are kept (other checkouts, or a running cluster, may use them), and of those
# only the ones used within two weeks. Nothing used within the last hour is removed.
_KEEP = {"rootfs": 12, "other": 4, "unpack": 0}  # unpack-*: left by an agent killed mid-way
_PRUNE_AFTER_S = 14 * 24 * 3600
_GRACE_S = 3600


def _log(message: str) -> None:
    print(f"[drover-images] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BuiltImage:
    """One image in the cache: where its archive is and what it holds."""

    name: str
    reference: str
    key: str
    digest: str
    archive_bytes: int  # compressed, as pushed or loaded
    unpacked_bytes: int  # the layers' uncompressed size, about what it takes on a node

    @classmethod
    def load(cls, entry: Path) -> BuiltImage:
        return cls(**json.loads((entry / "image.json").read_text()))


@dataclass(frozen=True)
class Published:
    """What `make images` left in `dist/images/`."""

    images: list[BuiltImage]
    store: Path
    archives: dict[str, Path]  # reference → archive
    built: list[str]  # names built by this call (the others came from the cache)
    seconds: float


def images_cache() -> Path:
    return cache_root() / "images"


def dist_dir(repo: Path) -> Path:
    return repo / "dist" / "images"


def image_store(repo: Path) -> Path:
    """The layout a local cluster started from `repo` runs pods' images from."""
    return dist_dir(repo) / "oci"


def rootfs_cache() -> Path:
    """Where node agents unpack images' root filesystems (shared by clusters)."""
    return images_cache() / "rootfs"


def archive_name(reference: str) -> str:
    """`ghcr.io/drover-dev/drover-runner:0.1.0` → `drover-runner-0.1.0.tar`."""
    name, tag = reference.rsplit("/", 1)[-1].rsplit(":", 1)
    return f"{name}-{tag}.tar"


@contextlib.contextmanager
def _lock(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _unpacked_size(layout: Layout, digest: str) -> int:
    total = 0
    for layer in layout.image("", digest).layers:
        with gzip.open(layout.blob(layer)) as stream:
            while chunk := stream.read(1 << 20):
                total += len(chunk)
    return total


class ImageBuild:
    """One `make images` run: keys first, then only the missing images are built."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.cache = images_cache()
        self.tag = image_tag(repo)
        self.wheels_key = requirements.key(repo)
        self.keys: dict[str, str] = {"base": base_key(repo)}
        for spec in PROJECT_IMAGES:
            wheels = self.wheels_key if spec.offline_wheels else ""
            self.keys[spec.name] = image_key(repo, spec, self.tag, self.keys[spec.parent], wheels)
        self.built: list[str] = []
        self._buildah: Buildah | None = None
        self._work: Path | None = None
        self._loaded: set[str] = set()

    def entry(self, name: str) -> Path:
        return self.cache / f"{name}-{self.keys[name]}"

    def cached(self, name: str) -> bool:
        return (self.entry(name) / "image.json").is_file()

    def build_tag(self, name: str) -> str:
        return f"localhost/drover-build/{name}:{self.keys[name]}"

    # -- building ----------------------------------------------------------------------------

    def run(self) -> list[BuiltImage]:
        names = ["base", *(spec.name for spec in PROJECT_IMAGES)]
        if all(self.cached(n) for n in names):
            for name in names:
                self.entry(name).touch()
            return [BuiltImage.load(self.entry(s.name)) for s in PROJECT_IMAGES]
        self.cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="build-", dir=self.cache) as tmp:
            self._work = Path(tmp)
            self._buildah = Buildah(self._work, self.cache / "build.log")
            (self.cache / "build.log").write_text("")
            try:
                if not self.cached("base"):
                    self._build_base()
                for spec in PROJECT_IMAGES:
                    if not self.cached(spec.name):
                        self._build(spec)
            finally:
                self._buildah = None
        for name in names:
            self.entry(name).touch()
        self._prune()
        return [BuiltImage.load(self.entry(s.name)) for s in PROJECT_IMAGES]

    def _ensure_loaded(self, name: str) -> None:
        """The image `name` in this run's storage under its build tag."""
        assert self._buildah is not None
        if name not in self._loaded:
            self._buildah.load(self.entry(name) / "image.tar", self.build_tag(name))
            self._loaded.add(name)

    def _build_base(self) -> None:
        assert self._buildah is not None and self._work is not None
        started = time.monotonic()
        context = self._work / "context-base"
        context.mkdir()
        shutil.copy(self.repo / BASE_DOCKERFILE, context / "Dockerfile")
        _log("building the base root filesystem from Debian packages (scripts/base-rootfs.sh)")
        with (self.cache / "build.log").open("ab") as log:
            proc = subprocess.run(
                [str(self.repo / BASE_SCRIPT), str(context / "rootfs.tar")],
                stdout=log,
                stderr=log,
            )
        if proc.returncode != 0:
            raise BuildError(f"{BASE_SCRIPT} failed; see {self.cache / 'build.log'}")
        self._buildah.build(context, context / "Dockerfile", self.build_tag("base"), {})
        self._loaded.add("base")
        self._export("base", f"localhost/drover/base:{self.keys['base']}", started)

    def _build(self, spec: ImageSpec) -> None:
        assert self._buildah is not None and self._work is not None
        started = time.monotonic()
        _log(f"building {spec.reference(self.tag)} ({spec.dockerfile})")
        self._ensure_loaded(spec.parent)
        context = self._work / f"context-{spec.name}"
        for name in context_files(self.repo, (*spec.context, spec.dockerfile)):
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.repo / name, context / name)
        for generated in spec.generated:
            if not (self.repo / generated).is_dir():
                raise BuildError(f"{generated} is missing: run scripts/dashboard-assets.sh")
            shutil.copytree(self.repo / generated, context / generated, dirs_exist_ok=True)
        build_args = {spec.parent_arg: self.build_tag(spec.parent)}
        if spec.offline_wheels:
            wheels = self._wheelhouse()
            for wheel in wheels.glob("*.whl"):
                shutil.copy(wheel, context / "images" / "wheels" / wheel.name)
            build_args["PIP_NO_INDEX"] = "true"
        dockerfile = context / spec.dockerfile
        self._buildah.build(context, dockerfile, self.build_tag(spec.name), build_args)
        self._loaded.add(spec.name)
        self._export(spec.name, spec.reference(self.tag), started)

    def _wheelhouse(self) -> Path:
        target = self.cache / f"wheels-{self.wheels_key}"
        if not (target / ".complete").exists():
            _log("downloading the pinned wheels (hash-checked against uv.lock)")
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            requirements.download(self.repo, partial, self.cache / "build.log")
            (partial / ".complete").touch()
            shutil.rmtree(target, ignore_errors=True)
            partial.rename(target)
        target.touch()
        return target

    def _export(self, name: str, reference: str, started: float) -> None:
        assert self._buildah is not None and self._work is not None
        layout = Layout(self._work / f"layout-{name}")
        self._buildah.export(self.build_tag(name), layout.path, reference)
        staging = self._work / f"entry-{name}"
        staging.mkdir()
        write_archive(layout, reference, staging / "image.tar")
        digest = layout.index()["manifests"][0]["digest"]
        image = BuiltImage(
            name=name,
            reference=reference,
            key=self.keys[name],
            digest=digest,
            archive_bytes=(staging / "image.tar").stat().st_size,
            unpacked_bytes=_unpacked_size(layout, digest),
        )
        (staging / "image.json").write_text(json.dumps(asdict(image), indent=2))
        shutil.rmtree(self.entry(name), ignore_errors=True)
        staging.rename(self.entry(name))
        self.built.append(name)
        _log(f"built {reference} in {time.monotonic() - started:.0f}s")

    def _prune(self) -> None:
        current = {self.entry(n).name for n in self.keys} | {f"wheels-{self.wheels_key}"}
        prune(self.cache, rootfs_cache(), current, time.time())


def prune(cache: Path, rootfs: Path, current: set[str], now: float) -> None:
    """Remove cached entries by the rules above (`current`: entries this build uses)."""
    kinds: dict[str, list[Path]] = {}
    for entry in cache.iterdir():
        if entry.is_dir() and entry != rootfs and not entry.name.startswith("build-"):
            kinds.setdefault(entry.name.rsplit("-", 1)[0], []).append(entry)
    if rootfs.is_dir():  # node agents touch a root filesystem when they use it
        for entry in rootfs.iterdir():
            if entry.is_dir():
                kind = "unpack" if entry.name.startswith("unpack-") else "rootfs"
                kinds.setdefault(kind, []).append(entry)
    for kind, entries in kinds.items():
        keep = _KEEP.get(kind, _KEEP["other"])
        entries.sort(key=lambda e: e.stat().st_mtime, reverse=True)
        for rank, entry in enumerate(entries):
            age = now - entry.stat().st_mtime
            old = age > _PRUNE_AFTER_S or (rank >= keep and age > _GRACE_S)
            if entry.name not in current and old:
                shutil.rmtree(entry, ignore_errors=True)
                entry.with_name(entry.name + ".lock").unlink(missing_ok=True)


def _publish(repo: Path, images: list[BuiltImage]) -> tuple[Path, dict[str, Path]]:
    """Copy the archives into dist/images and make its store hold exactly them."""
    dist = dist_dir(repo)
    dist.mkdir(parents=True, exist_ok=True)
    record = dist / "images.json"
    wanted = {i.reference: i.key for i in images}
    archives = {i.reference: dist / archive_name(i.reference) for i in images}
    store = Store(image_store(repo))
    current = json.loads(record.read_text()) if record.is_file() else {}
    if current == wanted and all(a.is_file() for a in archives.values()):
        return store.path, archives
    record.unlink(missing_ok=True)
    for image in images:
        source = images_cache() / f"{image.name}-{image.key}" / "image.tar"
        tmp = archives[image.reference].with_suffix(".tmp")
        shutil.copyfile(source, tmp)
        tmp.replace(archives[image.reference])
    with store.locked(exclusive=True):
        store.replace_all(list(archives.values()))
    record.write_text(json.dumps(wanted, indent=2) + "\n")
    return store.path, archives


def ensure_images(repo: Path) -> Published:
    """Build whatever image is missing from the cache, then publish all to dist/images."""
    started = time.monotonic()
    missing = missing_tools()
    if missing:
        raise BuildError(
            f"missing {', '.join(missing)}: `make bootstrap` installs them "
            "(apt-get install buildah mmdebstrap umoci skopeo)"
        )
    stale = requirements.stale(repo)
    if stale:
        names = ", ".join(str(p.relative_to(repo)) for p in stale)
        raise BuildError(f"{names} differ from uv.lock: run `make image-requirements`")
    build = ImageBuild(repo)
    with _lock(build.cache):
        images = build.run()
        store, archives = _publish(repo, images)
    return Published(images, store, archives, build.built, time.monotonic() - started)
