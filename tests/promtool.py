"""`promtool check metrics`: Prometheus' own lint of an exposition (naming conventions, help,
units, counters ending in `_total`)."""

from __future__ import annotations

import subprocess

from drover_localcluster.binaries import ensure_promtool


def check_metrics(exposition: bytes) -> None:
    """Fail with promtool's complaints unless the exposition is clean."""
    proc = subprocess.run(
        [str(ensure_promtool()), "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=60,
        check=False,
    )
    problems = (proc.stdout + proc.stderr).decode(errors="replace").strip()
    assert proc.returncode == 0 and not problems, f"promtool check metrics:\n{problems}"
