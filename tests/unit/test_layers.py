"""What the import-linter contracts (`make lint`) cannot see: SQL text outside the store, and
the operator reaching into the SDK's private modules however it imports them."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO_ROOT

OPERATOR = REPO_ROOT / "operator" / "drover_operator"
STORE = OPERATOR / "store"

# A statement, not prose: an upper-case keyword (the project's SQL style) followed by what
# must come after it in SQL.
_SQL = re.compile(
    r"\b(SELECT\b[\s\S]*\bFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|"
    r"CREATE\s+(TABLE|INDEX)|ALTER\s+TABLE|pg_advisory|pg_notify|LISTEN\s+\w+)"
)


def _sources(root: Path) -> Iterator[Path]:
    yield from sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _strings(tree: ast.AST) -> Iterator[tuple[int, str]]:
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            yield node.lineno, node.value


def test_no_sql_outside_the_store() -> None:
    found = []
    for path in _sources(OPERATOR):
        if STORE in path.parents:
            continue
        for line, text in _strings(ast.parse(path.read_text())):
            if _SQL.search(text):
                found.append(f"{path.relative_to(REPO_ROOT)}:{line}: {text[:60]!r}")
    assert found == []


def test_the_check_finds_sql() -> None:
    # The pattern above would let everything through if it matched nothing.
    store_sql = [
        text
        for path in _sources(STORE)
        for _, text in _strings(ast.parse(path.read_text()))
        if _SQL.search(text)
    ]
    assert len(store_sql) > 50
    assert not _SQL.search("select a Task from the list, then update its status")
    assert _SQL.search("SELECT 1 FROM drover_runs") and _SQL.search("UPDATE drover_runs SET x")


def test_the_operator_imports_no_private_sdk_module() -> None:
    found = []
    for path in _sources(OPERATOR):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if re.match(r"^drover\.(_(?!_)\w*|runner|steps|context)(\.|$)", name):
                    found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {name}")
    assert found == []
