"""Following a run to its end: a live status line on a terminal (phase, attempt, steps done,
elapsed), plain lines elsewhere, and its log lines as they arrive (read from Drover's
history, so nothing is lost when the pod is gone)."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

import drover
from drover.protocol.history import LogEntry
from drover.protocol.phases import FINISHED_PHASES, Phase
from drover.protocol.runs import RunView
from drover_cli.output import console, phase_text, seconds_text

#: Exit codes of `--wait`: the run succeeded, it ended otherwise, `--timeout` passed.
EXIT_SUCCEEDED, EXIT_NOT_SUCCEEDED, EXIT_TIMEOUT = 0, 1, 124
_POLL_SECONDS = 0.5
_LOG_PAGE = 1000


class WaitTimeoutError(Exception):
    """`--timeout` passed before the run finished."""


def status_text(run: RunView, elapsed: float) -> Text:
    """`Running  attempt 1  2 steps  12.3s`: where a run is, in one line."""
    done = len(run.steps or [])
    line = Text.assemble(
        (run.name, "bold"), "  ", phase_text(run.phase), f"  attempt {max(run.attempt, 1)}"
    )
    line.append(f"  {done} step{'s' if done != 1 else ''}")
    line.append(f"  {seconds_text(elapsed)}")
    if run.waiting is not None and not run.phase.startswith("S"):
        line.append(f"  ({run.waiting.reason})", style="dim")
    return line


def log_line(line: LogEntry) -> Text:
    """A log line as `drover logs` prints it: time, attempt, level, message."""
    styles = {"ERROR": "red", "CRITICAL": "bold red", "WARNING": "yellow", "DEBUG": "dim"}
    stamp = line.time.astimezone(dt.UTC).strftime("%H:%M:%S.%f")[:-3]
    return Text.assemble(
        (stamp, "dim"),
        f" #{line.attempt} ",
        (f"{line.level:<7}", styles.get(line.level, "")),
        " ",
        line.message,
    )


@dataclass
class LogCursor:
    """Where a run's logs were read up to."""

    after: int = 0
    attempt: int | None = None
    since: dt.timedelta | None = None
    _since_at: dt.datetime | None = field(default=None, init=False)

    def drain(self, client: drover.Client, name: str, show: Callable[[LogEntry], None]) -> None:
        """Show every line logged since the last call."""
        if self.since is not None and self._since_at is None:
            self._since_at = dt.datetime.now(dt.UTC) - self.since
        while True:
            lines = client.logs(
                name, after=self.after, attempt=self.attempt, since=self._since_at, limit=_LOG_PAGE
            )
            for line in lines:
                show(line)
                self.after = line.id
            if len(lines) < _LOG_PAGE:
                return


class _StatusLine:
    """The live line: re-rendered a few times a second, so the elapsed time ticks."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.run: RunView | None = None
        self.spinner = Spinner("dots", style="cyan")

    def __rich__(self) -> RenderableType:
        if self.run is not None:
            self.spinner.update(text=status_text(self.run, time.monotonic() - self.started))
        return self.spinner


def follow(
    client: drover.Client,
    name: str,
    *,
    timeout: dt.timedelta | None = None,
    logs: LogCursor | None = None,
    status: bool = True,
) -> RunView:
    """Poll the run until it finishes (with `logs`, printing its lines on stdout meanwhile);
    the status on stderr: a live line on a terminal, a line per change elsewhere. Raises
    `WaitTimeoutError` after `timeout`."""
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout.total_seconds()
    err, out = console(stderr=True), console()
    live_line = _StatusLine(started)
    live = (
        Live(
            live_line,
            console=err,
            refresh_per_second=8,
            transient=True,
            redirect_stdout=out.is_terminal,
            redirect_stderr=False,
        )
        if status and err.is_terminal
        else None
    )
    shown: tuple[str, int, int] | None = None
    if live is not None:
        live.start()
    try:
        while True:
            run = client.get(name)
            if logs is not None:
                _show_logs(client, name, logs, out)
            live_line.run = run
            if status and live is None:
                state = (run.phase, run.attempt, len(run.steps or []))
                if state != shown:
                    shown = state
                    err.print(status_text(run, time.monotonic() - started))
            if run.phase in FINISHED_PHASES:
                if logs is not None:
                    _show_logs(client, name, logs, out)
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeoutError(run.phase)
            time.sleep(_POLL_SECONDS)
    finally:
        if live is not None:
            live.stop()


def _show_logs(client: drover.Client, name: str, cursor: LogCursor, out: Console) -> None:
    # Triggered a moment ago: not in the history yet.
    with contextlib.suppress(drover.NotFoundError):
        cursor.drain(client, name, lambda line: out.print(log_line(line)))


def final_line(run: RunView, elapsed: float, *, status: bool = True) -> Text:
    """The line a finished `--wait` leaves: how the run ended (with `status`), and why if it
    did not succeed."""
    line = status_text(run, elapsed) if status else Text(f"{run.name} {run.phase}:")
    if run.phase != Phase.SUCCEEDED:
        error = run.error or {}
        why = error.get("message") or run.message or run.reason
        if why:
            kind = f"{error['type']}: " if error.get("type") else ""
            line.append(f"  {kind}{why}", style="red")
    return line


def exit_code(run: RunView) -> int:
    return EXIT_SUCCEEDED if run.phase == Phase.SUCCEEDED else EXIT_NOT_SUCCEEDED
