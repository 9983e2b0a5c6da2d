"""The `drover` command line end to end, through its installed console scripts (`drover`,
and `kubectl drover` as a kubectl plugin) with nothing but a kubeconfig: it reaches the
operator through the Kubernetes API server. What it prints is checked against what the
cluster has (TaskRuns, pods) and what the task code did; failures are one line on stderr
with their exit codes; `--wait` runs under a pseudo-terminal for the live status line."""

from __future__ import annotations

import json
import os
import pty
import re
import secrets
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube.resources.core_v1 import Pod

from drover.protocol.names import GROUP
from drover_operator.kube import TaskRunResource
from tests.conftest import E2ECluster, wait_for
from tests.e2e.aggregated_support import TAKES_TURNS, Served, serve_aggregated_api
from tests.e2e.api_support import taskruns
from tests.e2e.identities import kubeconfig, rule, service_account
from tests.e2e.operator_support import task, wait_phase

pytestmark = [pytest.mark.e2e, TAKES_TURNS]

BIN = Path(sys.executable).parent
DROVER = BIN / "drover"
TASKS = "tests.e2e.cli_tasks"
#: Colour escape codes (SGR foreground/background), as opposed to cursor movement or bold.
COLOUR = re.compile(r"\x1b\[(?:\d+;)*(?:3[0-7]|4[0-7]|9[0-7]|38;[25];[\d;]+)m")


def sdk_task(cluster: E2ECluster, namespace: str, name: str, function: str, **spec: Any) -> None:
    task(
        cluster.client,
        namespace,
        name,
        {
            "image": "busybox",
            "entrypoint": f"{TASKS}:{function}",
            "retry": {"maxAttempts": 1},
            **spec,
        },
    )


@pytest.fixture(scope="module")
def served(cluster: E2ECluster, drover_crds: None) -> Iterator[Served]:
    with serve_aggregated_api(cluster, "cli", namespaces=2) as served:
        for ns in served.namespaces:
            sdk_task(cluster, ns, "two-steps", "two_steps", concurrency={"limit": 3})
            sdk_task(cluster, ns, "slow", "slow")
            sdk_task(cluster, ns, "fails", "fails")
            sdk_task(cluster, ns, "approval", "approval")
            sdk_task(cluster, ns, "child", "child")
            sdk_task(cluster, ns, "parent", "parent")
        yield served


