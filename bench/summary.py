"""One table for `make bench`: every benchmark records its headline figures beside their
goals in a file of its own, and `python -m bench.summary` prints them all at the end.

The files live in `$DROVER_BENCH_SUMMARY` (default `.bench/` in the checkout); `make bench`
empties it first, so the table shows this run's figures only.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
#: What `make bench` runs, in its order: a name missing from the table failed or did not run.
BENCHES = ("operator-vs-jobs", "p3-steps", "triggers", "workflows", "p4-scale", "p5-p6-heartbeats")


@dataclass(frozen=True)
class Row:
    """One figure: what it is, its value as printed (usually `median (min–max)`), its goal,
    and whether the goal is met (None: no goal, or not measured)."""

    figure: str
    value: str
    goal: str = ""
    met: bool | None = None


def at_most(figure: str, value: float | None, limit: float) -> Row:
    """A figure held to `≤ limit` (None: not measured)."""
    met = None if value is None else value <= limit
    return Row(figure, "—" if value is None else f"{value:g}", f"≤ {limit:g}", met)


def directory() -> Path:
    return Path(os.environ.get("DROVER_BENCH_SUMMARY", REPO_ROOT / ".bench"))


def record(bench: str, rows: list[Row], settings: str = "") -> Path:
    """Keep one benchmark's rows (replacing what it recorded before)."""
    target = directory()
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{bench}.json"
    document = {"bench": bench, "settings": settings, "rows": [asdict(r) for r in rows]}
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def _load() -> list[dict[str, Any]]:
    found = []
    for path in sorted(directory().glob("*.json")):
        try:
            found.append(json.loads(path.read_text()))
        except ValueError:
            print(f"(unreadable: {path})", file=sys.stderr)
    return found


def main() -> int:
    documents = _load()
    print("\n== every benchmark: figure, value (median (min–max) over trials), goal, met ==")
    rows = [row for d in documents for row in d["rows"]]
    width = min(max([30, *(len(str(row["figure"])) for row in rows)]), 58)
    for document in documents:
        print(f"\n[{document['bench']}] {document.get('settings') or ''}".rstrip())
        for row in document["rows"]:
            met = {True: "yes", False: "NO", None: ""}[row["met"]]
            print(f"  {row['figure']:<{width}} {row['value']:>26}  {row['goal']:<16} {met}")
    missing = [name for name in BENCHES if name not in {d["bench"] for d in documents}]
    for name in missing:
        print(f"\n[{name}] no figures: it failed or did not run (its output above says why)")
    print(f"\n(recorded in {directory()})")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
