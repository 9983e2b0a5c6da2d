"""The run lifecycle's rules as the store asks for them inside its transactions: who gets a
slot, what an admitted attempt looks like, what an ended attempt means for its run."""

from __future__ import annotations

import datetime as dt

from drover_operator.crd import TaskSpec
from drover_operator.domain.attempts import Outcome
from drover_operator.domain.lifecycle import (
    AttemptPlan,
    RunEnd,
    Slots,
    end_of_attempt,
    plan_attempt,
)
from drover_operator.domain.records import AttemptRecord, RunRecord, TaskRecord, WaitingRun
from drover_operator.store.admission import Start


class LifecyclePolicy:
    """Implements the store's `AdmissionPolicy` and `EndDecider` with the domain rules."""

    def __init__(self, default_pending: dt.timedelta, signing_key: bytes | None) -> None:
        self.default_pending = default_pending
        # Derives each attempt's API token (see domain.tokens); None: no SDK credentials.
        self.signing_key = signing_key
        self._specs: dict[tuple[str, int], TaskSpec] = {}

    def _spec(self, task: TaskRecord) -> TaskSpec:
        """The Task's spec, parsed once per generation (admission plans many attempts)."""
        key = (task.uid, task.generation)
        spec = self._specs.get(key)
        if spec is None:
            if len(self._specs) > 1000:
                self._specs.clear()
            spec = self._specs[key] = TaskSpec.model_validate(task.spec)
        return spec

    def slots(self, task: TaskRecord, active: int, per_key: dict[str, int]) -> Slots | None:
        return Slots.of(self._spec(task), active, per_key)

    def plan(self, task: TaskRecord, run: WaitingRun, start: Start) -> AttemptPlan:
        return plan_attempt(
            self._spec(task),
            task.spec,
            run_id=run.id,
            run_name=run.name,
            try_number=start.try_number,
            execution=start.execution,
            resumed=start.resumed,
            executed=start.executed,
            default_pending=self.default_pending,
            signing_key=self.signing_key,
        )

    def end(self, run: RunRecord, attempt: AttemptRecord, outcome: Outcome) -> RunEnd:
        """What the attempt's end means, by the Task spec it was admitted with."""
        spec = TaskSpec.model_validate(attempt.task_spec)
        return end_of_attempt(spec, attempt.try_number, outcome)