def cli(
    cluster: E2ECluster,
    *args: str,
    input: str | None = None,
    env: dict[str, str] | None = None,
    program: Path | str = DROVER,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(program), *args],
        input=input,
        capture_output=True,
        text=True,
        env={**cluster.env, **(env or {})},
        timeout=300,
        check=False,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one line a failure prints on stderr."""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_run_wait_logs_describe_and_the_history_after_cleanup(
    cluster: E2ECluster, served: Served
) -> None:
    ns = served.namespace
    proc = cli(cluster, "run", "two-steps", "-n", ns, "--payload", '{"order": 7, "sleep": 1}',
               "--tag", "vip", "--wait", "--logs")  # fmt: skip
    out = ok(proc).splitlines()
    name = out[0]
    # The run exists as the cluster sees it, with what was asked for.
    spec = taskruns(cluster.client, ns)[name]["spec"]
    assert spec["taskRef"]["name"] == "two-steps" and spec["payload"] == {"order": 7, "sleep": 1}
    assert spec["tags"] == {"vip": ""}
    # Logs streamed meanwhile (stdout); plain status lines (stderr is not a terminal).
    assert any(line.endswith("preparing for 1.0s") for line in out[1:]), out
    assert any(line.endswith("finishing prepared") for line in out[1:]), out
    assert re.search(rf"{name}  Succeeded  attempt 1  2 steps", proc.stderr), proc.stderr
    assert COLOUR.search(proc.stdout + proc.stderr) is None

    described = json.loads(ok(cli(cluster, "describe", name, "-n", ns, "-o", "json")))
    assert described["run"]["output"] == {
        "result": "prepared and finished",
        "payload": {"order": 7, "sleep": 1},
    }
    [attempt] = described["timeline"]["attempts"]
    pod = cluster.client.get(Pod, attempt["pod"], namespace=ns)
    assert pod.metadata is not None and attempt["exitCode"] == 0
    steps = described["timeline"]["steps"]
    assert [(s["seq"], s["name"], s["attempt"]) for s in steps] == [
        (0, "prepare", 1),
        (1, "finish", 1),
    ]
    took = [_seconds(s["finishedAt"]) - _seconds(s["startedAt"]) for s in steps]
    assert 1.0 <= took[0] < 30 and took[1] < 1.0, took  # the runner's own start times
    text = ok(cli(cluster, "describe", name, "-n", ns))
    for expected in ("Phase:", "Succeeded", "Attempts:", attempt["pod"], "Steps:", "prepare"):
        assert expected in text, text
    assert re.search(r"0\s+prepare\s+1\s+\+\S+\s+1\.\ds\s+\S*█", text), text

    # The pod and the TaskRun are cleaned up: the history and the logs remain.
    cluster.client.delete(Pod, attempt["pod"], namespace=ns, grace_period=0)
    cluster.client.delete(TaskRunResource, name, namespace=ns)
    wait_for(lambda: name not in taskruns(cluster.client, ns), what="the TaskRun gone")
    listed = json.loads(ok(cli(cluster, "runs", "-n", ns, "-t", "two-steps", "-o", "json")))
    assert name in [r["name"] for r in listed["items"]]
    assert ok(cli(cluster, "runs", "-n", ns, "--tag", "vip", "-o", "name")).split() == [name]
    logs = ok(cli(cluster, "logs", name, "-n", ns)).splitlines()
    assert [line.split(" ", 3)[1:3] for line in logs] == [["#1", "INFO"], ["#1", "INFO"]]
    assert logs[0].endswith("preparing for 1.0s") and logs[1].endswith("finishing prepared")
    assert ok(cli(cluster, "logs", name, "-n", ns, "--attempt", "2")) == ""
    assert ok(cli(cluster, "logs", name, "-n", ns, "--since", "1ms")) == ""


def _seconds(stamp: str) -> float:
    from tests.e2e.operator_support import parse_time

    return parse_time(stamp).timestamp()


def test_kubectl_drover_is_the_same_command(cluster: E2ECluster, served: Served) -> None:
    ns = served.namespace
    name = ok(cli(cluster, "drover", "run", "child", "-n", ns, "--payload", '{"x": 21}',
                  "--wait", program=cluster.kubectl_path)).strip()  # fmt: skip
    assert wait_phase(cluster.client, ns, name, "Succeeded")
    table = ok(
        cli(cluster, "drover", "runs", "-n", ns, "-t", "child", program=cluster.kubectl_path)
    )
    header, *rows = table.splitlines()
    assert header.split() == ["NAME", "TASK", "PHASE", "ATTEMPT", "AGE", "DURATION"]
    assert any(row.split()[:3] == [name, "child", "Succeeded"] for row in rows), table
    helped = ok(cli(cluster, "drover", "--help", program=cluster.kubectl_path))
    assert "Usage: kubectl drover" in helped


def test_run_wait_under_a_terminal_shows_a_live_line(cluster: E2ECluster, served: Served) -> None:
    ns = served.namespace
    code, screen = _in_pty(cluster, ["run", "slow", "-n", ns, "--payload", '{"seconds": 3}',
                                     "--wait"])  # fmt: skip
    assert code == 0, screen
    # Redrawn in place: a spinner, the phase, the attempt, steps done, the time going up.
    assert "\r" in screen or "\x1b[" in screen
    assert re.search(r"Running\S*  attempt 1  [0-3] steps?  \d", _plain(screen)), screen
    assert re.search(r"Succeeded\S*  attempt 1  3 steps  \d", _plain(screen)), screen
    assert COLOUR.search(screen), "colour on a terminal"
    code, screen = _in_pty(cluster, ["run", "fails", "-n", ns, "--wait"], {"NO_COLOR": "1"})
    assert code == 1, screen
    assert "Failed" in _plain(screen) and "customer 42 does not exist" in _plain(screen)
    assert COLOUR.search(screen) is None, "NO_COLOR: no colour"


def _in_pty(
    cluster: E2ECluster, args: list[str], env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run the command with a pseudo-terminal as stdin, stdout and stderr; its exit code
    and everything it wrote."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [str(DROVER), *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**cluster.env, "TERM": "xterm-256color", "COLUMNS": "160", **(env or {})},
        close_fds=True,
    )
    os.close(terminal)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([controller], [], [], 1.0)
        if ready:
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(controller)
    return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace")


def _plain(screen: str) -> str:
    """The text without escape sequences."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)


