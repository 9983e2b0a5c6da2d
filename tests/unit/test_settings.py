"""Operator settings: every value validated at start-up, each refusal naming its variable."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest

from drover_operator import settings
from drover_operator.errors import ConfigurationError
from tests.conftest import REPO_ROOT

URL = {"DROVER_DATABASE_URL": "postgresql://u@h/db"}


def test_defaults_are_typed() -> None:
    loaded = settings.load(URL)
    assert loaded.database.url == URL["DROVER_DATABASE_URL"]
    assert loaded.loop.tick == dt.timedelta(seconds=1)
    assert loaded.runs.default_pending_timeout == dt.timedelta(minutes=10)
    assert loaded.retention.pods == dt.timedelta(minutes=5)
    assert loaded.retention.history == dt.timedelta(hours=720)
    assert loaded.api.pod_url == "http://127.0.0.1:8080"
    assert loaded.watch.namespaces == []


def test_values_are_parsed_from_the_environment() -> None:
    loaded = settings.load(
        {
            **URL,
            "DROVER_TICK_SECONDS": "0.25",
            "DROVER_NAMESPACES": "shop, billing",
            "DROVER_LOG_LEVEL": "debug",
            "DROVER_POD_RETENTION": "1h30m",
            "DROVER_HISTORY_RETENTION": "0s",
            "DROVER_STANDALONE": "true",
            "DROVER_API_URL": "http://drover.drover:8080",
        }
    )
    assert loaded.loop.tick == dt.timedelta(milliseconds=250)
    assert loaded.watch.namespaces == ["shop", "billing"] and loaded.watch.standalone
    assert loaded.logging.level == "DEBUG"
    assert loaded.retention.pods == dt.timedelta(minutes=90)
    assert not loaded.retention.history
    assert loaded.api.pod_url == "http://drover.drover:8080"


def test_flags_win_over_the_environment() -> None:
    loaded = settings.load({**URL, "DROVER_PEERING": "a"}, {"DROVER_PEERING": "b"})
    assert loaded.watch.peering == "b"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DROVER_DATABASE_POOL_SIZE", "1"),
        ("DROVER_TICK_SECONDS", "0"),
        ("DROVER_TICK_SECONDS", "often"),
        ("DROVER_TICK_SECONDS", "61"),
        ("DROVER_BATCH_SIZE", "0"),
        ("DROVER_ATTEMPTS_IN_STATUS", "1000"),
        ("DROVER_OUTPUT_LIMIT_BYTES", "-1"),
        ("DROVER_DEFAULT_PENDING_TIMEOUT", "10 minutes"),
        ("DROVER_DEFAULT_PENDING_TIMEOUT", "0s"),
        ("DROVER_API_PORT", "70000"),
        ("DROVER_POD_RETENTION", "forever"),
        ("DROVER_HISTORY_RETENTION", "30d"),
        ("DROVER_LOG_LEVEL", "loud"),
        ("DROVER_LOG_FORMAT", "xml"),
        ("DROVER_STANDALONE", "maybe"),
    ],
)
def test_a_bad_value_is_refused_naming_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        settings.load({**URL, variable: value})
    assert f"{variable}={value!r}" in str(refused.value)


def test_every_refusal_is_reported_at_once() -> None:
    with pytest.raises(ConfigurationError) as refused:
        settings.load({"DROVER_LOG_LEVEL": "loud", "DROVER_API_PORT": "x"})
    message = str(refused.value)
    assert "DROVER_DATABASE_URL is required" in message
    assert "DROVER_LOG_LEVEL='loud'" in message and "DROVER_API_PORT='x'" in message


def test_every_setting_has_a_variable_and_a_description() -> None:
    fields = list(settings.fields())
    names = [f.env.name for f in fields]
    assert len(names) == len(set(names)) and all(n.startswith("DROVER_") for n in names)
    assert all(f.doc for f in fields)


def test_the_table_in_the_docs_is_current() -> None:
    text = (REPO_ROOT / "docs" / "operator.md").read_text()
    assert settings.render_docs(text) == text, "run `make docs`"
    assert "`DROVER_DEFAULT_PENDING_TIMEOUT`" in text


def test_the_operator_refuses_to_start_with_a_bad_value() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROVER_")}
    env.update({**URL, "DROVER_DEFAULT_PENDING_TIMEOUT": "soon"})
    proc = subprocess.run(
        [sys.executable, "-m", "drover_operator", "run", "--standalone"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "DROVER_DEFAULT_PENDING_TIMEOUT='soon'" in proc.stderr
