"""Build the cluster's binaries from their Go modules and cache them by version.

`k8s.io/kubernetes` and the etcd server module carry `replace` directives pointing into their
own source trees, so `go install mod@version` refuses them. We generate a small wrapper module
that requires them and pins each replaced module to its published version, then `go build` the
commands from it. Helm's module has no replace directives and is `go install`ed directly.
Prometheus' module (for `promtool`, used by the metrics tests) carries a non-local replace
directive, so it gets a wrapper module too, with its replace lines copied.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from drover_localcluster.errors import BuildError
from drover_localcluster.settings import Versions, cache_root

KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


@dataclass(frozen=True)
class Binaries:
    """Paths of every binary the local cluster runs. Helm is not needed to run a cluster:
    `helm` is where it is once `ensure_helm()` built it (the chart's tests do)."""

    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    etcd: Path
    helm: Path

    @property
    def directories(self) -> list[Path]:
        """Directories to put first on PATH, without duplicates."""
        seen: list[Path] = []
        for path in (self.kubectl, self.etcd, self.helm):
            if path.parent not in seen:
                seen.append(path.parent)
        return seen


def _log(message: str) -> None:
    print(f"[drover-localcluster] {message}", file=sys.stderr, flush=True)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "Go is not installed or not on PATH. The local cluster builds Kubernetes, etcd and "
            "Helm from their Go modules: install Go 1.25 or newer (https://go.dev/doc/install) "
            "and run again."
        )
    return go


def _run_go(args: list[str], cwd: Path, log: Path, **extra_env: str) -> None:
    env = dict(os.environ, GOFLAGS="-mod=mod", CGO_ENABLED="0", **extra_env)
    with log.open("ab") as out:
        out.write(f"\n$ go {' '.join(args)}\n".encode())
        out.flush()
        proc = subprocess.run([_go(), *args], cwd=cwd, env=env, stdout=out, stderr=out)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        raise BuildError(f"go {args[0]} failed (log: {log}):\n" + "\n".join(tail))


def _mod_file(module: str, version: str, cwd: Path, log: Path) -> str:
    """The go.mod of a published module version, fetched through the module proxy."""
    proc = subprocess.run(
        [_go(), "mod", "download", "-json", f"{module}@{version}"],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        log.write_text(proc.stdout + proc.stderr)
        raise BuildError(f"could not download {module}@{version} (log: {log}): {proc.stderr}")
    return Path(json.loads(proc.stdout)["GoMod"]).read_text()


def _go_directives(mod: str) -> str:
    """The `go` and `godebug` lines, so the wrapper builds with the upstream defaults."""
    return "\n".join(line for line in mod.splitlines() if re.match(r"^(go|godebug) ", line))


def _pinned_replaces(mod: str, pattern: str, version: str) -> list[str]:
    return [
        f"\t{m} => {m} {version}"
        for m in re.findall(rf"^\s*({pattern})\s+=>\s+\.\.?/\S+\s*$", mod, flags=re.M)
    ]


def kubernetes_wrapper_gomod(upstream_mod: str, version: str) -> str:
    """go.mod requiring k8s.io/kubernetes with every staging module pinned to v0.<minor>.<patch>."""
    staging = "v0." + version.split(".", 1)[1]
    replaces = _pinned_replaces(upstream_mod, r"k8s\.io/[\w.-]+", staging)
    return (
        "module drover.dev/localcluster/kubernetes\n\n"
        f"{_go_directives(upstream_mod)}\n\n"
        f"require k8s.io/kubernetes v{version}\n\n"
        "replace (\n" + "\n".join(replaces) + "\n)\n"
    )


def etcd_wrapper_gomod(upstream_mod: str, version: str) -> str:
    """go.mod requiring the etcd server with its sibling modules pinned to the same release."""
    replaces = _pinned_replaces(upstream_mod, r"go\.etcd\.io/etcd/[\w./-]+", f"v{version}")
    return (
        "module drover.dev/localcluster/etcd\n\n"
        f"{_go_directives(upstream_mod)}\n\n"
        f"require go.etcd.io/etcd/server/v3 v{version}\n\n"
        "replace (\n" + "\n".join(replaces) + "\n)\n"
    )


@contextlib.contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _install(staging: Path, target: Path) -> None:
    """Move a finished build into place in one rename, so a half build is never cached."""
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)


@contextlib.contextmanager
def _workspace(name: str, version: str, target: Path) -> Iterator[tuple[Path, Path, Path]]:
    """(work dir, log file, output dir) for one build; the output is installed as `target`
    only when the body finishes, so a failed build leaves nothing in the cache."""
    with tempfile.TemporaryDirectory(prefix=f"drover-{name}-", dir=target.parent) as tmp:
        work = Path(tmp)
        log = target.parent / f"build-{name}-{version}.log"
        log.write_text("")
        out = work / "bin"
        out.mkdir()
        yield work, log, out
        _install(out, target)