def test_failures_are_one_line_with_their_exit_codes(
    cluster: E2ECluster, served: Served, tmp_path: Path
) -> None:
    ns = served.namespace
    missing = cli(cluster, "run", "nope", "-n", ns)
    assert missing.returncode == 1
    assert error_line(missing) == f'error: Task "nope" not found in namespace "{ns}"'

    bad = cli(cluster, "run", "two-steps", "-n", ns, "--payload", "{nope")
    assert bad.returncode == 2
    assert error_line(bad).startswith("error: --payload: not JSON: Expecting property name")
    unreadable = cli(cluster, "run", "two-steps", "-n", ns, "--payload", "@/does/not/exist")
    assert unreadable.returncode == 2 and "--payload: cannot read /does/not/exist" in (
        error_line(unreadable)
    )
    piped = cli(cluster, "run", "two-steps", "-n", ns, "--payload", "-", input='{"sleep": 0}')
    assert taskruns(cluster.client, ns)[ok(piped).strip()]["spec"]["payload"] == {"sleep": 0}

    assert cli(cluster, "runs", "--phase", "Sleeping").returncode == 2
    assert cli(cluster, "run").returncode == 2
    unknown_flag = cli(cluster, "runs", "--frobnicate")
    assert unknown_flag.returncode == 2
    assert error_line(unknown_flag).startswith("error: No such option '--frobnicate'")
    assert cli(cluster, "run", "slow", "--timeout", "1s").returncode == 2  # without --wait

    # A ServiceAccount that may reach the aggregated API and read runs, but not create them.
    reader = service_account(
        cluster,
        ns,
        f"reader-{secrets.token_hex(2)}",
        [
            rule("api.drover.dev", ["tasks/trigger", "taskruns"], ["create", "get", "list"]),
            rule(GROUP, ["taskruns"], ["get", "list"]),
        ],
    )
    config = str(kubeconfig(cluster, reader, tmp_path / "reader"))
    refused = cli(cluster, "run", "two-steps", "-n", ns, "--kubeconfig", config)
    assert refused.returncode == 1
    line = error_line(refused)
    assert line.startswith("error: forbidden: system:serviceaccount:"), line
    assert line.endswith(f'cannot create taskruns.drover.dev in namespace "{ns}"'), line
    everywhere = cli(cluster, "runs", "-A", "--kubeconfig", config)
    assert everywhere.returncode == 1 and "forbidden" in error_line(everywhere)
    assert ok(cli(cluster, "runs", "-n", ns, "--kubeconfig", config, "-o", "name")) != ""

    started = time.monotonic()
    timed_out = cli(cluster, "run", "slow", "-n", ns, "--payload", '{"seconds": 60}', "--wait",
                    "--timeout", "2s")  # fmt: skip
    assert timed_out.returncode == 124, timed_out.stderr
    assert time.monotonic() - started < 60
    name = timed_out.stdout.strip()
    assert f"error: timed out after 2s: run {name} is still" in timed_out.stderr
    ok(cli(cluster, "cancel", name, "-n", ns))

    failed = cli(cluster, "run", "fails", "-n", ns, "--wait")
    assert failed.returncode == 1
    assert "AbortRun: customer 42 does not exist" in failed.stderr


