"""The SDK without a server: steps outside a run, checkpoint encoding and its cap, replay
with the declared type, non-determinism, and the runner's payload parsing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

import drover
from drover import _state
from drover.protocol.wire import RunContext, StepRecord
from drover.runner import arguments
from drover.steps import _encode


class Item(BaseModel):
    name: str
    qty: int


class FakeApi:
    """Records what the SDK sends; answers like the run API."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any]] = []

    def send(self, method: str, path: str, data: bytes | None) -> Any:
        self.sent.append((method, path, json.loads(data) if data else None))
        return {"stored": 1}

    def call(self, method: str, path: str, body: Any = None) -> Any:
        self.sent.append((method, path, body))
        return {}


@pytest.fixture
def attempt(monkeypatch: pytest.MonkeyPatch) -> Any:
    def make(steps: list[StepRecord]) -> tuple[_state.AttemptState, FakeApi]:
        api = FakeApi()
        context = RunContext(
            run_id="r",
            name="n",
            namespace="ns",
            task="t",
            attempt=2,
            max_attempts=3,
            heartbeat_seconds=90,
            steps=steps,
        )
        state = _state.AttemptState(api, context)  # type: ignore[arg-type]
        monkeypatch.setattr(_state, "_current", state)
        return state, api

    return make


@drover.step
def make_item(name: str) -> Item:
    return Item(name=name, qty=1)


def test_steps_outside_a_run_just_run() -> None:
    assert make_item("a") == Item(name="a", qty=1)


def test_a_new_step_is_checkpointed_before_it_returns(attempt: Any) -> None:
    _, api = attempt([])
    assert make_item("x") == Item(name="x", qty=1)
    assert api.sent == [
        (
            "PUT",
            "/steps",
            {"steps": [{"seq": 0, "name": "make_item", "value": {"name": "x", "qty": 1}}]},
        )
    ]


def test_a_recorded_step_is_replayed_as_its_declared_type(attempt: Any) -> None:
    _, api = attempt([StepRecord(seq=0, name="make_item", value={"name": "old", "qty": 7})])
    assert make_item("new") == Item(name="old", qty=7)
    assert api.sent == []  # not run again, not stored again


def test_a_different_step_at_a_recorded_position_is_non_determinism(attempt: Any) -> None:
    attempt([StepRecord(seq=0, name="something_else", value=1)])
    with pytest.raises(drover.NonDeterminismError, match="something_else"):
        make_item("x")


def test_control_flow_is_not_swallowed_by_except_exception() -> None:
    for control in (drover.AbortRun, drover.NonDeterminismError, drover.RunCanceled):
        assert issubclass(control, BaseException) and not issubclass(control, Exception)


def test_checkpoint_size_cap() -> None:
    assert _encode({"a": [1, 2]}, "s", 100) == '{"a":[1,2]}'
    with pytest.raises(drover.CheckpointTooLargeError, match="limited to 10 bytes"):
        _encode("x" * 20, "big", 10)


@dataclass
class Request:
    customer: str
    full: bool = False


def takes_dataclass(payload: Request) -> None: ...
def takes_model(payload: Item) -> None: ...
def takes_nothing() -> None: ...
def takes_anything(payload):  # type: ignore[no-untyped-def]
    ...


def test_payload_is_parsed_into_the_annotation() -> None:
    assert arguments(takes_dataclass, {"customer": "c"}) == [Request("c")]
    assert arguments(takes_model, {"name": "n", "qty": "2"}) == [Item(name="n", qty=2)]
    assert arguments(takes_nothing, {"ignored": True}) == []
    assert arguments(takes_anything, [1, 2]) == [[1, 2]]
    with pytest.raises(ValidationError):
        arguments(takes_model, {"name": "n"})


def test_current_run_outside_a_run_is_a_clear_error() -> None:
    with pytest.raises(drover.DroverError, match="only available inside a Drover run"):
        drover.current_run()


def test_step_start_times_go_to_operators_that_serve_protocol_2(attempt: Any) -> None:
    from drover.protocol import PROTOCOL_VERSION, negotiate

    assert negotiate(None) == 1 and negotiate(1) == 1 and negotiate(99) == PROTOCOL_VERSION
    state, api = attempt([])
    make_item("old-operator")
    assert "startedAt" not in api.sent[-1][2]["steps"][0]  # it would refuse the field
    state.step_times = True  # the context said: protocol 2
    make_item("new-operator")
    sent = api.sent[-1][2]["steps"][0]
    assert StepRecord.model_validate(sent).started_at is not None
