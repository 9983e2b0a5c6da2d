"""The checked-in OpenAPI document is what the code serves."""

from __future__ import annotations

from drover_operator.api.openapi import render
from tests.conftest import REPO_ROOT


def test_committed_openapi_document_is_current() -> None:
    committed = (REPO_ROOT / "docs" / "openapi.json").read_text()
    assert committed == render(), "docs/openapi.json is stale: run `make openapi`"