def test_cancel_replay_tokens_children_tasks_and_all_namespaces(
    cluster: E2ECluster, served: Served
) -> None:
    ns, other = served.namespaces
    # Cancel: a running run stops.
    sleeper = ok(cli(cluster, "run", "slow", "-n", ns, "--payload", '{"seconds": 120}')).strip()
    wait_phase(cluster.client, ns, sleeper, "Running")
    assert ok(cli(cluster, "cancel", sleeper, "-n", ns)).startswith(sleeper)
    wait_phase(cluster.client, ns, sleeper, "Canceled")
    missing = cli(cluster, "cancel", "no-such-run", sleeper, "-n", ns)
    assert missing.returncode == 1 and "no-such-run" in missing.stderr

    # Replay with another payload: a new TaskRun of the same Task.
    first = ok(cli(cluster, "run", "child", "-n", ns, "--payload", '{"x": 1}', "--wait")).strip()
    again = ok(cli(cluster, "replay", first, "-n", ns, "--payload", '{"x": 5}', "--wait",
                   "-o", "json"))  # fmt: skip
    replayed = json.loads(again)
    assert replayed["name"] != first
    assert taskruns(cluster.client, ns)[replayed["name"]]["spec"]["payload"] == {"x": 5}
    assert (
        json.loads(ok(cli(cluster, "describe", replayed["name"], "-n", ns, "-o", "json")))["run"][
            "output"
        ]
        == 10
    )

    # Tokens: the run waits until one is completed with data.
    waiting = ok(cli(cluster, "run", "approval", "-n", ns)).strip()
    wait_phase(cluster.client, ns, waiting, "Waiting")
    listed = json.loads(ok(cli(cluster, "tokens", "-n", ns, "-t", "approval", "-o", "json")))
    [token] = [t for t in listed["items"] if t["run"] == waiting]
    table = ok(cli(cluster, "tokens", "-n", ns))
    assert token["id"] in table and "waiting" in table
    done = ok(cli(cluster, "tokens", "complete", token["id"], "-n", ns, "--data", '{"ok": 1}'))
    assert done.strip() == f"{token['id']} completed: run {waiting} resumes"
    wait_phase(cluster.client, ns, waiting, "Succeeded")
    twice = cli(cluster, "tokens", "complete", token["id"], "-n", ns, "--data", "{}")
    assert twice.returncode == 1 and "it is completed" in error_line(twice)
    assert json.loads(ok(cli(cluster, "describe", waiting, "-n", ns, "-o", "json")))["run"][
        "output"
    ] == {"ok": 1}
    waits = json.loads(ok(cli(cluster, "describe", waiting, "-n", ns, "-o", "json")))
    assert [(w["kind"], w["state"]) for w in waits["timeline"]["waits"]] == [("Token", "resolved")]

    # Children, as a tree with their phases.
    parent = ok(cli(cluster, "run", "parent", "-n", ns, "--payload", '{"n": 3}', "--wait")).strip()
    tree = ok(cli(cluster, "describe", parent, "-n", ns))
    children = [r for r in taskruns(cluster.client, ns).values()
                if r["labels"].get("drover.dev/parent-run") == parent]  # fmt: skip
    assert len(children) == 3
    assert "Children:" in tree
    for child_run in json.loads(ok(cli(cluster, "describe", parent, "-n", ns, "-o", "json")))[
        "children"
    ]:
        assert re.search(rf"{child_run['name']} \(child\) Succeeded", tree), tree

    # The Task overview: counts from what ran in this namespace.
    overview = json.loads(ok(cli(cluster, "tasks", "-n", ns, "-o", "json")))
    by_name = {t["name"]: t for t in overview["items"]}
    assert overview["window"] == "24h"
    # As the API server has them: every TaskRun of `child` in the namespace (none is gone).
    children_ran = [r for r in taskruns(cluster.client, ns).values()
                    if r["spec"]["taskRef"]["name"] == "child"]  # fmt: skip
    assert all(r["status"]["phase"] == "Succeeded" for r in children_ran)
    assert by_name["child"]["succeeded"] == len(children_ran) >= 5
    assert by_name["child"]["failed"] == 0
    assert by_name["slow"]["canceled"] >= 1
    assert by_name["two-steps"]["limit"] == 3
    assert by_name["child"]["p50Seconds"] > 0
    table = ok(cli(cluster, "tasks", "-n", ns))
    assert table.splitlines()[0].split() == [
        "NAME", "LIMIT", "RUNNING", "QUEUED", "WAITING", "SUCCEEDED(24H)", "FAILED(24H)",
        "P50", "P95",
    ]  # fmt: skip

    # Across namespaces (the admin may list at the cluster scope).
    elsewhere = ok(cli(cluster, "run", "child", "-n", other, "--payload", '{"x": 2}')).strip()
    everywhere = ok(cli(cluster, "runs", "-A", "-t", "child"))
    rows = [row.split() for row in everywhere.splitlines()[1:]]
    assert [other, elsewhere] in [row[:2] for row in rows]
    assert [ns, first] in [row[:2] for row in rows]
    assert {row[0] for row in rows} == {ns, other}
    tasks_everywhere = json.loads(ok(cli(cluster, "tasks", "-A", "-o", "json")))
    assert {t["namespace"] for t in tasks_everywhere["items"]} == {ns, other}


