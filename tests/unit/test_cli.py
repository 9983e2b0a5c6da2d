"""The command line's pure parts: reading JSON arguments, the short forms of times, status
lines and the step timeline, one-line errors and exit codes for usage errors (which are
refused before anything is sent)."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest
from rich.console import Console

import drover
from drover.protocol.history import StepView
from drover.protocol.runs import RunView, StepRef
from drover_cli.commands.describe import steps_table
from drover_cli.errors import one_line
from drover_cli.follow import final_line, status_text
from drover_cli.inputs import read_json
from drover_cli.main import main
from drover_cli.output import age, seconds_text

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def test_json_arguments_inline_from_a_file_and_from_stdin(tmp_path: Path) -> None:
    assert read_json('{"a": [1, 2]}') == {"a": [1, 2]}
    (tmp_path / "p.json").write_text('"text"')
    assert read_json(f"@{tmp_path / 'p.json'}") == "text"
    assert read_json("-", io.StringIO("42")) == 42
    with pytest.raises(ValueError, match=r"^not JSON: Expecting value"):
        read_json("{'single': 'quotes'}".replace("{", ""))
    with pytest.raises(ValueError, match=r"^cannot read .*missing\.json"):
        read_json(f"@{tmp_path / 'missing.json'}")


def test_ages_and_durations_read_like_kubectl() -> None:
    assert age(T0 - dt.timedelta(seconds=42), T0) == "42s"
    assert age(T0 - dt.timedelta(minutes=12, seconds=5), T0) == "12m"
    assert age(T0 - dt.timedelta(hours=3, minutes=4), T0) == "3h4m"
    assert age(T0 - dt.timedelta(hours=30), T0) == "30h"
    assert age(T0 - dt.timedelta(days=9), T0) == "9d"
    assert age(None) == "-"
    assert [seconds_text(s) for s in (0.0123, 4.25, 192, 7500)] == [
        "12ms",
        "4.2s",
        "3m12s",
        "2h05m",
    ]


def _run(phase: str, **fields: object) -> RunView:
    return RunView(name="r-1", id="u", namespace="ns", task="t", phase=phase, **fields)


def test_the_status_line_says_phase_attempt_steps_and_time() -> None:
    run = _run("Running", attempt=2, steps=[StepRef(seq=0, name="a"), StepRef(seq=1, name="b")])
    assert status_text(run, 12.34).plain == "r-1  Running  attempt 2  2 steps  12.3s"
    failed = _run("Failed", attempt=1, error={"type": "AbortRun", "message": "no customer"})
    assert final_line(failed, 1.0, status=False).plain == "r-1 Failed:  AbortRun: no customer"
    assert "Succeeded" in final_line(_run("Succeeded", attempt=1), 1.0).plain


def test_the_step_timeline_places_each_step_within_the_run() -> None:
    steps = [
        StepView(
            seq=0, name="fetch", attempt=1, started_at=T0, finished_at=T0 + dt.timedelta(seconds=5)
        ),
        StepView(
            seq=1,
            name="push",
            attempt=1,
            started_at=T0 + dt.timedelta(seconds=5),
            finished_at=T0 + dt.timedelta(seconds=10),
        ),
    ]
    out = Console(width=120, file=io.StringIO(), color_system=None)
    out.print(steps_table(steps, T0, T0 + dt.timedelta(seconds=10)))
    header, first, second = out.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert header.split() == ["#", "NAME", "ATTEMPT", "START", "DURATION", "TIMELINE"]
    assert first.split()[:5] == ["0", "fetch", "1", "+0ms", "5.0s"]
    assert second.split()[:5] == ["1", "push", "1", "+5.0s", "5.0s"]
    bar_at = header.index("TIMELINE")
    first_bar, second_bar = first[bar_at : bar_at + 30], second[bar_at : bar_at + 30]
    # The first half of the run, then the second half.
    assert first_bar[:14].strip("█▌▐") == "" and first_bar[16:].strip() == ""
    assert second_bar[:14].strip() == "" and second_bar[16:].strip("█▌▐") == ""


def test_api_refusals_are_one_line_naming_the_problem() -> None:
    forbidden = drover.ForbiddenError(
        403, "forbidden", 'u cannot create taskruns.drover.dev in\n ns "x"'
    )
    assert one_line(forbidden) == 'forbidden: u cannot create taskruns.drover.dev in ns "x"'
    missing = drover.NotFoundError(404, "not-found", 'Task "x" not found in namespace "y"')
    assert one_line(missing) == 'Task "x" not found in namespace "y"'


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "t", "--payload", "{nope"], "error: --payload: not JSON: Expecting property name"),
        (["run", "t", "--delay", "soon"], "error: --delay: invalid duration 'soon'"),
        (["run", "t", "--tag", "a b"], "error: --tag: tag 'a b' is not"),
        (["run", "t", "--timeout", "5s"], "error: --timeout: only with --wait or --logs"),
        (["runs", "--phase", "Sleeping"], "error: --phase: 'Sleeping' is not one of"),
        (["logs"], "error: Missing argument 'RUN'."),
        (["frobnicate"], "error: No such command 'frobnicate'."),
    ],
)
def test_usage_errors_exit_2_with_one_line_before_connecting(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No kubeconfig at all: a usage error must be found before connecting.
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(message), err


def test_no_kubeconfig_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    with pytest.raises(SystemExit) as exited:
        main(["runs"])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot use the kubeconfig"), err
