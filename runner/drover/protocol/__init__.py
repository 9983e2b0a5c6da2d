"""The Drover wire protocol: what task pods, clients and the operator agree on.

Everything here is public and versioned. The operator imports it; it imports nothing from the
operator. Task images carry whatever `drover` version they were built with, usually older
than the operator that runs them, so this contract changes only by addition.

- `drover.protocol.wire` — request and response bodies of the run API, and their size caps.
- `drover.protocol.phases` — the run phases (`Phase`) and which of them are final.
- `drover.protocol.names` — the API group, labels, annotations and pod environment variables.
- `drover.protocol.timestamps` — RFC 3339 formatting and parsing, as Kubernetes writes it.
- `drover.protocol.telemetry` — the shared conventions for JSON logs and OpenTelemetry.

**Versions.** `PROTOCOL_VERSION` is sent by the runner in the `Drover-Protocol` header of
every run API request. An operator serves every protocol version from
`MIN_PROTOCOL_VERSION` to its own `PROTOCOL_VERSION`; a request without the header is
version 1 (runners before the header existed). Upgrade the operator first: a newer operator
serves older task images; an older operator refuses a newer runner with 400
`unsupported-protocol` naming the versions it serves.

Since version 2 the operator also says which versions it serves (`RunContext.protocol`,
its `PROTOCOL_VERSION`): a runner introduces itself as version 1 on its first call (the
context) and then speaks the highest version both serve (`negotiate`), so a newer runner
works with an older operator too.

| protocol | adds | operator releases | runner releases |
|---|---|---|---|
| 1 | | 0.1 and later | 0.1 and later |
| 2 | `RunContext.protocol`, `StepRecord.startedAt` | 0.1 and later | 0.1 and later |
"""

from __future__ import annotations

PROTOCOL_VERSION = 2
MIN_PROTOCOL_VERSION = 1
PROTOCOL_HEADER = "Drover-Protocol"


def negotiate(served: int | None) -> int:
    """The version to speak with an operator that serves up to `served` (None: it did not
    say, so it serves version 1 only)."""
    return max(MIN_PROTOCOL_VERSION, min(PROTOCOL_VERSION, served or 1))


__all__ = ["MIN_PROTOCOL_VERSION", "PROTOCOL_HEADER", "PROTOCOL_VERSION", "negotiate"]