def test_runs_watch_and_shell_completion(cluster: E2ECluster, served: Served) -> None:
    ns = served.namespaces[1]
    watcher = subprocess.Popen(
        [str(DROVER), "runs", "-n", ns, "-t", "slow", "-w"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cluster.env,
    )
    try:
        # Three seconds of steps: the watch (a poll a second) sees it change.
        name = ok(cli(cluster, "run", "slow", "-n", ns, "--payload", '{"seconds": 3}')).strip()
        assert watcher.stdout is not None
        seen: list[str] = []
        while not any(line.split()[:1] == [name] and "Succeeded" in line for line in seen):
            line = watcher.stdout.readline()
            assert line, (
                f"the watch ended: {seen} {watcher.stderr.read() if watcher.stderr else ''}"
            )
            seen.append(line)
        phases = [line.split()[2] for line in seen if line.split()[:1] == [name]]
        assert phases[-1] == "Succeeded" and len(phases) >= 2, seen  # it changed while watched
    finally:
        watcher.terminate()
        watcher.wait(timeout=30)

    def complete(*words: str) -> list[str]:
        env = {"_DROVER_COMPLETE": "bash_complete", "COMP_WORDS": " ".join(["drover", *words]),
               "COMP_CWORD": str(len(words))}  # fmt: skip
        lines = ok(cli(cluster, env=env)).splitlines()
        return [line.split(",", 1)[1] for line in lines if line.startswith("plain,")]

    assert {"run", "runs", "describe", "logs", "tokens", "tasks"} <= set(complete(""))
    assert complete("describe", "-n", ns, name[:-2]) == [name]
    assert {"two-steps", "slow", "child"} <= set(complete("run", "-n", ns, ""))
    assert "complete -o nosort -F" in ok(cli(cluster, "completion", "bash"))
    # kubectl's own completion asks the plugin (kubectl_complete-drover) for `kubectl drover`.
    asked = ok(cli(cluster, "__complete", "drover", "describe", "-n", ns, name[:-2],
                   program=cluster.kubectl_path))  # fmt: skip
    assert [line.split("\t")[0] for line in asked.splitlines()][:2] == [name, ":4"], asked
    assert "#compdef drover" in ok(cli(cluster, "completion", "zsh"))