def _build_kubernetes(version: str, target: Path) -> None:
    with _workspace("kubernetes", version, target) as (work, log, out):
        upstream = _mod_file("k8s.io/kubernetes", f"v{version}", work, log)
        (work / "go.mod").write_text(kubernetes_wrapper_gomod(upstream, version))
        major, minor = version.split(".")[:2]
        ldflags = " ".join(
            [
                "-s -w",
                f"-X k8s.io/component-base/version.gitVersion=v{version}",
                f"-X k8s.io/component-base/version.gitMajor={major}",
                f"-X k8s.io/component-base/version.gitMinor={minor}",
                "-X k8s.io/component-base/version.gitTreeState=clean",
                "-X k8s.io/client-go/pkg/version.gitVersion=v" + version,
            ]
        )
        packages = [f"k8s.io/kubernetes/cmd/{cmd}" for cmd in KUBE_COMMANDS]
        _run_go(["build", "-trimpath", "-ldflags", ldflags, "-o", f"{out}/", *packages], work, log)


def _build_etcd(version: str, target: Path) -> None:
    with _workspace("etcd", version, target) as (work, log, out):
        upstream = _mod_file("go.etcd.io/etcd/server/v3", f"v{version}", work, log)
        (work / "go.mod").write_text(etcd_wrapper_gomod(upstream, version))
        ldflags = f"-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=v{version}"
        args = ["build", "-trimpath", "-ldflags", ldflags, "-o", str(out / "etcd")]
        _run_go([*args, "go.etcd.io/etcd/server/v3"], work, log)


def _build_helm(version: str, target: Path) -> None:
    with _workspace("helm", version, target) as (work, log, out):
        ldflags = f"-s -w -X helm.sh/helm/v3/internal/version.version=v{version}"
        args = ["install", "-trimpath", "-ldflags", ldflags]
        _run_go([*args, f"helm.sh/helm/v3/cmd/helm@v{version}"], work, log, GOBIN=str(out))


def promtool_wrapper_gomod(upstream_mod: str, version: str) -> str:
    """go.mod requiring Prometheus with its (non-local) replace directives copied."""
    replaces = re.findall(r"^replace\s+(\S+\s+=>\s+\S+\s+v\S+)\s*$", upstream_mod, flags=re.M)
    block = "replace (\n" + "\n".join(f"\t{r}" for r in replaces) + "\n)\n" if replaces else ""
    return (
        "module drover.dev/localcluster/promtool\n\n"
        f"{_go_directives(upstream_mod)}\n\n"
        f"require github.com/prometheus/prometheus v{version}\n\n" + block
    )


def _build_promtool(version: str, target: Path) -> None:
    with _workspace("promtool", version, target) as (work, log, out):
        upstream = _mod_file("github.com/prometheus/prometheus", f"v{version}", work, log)
        (work / "go.mod").write_text(promtool_wrapper_gomod(upstream, version))
        args = ["build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "promtool")]
        _run_go([*args, "github.com/prometheus/prometheus/cmd/promtool"], work, log)


def _ensure(
    root: Path,
    target: Path,
    commands: tuple[str, ...],
    build: Callable[[str, Path], None],
    version: str,
) -> None:
    """Build `target` unless all its commands are cached (call under the build lock)."""
    if all((target / c).is_file() for c in commands):
        return
    _log(f"building {target.name} from Go modules (cached in {root}) ...")
    started = time.monotonic()
    build(version, target)
    _log(f"built {target.name} in {time.monotonic() - started:.0f}s")


def _ensure_tool(name: str, version: str, build: Callable[[str, Path], None]) -> Path:
    """A tool some tests use, built once and cached like the cluster's binaries; not part of
    `ensure_binaries`, so starting a cluster never waits for it."""
    root = cache_root() / "bin"
    target = root / f"{name}-{version}"
    with _build_lock(root):
        _ensure(root, target, (name,), build, version)
    return target / name


def ensure_promtool(versions: Versions | None = None) -> Path:
    """`promtool`, which checks the metrics exposition."""
    return _ensure_tool("promtool", (versions or Versions()).prometheus, _build_promtool)


def ensure_helm(versions: Versions | None = None) -> Path:
    """`helm`, for the chart's tests and `make helm-lint`."""
    return _ensure_tool("helm", (versions or Versions()).helm, _build_helm)


def ensure_binaries(versions: Versions | None = None) -> Binaries:
    """Return the cluster's cached binaries (Kubernetes and etcd), building whatever is
    missing (cold: about 6.5 minutes on two cores)."""
    versions = versions or Versions()
    root = cache_root() / "bin"
    kube = root / f"kubernetes-{versions.kubernetes}"
    etcd = root / f"etcd-{versions.etcd}"
    helm = root / f"helm-{versions.helm}"
    wanted = [
        (kube, KUBE_COMMANDS, _build_kubernetes, versions.kubernetes),
        (etcd, ("etcd",), _build_etcd, versions.etcd),
    ]
    with _build_lock(root):
        for target, commands, build, version in wanted:
            _ensure(root, target, commands, build, version)
    return Binaries(
        kube_apiserver=kube / "kube-apiserver",
        kube_controller_manager=kube / "kube-controller-manager",
        kube_scheduler=kube / "kube-scheduler",
        kubectl=kube / "kubectl",
        etcd=etcd / "etcd",
        helm=helm / "helm",
    )
