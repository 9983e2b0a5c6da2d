"""Task and TaskRun resources (drover.dev/v1alpha1): pydantic models and CRD generation.

The models are the single source of truth: `python -m drover_operator.crd` (`make crds`)
generates `crds/*.yaml` from them, and the operator parses specs with them, e.g.
`TaskSpec.model_validate(spec)`.
"""

from drover.protocol.names import API_VERSION, GROUP, VERSION
from drover_operator.crd.durations import format_duration, parse_duration
from drover_operator.crd.task import Task, TaskSpec, TaskStatus
from drover_operator.crd.taskrun import Phase, TaskRun, TaskRunSpec, TaskRunStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "Phase",
    "Task",
    "TaskRun",
    "TaskRunSpec",
    "TaskRunStatus",
    "TaskSpec",
    "TaskStatus",
    "format_duration",
    "parse_duration",
]
