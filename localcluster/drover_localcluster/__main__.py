"""`python -m drover_localcluster {build,up,down,status}` — used by the Makefile."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from drover_localcluster.binaries import ensure_binaries, ensure_helm, ensure_promtool
from drover_localcluster.cluster import LocalCluster, wait_seconds
from drover_localcluster.errors import LocalClusterError


def main() -> None:
    parser = argparse.ArgumentParser(prog="drover-localcluster", description=__doc__)
    parser.add_argument("command", choices=["build", "up", "down", "status"])
    parser.add_argument(
        "--with",
        dest="extra",
        action="append",
        choices=["helm", "promtool"],
        default=[],
        help="build: also build this tool (the chart's and the metrics tests'); repeatable",
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
        cluster = LocalCluster(args.dir)
        if args.command == "up":
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


if __name__ == "__main__":
    main()
