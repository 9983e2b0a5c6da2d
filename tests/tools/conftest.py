"""Tests that need a Go-built tool (helm, promtool): built once per machine and cached, so
the first run on a fresh machine pays for the build. Marked `tools`."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/tools/" in str(item.path):
            item.add_marker(pytest.mark.tools)
