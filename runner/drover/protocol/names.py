"""Names the operator, task pods and clients share: the API group, labels, annotations and
the environment a task pod gets."""

from __future__ import annotations

from typing import Final

GROUP: Final = "drover.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

# -- labels (on pods, token Secrets and scheduled TaskRuns) -----------------------------------

LABEL_TASK: Final = "drover.dev/task"
LABEL_RUN: Final = "drover.dev/run"
LABEL_RUN_UID: Final = "drover.dev/run-uid"
LABEL_ATTEMPT: Final = "drover.dev/attempt"
#: Every pod of a run, numbered: an attempt resumed after a wait runs in a new pod.
LABEL_EXECUTION: Final = "drover.dev/execution"
#: On child runs: the name of the run that triggered them.
LABEL_PARENT_RUN: Final = "drover.dev/parent-run"
#: On TaskRuns a schedule created: the Task whose schedule it is.
LABEL_SCHEDULE: Final = "drover.dev/schedule"

# -- annotations -------------------------------------------------------------------------------

ANNOTATION_RUN: Final = "drover.dev/run-name"
ANNOTATION_TASK: Final = "drover.dev/task-name"
#: On TaskRuns a schedule created: the tick (RFC 3339) the run is for.
ANNOTATION_SCHEDULED_TIME: Final = "drover.dev/scheduled-time"

#: The operator's finalizer on TaskRuns: a deleted run's record is closed first.
FINALIZER: Final = "drover.dev/run-record"

# -- a task pod's environment ------------------------------------------------------------------

ENV_API_URL: Final = "DROVER_API_URL"
ENV_RUN_ID: Final = "DROVER_RUN_ID"
ENV_RUN_NAME: Final = "DROVER_RUN_NAME"
ENV_NAMESPACE: Final = "DROVER_NAMESPACE"
ENV_TASK: Final = "DROVER_TASK"
ENV_ATTEMPT: Final = "DROVER_ATTEMPT"
ENV_MAX_ATTEMPTS: Final = "DROVER_MAX_ATTEMPTS"
ENV_TOKEN: Final = "DROVER_TOKEN"
#: PEM certificates that verify the API's when `DROVER_API_URL` is https (from the token Secret).
ENV_API_CA: Final = "DROVER_API_CA"
ENV_ENTRYPOINT: Final = "DROVER_ENTRYPOINT"
ENV_LOG_FORMAT: Final = "DROVER_LOG_FORMAT"
ENV_TRACEPARENT: Final = "TRACEPARENT"
