"""`python -m drover_localcluster {build,up,down,status,images,image-requirements}` — used by
the Makefile."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from drover_localcluster import faults
from drover_localcluster.binaries import ensure_binaries, ensure_helm, ensure_promtool
from drover_localcluster.cluster import REPO_ROOT, LocalCluster, wait_seconds
from drover_localcluster.errors import LocalClusterError
from drover_localcluster.images import requirements
from drover_localcluster.images.build import Published, ensure_images


def main() -> None:
    parser = argparse.ArgumentParser(prog="drover-localcluster", description=__doc__)
    parser.add_argument(
        "command",
        choices=[
            *("build", "up", "down", "status", "images", "image-requirements"),
            *("kill", "restart"),
        ],
    )
    parser.add_argument(
        "component",
        nargs="?",
        choices=faults.COMPONENTS,
        help="kill/restart: the component to crash (SIGKILL) or start again",
    )
    parser.add_argument(
        "--with",
        dest="extra",
        action="append",
        choices=["helm", "promtool"],
        default=[],
        help="build: also build this tool (the chart's and the metrics tests'); repeatable",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="image-requirements: only check that images/*/requirements.txt match uv.lock",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(".cluster"),
        help="the cluster's directory (default: .cluster)",
    )
    args = parser.parse_args()
    started = time.monotonic()
    try:
        if args.command == "build":
            binaries = ensure_binaries()
            if "helm" in args.extra:
                ensure_helm()
            if "promtool" in args.extra:
                ensure_promtool()
            print(f"binaries ready in {binaries.kubectl.parent.parent}")
            return
        if args.command == "images":
            _report(ensure_images(REPO_ROOT))
            return
        if args.command == "image-requirements":
            _requirements(check=args.check)
            return
        cluster = LocalCluster(args.dir)
        if args.command in ("kill", "restart"):
            if args.component is None:
                parser.error(f"{args.command} needs a component: {', '.join(faults.COMPONENTS)}")
            action = faults.kill if args.command == "kill" else faults.restart
            action(cluster, args.component)
            print(f"{args.component}: {args.command} done")
        elif args.command == "up":
            cluster.up()
            print(
                f"local cluster up in {wait_seconds(started)}: "
                f"`source {args.dir}/env && kubectl get nodes`"
            )
        elif args.command == "down":
            cluster.down()
            print("local cluster stopped")
        else:
            healthy = cluster.healthy()
            print("up" if healthy else "down")
            sys.exit(0 if healthy else 1)
    except LocalClusterError as exc:
        sys.exit(f"drover-localcluster: {exc}")


def _report(published: Published) -> None:
    for image in published.images:
        how = "built" if image.name in published.built else "cached"
        print(
            f"{image.reference:45} {how:6} {image.archive_bytes / 2**20:6.1f} MiB compressed "
            f"{image.unpacked_bytes / 2**20:6.1f} MiB unpacked  "
            f"{published.archives[image.reference].relative_to(REPO_ROOT)}"
        )
    print(f"node image store: {published.store.relative_to(REPO_ROOT)} ({published.seconds:.1f}s)")


def _requirements(*, check: bool) -> None:
    if not check:
        requirements.write(REPO_ROOT)
        return
    stale = requirements.stale(REPO_ROOT)
    if stale:
        names = ", ".join(str(p.relative_to(REPO_ROOT)) for p in stale)
        sys.exit(f"{names} differ from uv.lock: run `make image-requirements`")


if __name__ == "__main__":
    main()
