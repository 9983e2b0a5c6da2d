"""Per-step checkpoint overhead: Drover's `@drover.step` (runner → run API → Postgres) against
DBOS Transact's `@DBOS.step` on the same Postgres, and a bare psycopg insert + commit.

`python -m bench.bench_steps [--steps 1000]` — starts its own local cluster and operator,
prints the figures; a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import psycopg
from lightkube import Client, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta

from drover_localcluster.cluster import LocalCluster
from drover_localcluster.processes import free_port
from drover_operator.kube import TaskResource, TaskRunResource


def _create_database(cluster: LocalCluster, name: str) -> str:
    with psycopg.connect(cluster.postgres.admin_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return cluster.postgres.admin_dsn(name)


def drover_steps(cluster: LocalCluster, steps: int, log: Path) -> dict[str, Any]:
    env = cluster.env()
    prepend = env.pop("PATH_PREPEND")
    api_port = free_port()
    env = {
        **os.environ,
        **env,
        "PATH": f"{prepend}:{os.environ['PATH']}",
        "DROVER_DATABASE_URL": _create_database(cluster, "drover_bench_steps"),
        "DROVER_API_HOST": "127.0.0.1",
        "DROVER_API_PORT": str(api_port),
        "DROVER_API_URL": f"http://127.0.0.1:{api_port}",
    }
    kubectl = str(cluster.binaries.kubectl)
    subprocess.run(
        [kubectl, "apply", "--server-side", "-f", "crds/"], env=env, check=True, capture_output=True
    )
    subprocess.run(
        [kubectl, "wait", "--for=condition=Established", "crd", "--all"],
        env=env,
        check=True,
        capture_output=True,
    )
    with log.open("wb") as out:
        operator = subprocess.Popen(
            [sys.executable, "-m", "drover_operator", "run", "--standalone"],
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    client = Client(KubeConfig.from_file(str(cluster.kubeconfig)))
    try:
        client.create(
            TaskResource(
                metadata=ObjectMeta(name="steps", namespace="default"),
                spec={
                    "image": "busybox",
                    "entrypoint": "bench.step_tasks:many_steps",
                    "retry": {"maxAttempts": 1},
                },
            )
        )
        client.create(
            TaskRunResource(
                metadata=ObjectMeta(name="steps-1", namespace="default"),
                spec={"taskRef": {"name": "steps"}, "payload": {"steps": steps}},
            )
        )
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            resource = client.get(TaskRunResource, "steps-1", namespace="default")
            status: dict[str, Any] = cast(dict[str, Any], resource.status or {})
            if status.get("phase") in ("Succeeded", "Failed"):
                if status["phase"] != "Succeeded":
                    raise SystemExit(f"the benchmark run failed: {status.get('error')}")
                output: dict[str, Any] = status["output"]
                return output
            time.sleep(0.5)
        raise SystemExit("the benchmark run did not finish in 10 minutes")
    finally:
        client.close()
        os.killpg(operator.pid, signal.SIGTERM)
        operator.wait(timeout=30)


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
    dsn = _create_database(cluster, "psycopg_bench")
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
    parser.add_argument("--skip-dbos", action="store_true")
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="drover-bench-steps-"))
    directory.chmod(0o755)
    cluster = LocalCluster(directory)
    try:
        cluster.up()
        results = {
            "drover": drover_steps(cluster, args.steps, directory / "operator.log"),
            "dbos": None if args.skip_dbos else dbos_steps(cluster, args.steps),
            "psycopg insert+commit": psycopg_inserts(cluster, args.steps),
        }
    finally:
        cluster.down()
    print(f"\n{args.steps} trivial steps, one run, same Postgres (2 shared cores; noisy):")
    per_step = {}
    for name, result in results.items():
        if result is None:
            print(f"  {name:24s} (not measured)")
            continue
        per_step[name] = 1000 * result["seconds"] / result["steps"]
        print(f"  {name:24s} {per_step[name]:7.3f} ms per step")
    if "dbos" in per_step:
        print(f"  DBOS / Drover            {per_step['dbos'] / per_step['drover']:7.2f}x")
    print(json.dumps({"steps": args.steps, "ms_per_step": per_step}))


if __name__ == "__main__":
    main()
