"""The chaos suite (tests/e2e/chaos.py), short: one fault of each kind, seeded. `make chaos`
runs the same with DROVER_CHAOS_FAULTS=10 (faults of each kind) and prints the table; a
failure is replayed with its DROVER_CHAOS_SEED."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import private_directory
from tests.e2e.chaos import KINDS, SETTLE_BOUND_S, run_chaos
from tests.e2e.chaos_checks import INVARIANTS

pytestmark = pytest.mark.e2e


def test_chaos_every_invariant_holds_under_faults(capsys: pytest.CaptureFixture[str]) -> None:
    seed = int(os.environ.get("DROVER_CHAOS_SEED", "18"))
    per_kind = int(os.environ.get("DROVER_CHAOS_FAULTS", "1"))
    result = run_chaos(seed, per_kind, private_directory("drover-chaos-ledger-"))
    table = result.table()
    with capsys.disabled():
        print("\n" + table)
    report = os.environ.get("DROVER_CHAOS_REPORT")
    if report:
        Path(report).write_text(table + "\n")
    assert {kind: result.faults[kind] for kind in KINDS} == dict.fromkeys(KINDS, per_kind), table
    assert result.settle_s <= SETTLE_BOUND_S, table
    assert {name: result.verdict.count(name) for name in INVARIANTS} == dict.fromkeys(
        INVARIANTS, 0
    ), table
