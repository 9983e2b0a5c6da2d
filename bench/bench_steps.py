"""P3: per-step checkpoint overhead: Drover's `@drover.step` (runner → run API → Postgres)
against DBOS Transact's `@DBOS.step` on the same Postgres, and a bare psycopg insert + commit.

    python -m bench.bench_steps [--steps 1000] [--trials 3] [--skip-dbos]

Starts its own durable local cluster (etcd and Postgres with fsync and synchronous commit on,
as in production) and one operator. Each trial measures the three systems one after the
other, the order rotating from trial to trial; the table shows each one's milliseconds per
step as the median (min–max) over the trials. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import psycopg
from lightkube import Client, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta

from bench.bench_operator import apply_crds
from bench.harness import median_spread
from bench.summary import Row, record
from drover_localcluster.cluster import LocalCluster
from drover_localcluster.processes import free_port
from drover_operator.kube import TaskResource, TaskRunResource

SYSTEMS = ["drover", "dbos", "psycopg insert+commit"]


def _create_database(cluster: LocalCluster, name: str) -> str:
    with psycopg.connect(cluster.postgres.admin_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return cluster.postgres.admin_dsn(name)


class DroverSteps:
    """The operator (one for every trial) and a Task whose run times `steps` steps."""

    def __init__(self, cluster: LocalCluster, log: Path) -> None:
        env = cluster.env()
        prepend = env.pop("PATH_PREPEND")
        api_port = free_port()
        self.env = {
            **os.environ,
            **env,
            "PATH": f"{prepend}:{os.environ['PATH']}",
            "DROVER_DATABASE_URL": _create_database(cluster, "drover_bench_steps"),
            "DROVER_API_HOST": "127.0.0.1",
            "DROVER_API_PORT": str(api_port),
            "DROVER_API_URL": f"http://127.0.0.1:{api_port}",
        }
        apply_crds(cluster, self.env)
        with log.open("wb") as out:
            self.operator = subprocess.Popen(
                [sys.executable, "-m", "drover_operator", "run", "--standalone"],
                env=self.env,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        self.client = Client(KubeConfig.from_file(str(cluster.kubeconfig)))
        self.client.create(
            TaskResource(
                metadata=ObjectMeta(name="steps", namespace="default"),
                spec={
                    "image": "busybox",
                    "entrypoint": "bench.step_tasks:many_steps",
                    "retry": {"maxAttempts": 1},
                },
            )
        )
        self.runs = 0

    def run(self, steps: int) -> dict[str, Any]:
        """One run of `steps` steps; what its task code measured."""
        self.runs += 1
        name = f"steps-{self.runs}"
        self.client.create(
            TaskRunResource(
                metadata=ObjectMeta(name=name, namespace="default"),
                spec={"taskRef": {"name": "steps"}, "payload": {"steps": steps}},
            )
        )
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.operator.poll() is not None:
                raise SystemExit(f"the operator exited with {self.operator.returncode}")
            resource = self.client.get(TaskRunResource, name, namespace="default")
            status: dict[str, Any] = cast(dict[str, Any], resource.status or {})
            if status.get("phase") in ("Succeeded", "Failed"):
                if status["phase"] != "Succeeded":
                    raise SystemExit(f"the benchmark run failed: {status.get('error')}")
                output: dict[str, Any] = status["output"]
                return output
            time.sleep(0.5)
        raise SystemExit("the benchmark run did not finish in 10 minutes")

    def close(self) -> None:
        self.client.close()
        os.killpg(self.operator.pid, signal.SIGTERM)
        self.operator.wait(timeout=30)


def dbos_steps(cluster: LocalCluster, steps: int) -> dict[str, Any] | None:
    dsn = _create_database(cluster, f"dbos_bench_{secrets.token_hex(3)}")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.dbos_steps", dsn, str(steps)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        print(
            f"DBOS run failed (is the bench extra installed?): {proc.stderr[-1500:]}",
            file=sys.stderr,
        )
        return None
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def psycopg_inserts(cluster: LocalCluster, steps: int) -> dict[str, Any]:
    dsn = _create_database(cluster, f"psycopg_bench_{secrets.token_hex(3)}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (run uuid, seq int, value jsonb, PRIMARY KEY (run, seq))")
        run = "00000000-0000-0000-0000-000000000001"
        started = time.perf_counter()
        for i in range(steps):
            conn.execute("INSERT INTO t VALUES (%s, %s, %s)", (run, i, json.dumps(i)))
        return {"steps": steps, "seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--skip-dbos", action="store_true")
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="drover-bench-steps-"))
    directory.chmod(0o755)
    cluster = LocalCluster(directory, durable=True)
    per_step: dict[str, list[float]] = {name: [] for name in SYSTEMS}
    try:
        cluster.up()
        drover = DroverSteps(cluster, directory / "operator.log")
        measure: dict[str, Callable[[], dict[str, Any] | None]] = {
            "drover": lambda: drover.run(args.steps),
            "dbos": lambda: None if args.skip_dbos else dbos_steps(cluster, args.steps),
            "psycopg insert+commit": lambda: psycopg_inserts(cluster, args.steps),
        }
        try:
            drover.run(10)  # warm-up: the operator's connections, the node's first pod
            for trial in range(args.trials):
                order = SYSTEMS[trial % 3 :] + SYSTEMS[: trial % 3]
                for name in order:
                    result = measure[name]()
                    if result is not None:
                        per_step[name].append(1000 * result["seconds"] / result["steps"])
                        print(f"trial {trial + 1} {name}: {per_step[name][-1]:.3f} ms/step")
        finally:
            drover.close()
    finally:
        cluster.down()
    print(
        f"\n{args.steps} trivial steps per run, same durable Postgres; ms per step, median "
        f"(min–max) of {args.trials} trials in rotating order (2 shared cores; noisy):"
    )
    for name, values in per_step.items():
        shown = median_spread(values, 3) if values else "(not measured)"
        print(f"  {name:24s} {shown}")
    medians = {name: statistics.median(v) for name, v in per_step.items() if v}
    rows = [
        Row(f"P3: ms per step, {name}", median_spread(v, 3)) for name, v in per_step.items() if v
    ]
    if "dbos" in medians:
        ratio = medians["dbos"] / medians["drover"]
        print(f"  DBOS / Drover            {ratio:7.2f}x")
        rows.append(Row("P3: DBOS / Drover (medians)", f"{ratio:.2f}x"))
    bare = medians["psycopg insert+commit"]
    print(f"  Drover / bare insert     {medians['drover'] / bare:7.2f}x")
    rows.append(
        Row("P3: Drover / bare insert+commit (medians)", f"{medians['drover'] / bare:.2f}x")
    )
    record("p3-steps", rows, "durable Postgres (fsync, synchronous_commit on)")
    print(json.dumps({"steps": args.steps, "ms_per_step": per_step}))


if __name__ == "__main__":
    main()
