"""Operator settings: typed, grouped, read from `DROVER_*` environment variables (and a few
command-line flags), and validated once at start-up.

Each field names its environment variable with `Env(...)`; its docstring is its documentation
(`python -m drover_operator.settings` writes the table in `docs/operator.md`, and a test
checks it is current). A bad value stops the operator before it does anything, with an
error naming the variable. Durations are `timedelta`s, parsed once.

The variables are flat (`DROVER_API_PORT`, `DROVER_POD_RETENTION`) because they are a
contract with the Helm chart and existing deployments; the groups are how the code reads
them (`settings.api.port`, `settings.retention.pods`). kopf's `OperatorSettings` is the model.
This loader is written here rather than taken from pydantic-settings, whose nested models
read variables named after the nesting (`DROVER_RETENTION__PODS`), not the flat names we keep.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from drover_operator.crd.durations import format_duration, parse_duration
from drover_operator.errors import ConfigurationError


@dataclass(frozen=True)
class Env:
    """The environment variable a setting is read from (and its command-line flag, if any)."""

    name: str
    flag: str | None = None


def _duration(value: object) -> object:
    if isinstance(value, str):
        return parse_duration(value.strip())
    return value


def _seconds(value: object) -> object:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return dt.timedelta(seconds=float(value))
    return value


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


_RATE = re.compile(r"^\d+\s*/\s*(second|minute|hour)$")


def _rate(value: str) -> str:
    if not _RATE.match(value.strip()):
        raise ValueError("must be `<count>/second`, `<count>/minute` or `<count>/hour`")
    return value.strip()


#: A Go-style duration string (`90s`, `5m`, `1h30m`), as in Task specs.
Duration = Annotated[dt.timedelta, BeforeValidator(_duration)]
#: A number of seconds (`0.5`).
Seconds = Annotated[dt.timedelta, BeforeValidator(_seconds)]


class Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class DatabaseSettings(Group):
    """Postgres, where every decision is recorded."""

    url: Annotated[str, Env("DROVER_DATABASE_URL", "--database-url"), Field(min_length=1)]
    """Postgres DSN, e.g. `postgresql://drover:…@db:5432/drover` (required)."""
    pool_size: Annotated[int, Env("DROVER_DATABASE_POOL_SIZE"), Field(ge=2, le=200)] = 10
    """Connections in the operator's pool."""


class WatchSettings(Group):
    """What the kopf handlers watch, and which replica runs them."""

    namespaces: Annotated[
        list[str], Env("DROVER_NAMESPACES", "-n"), BeforeValidator(_comma_list)
    ] = Field(default_factory=list)
    """Comma-separated namespaces to watch; empty: all namespaces."""
    peering: Annotated[str, Env("DROVER_PEERING", "--peering"), Field(min_length=1)] = "drover"
    """kopf peering name: replicas with the same name elect one active (see "Replicas and
    peering")."""
    standalone: Annotated[bool, Env("DROVER_STANDALONE", "--standalone")] = False
    """Run without peering (a single replica, e.g. development)."""


class LoopSettings(Group):
    """The reconcile loop and the loops beside it."""

    tick: Annotated[
        Seconds,
        Env("DROVER_TICK_SECONDS"),
        Field(gt=dt.timedelta(0), le=dt.timedelta(seconds=60)),
    ] = dt.timedelta(seconds=1)
    """Seconds: the longest a loop waits between passes when nothing wakes it."""
    batch_size: Annotated[int, Env("DROVER_BATCH_SIZE"), Field(ge=1, le=10_000)] = 200
    """Rows each step of a pass handles at most (pods to create, statuses to push, …)."""

    @property
    def history_interval(self) -> dt.timedelta:
        """How often history cleanup runs."""
        return max(dt.timedelta(seconds=1), 5 * self.tick)


class RunSettings(Group):
    """Defaults and limits for runs."""

    attempts_in_status: Annotated[int, Env("DROVER_ATTEMPTS_IN_STATUS"), Field(ge=1, le=100)] = 10
    """Attempts kept in `status.attempts` (all are in Postgres)."""
    output_limit_bytes: Annotated[
        int, Env("DROVER_OUTPUT_LIMIT_BYTES"), Field(ge=0, le=262_144)
    ] = 4096
    """`status.output` is cut past this (`outputTruncated: true`; the full output is in
    Postgres and the API)."""
    default_pending_timeout: Annotated[
        Duration, Env("DROVER_DEFAULT_PENDING_TIMEOUT"), Field(gt=dt.timedelta(0))
    ] = dt.timedelta(minutes=10)
    """`timeouts.pending` for Tasks that set none."""
    suspend_after: Annotated[
        Duration, Env("DROVER_WAIT_SUSPEND_THRESHOLD"), Field(ge=dt.timedelta(0))
    ] = dt.timedelta(seconds=10)
    """A durable wait (`drover.wait_for`, ...) with more than this left suspends the run: its
    pod exits and its slot is freed until the wait is over. A shorter one sleeps in the pod.
    Waits on tokens and child runs always suspend while they are not over."""


class ApiSettings(Group):
    """The HTTP API: run API, `/metrics`, probes."""

    host: Annotated[str, Env("DROVER_API_HOST")] = "0.0.0.0"
    """Where the API listens."""
    port: Annotated[int, Env("DROVER_API_PORT"), Field(ge=0, le=65535)] = 8080
    """Its port."""
    url: Annotated[str | None, Env("DROVER_API_URL")] = None
    """The API's URL as task pods reach it (the chart sets the Service URL); default
    `http://127.0.0.1:<port>`."""
    tls_port: Annotated[int, Env("DROVER_API_TLS_PORT"), Field(ge=0, le=65535)] = 8443
    """The API's HTTPS port (when a certificate is given): where the Kubernetes API server
    forwards `api.drover.dev` requests (the aggregated API)."""
    tls_cert_file: Annotated[str, Env("DROVER_API_TLS_CERT_FILE")] = ""
    """PEM certificate (chain) of the HTTPS port; empty: no HTTPS, no aggregated API."""
    tls_key_file: Annotated[str, Env("DROVER_API_TLS_KEY_FILE")] = ""
    """Its private key."""
    ca_file: Annotated[str, Env("DROVER_API_CA_FILE")] = ""
    """PEM certificates that verify the certificate of `DROVER_API_URL` when it is https; given
    to SDK task pods (in their token Secret), whose runner then refuses any other server."""
    public_url: Annotated[str | None, Env("DROVER_API_PUBLIC_URL")] = None
    """The API's URL as people and outside systems reach it: the base of waitpoint tokens'
    completion URLs (`drover.create_token().url`); default: the URL task pods use."""
    rate_per_source: Annotated[str, Env("DROVER_API_RATE_PER_SOURCE"), AfterValidator(_rate)] = (
        "100/second"
    )
    """Requests to webhooks and waitpoint token URLs (the endpoints that need no Kubernetes
    identity) from one source address, per replica, as `<count>/<second|minute|hour>`; over
    it: 429 with `Retry-After`."""
    rate_per_target: Annotated[str, Env("DROVER_API_RATE_PER_TARGET"), AfterValidator(_rate)] = (
        "50/second"
    )
    """Requests to one webhook, or one token's URL, per replica."""
    token_audiences: Annotated[
        list[str], Env("DROVER_API_TOKEN_AUDIENCES"), BeforeValidator(_comma_list)
    ] = Field(default_factory=list)
    """Comma-separated audiences a bearer token sent straight to the API must carry; empty:
    the Kubernetes API server's own (plain ServiceAccount tokens)."""

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiSettings:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("DROVER_API_TLS_CERT_FILE and DROVER_API_TLS_KEY_FILE go together")
        if self.ca_file and not Path(self.ca_file).is_file():
            raise ValueError(f"DROVER_API_CA_FILE: no such file {self.ca_file!r}")
        return self

    @property
    def pod_ca(self) -> str:
        """The PEM given to pods (read once, at start-up)."""
        return Path(self.ca_file).read_text() if self.ca_file else ""

    @property
    def pod_url(self) -> str:
        return self.url or f"http://127.0.0.1:{self.port}"

    @property
    def token_base_url(self) -> str:
        return (self.public_url or self.pod_url).rstrip("/")


class RetentionSettings(Group):
    """How long finished runs leave traces (see docs/schedules.md#history)."""

    pods: Annotated[Duration, Env("DROVER_POD_RETENTION")] = dt.timedelta(minutes=5)
    """Pods of finished runs are deleted this long after the run finished."""
    history: Annotated[Duration, Env("DROVER_HISTORY_RETENTION")] = dt.timedelta(hours=720)
    """Records of deleted TaskRuns are purged from Postgres this long after the run
    finished; `0s`: never."""


class LoggingSettings(Group):
    """The operator's own logs."""

    level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        Env("DROVER_LOG_LEVEL"),
        BeforeValidator(_upper),
    ] = "INFO"
    """Log level."""
    format: Annotated[Literal["text", "json"], Env("DROVER_LOG_FORMAT")] = "text"
    """`json`: one JSON object per line, with run, attempt and trace ids (also given to SDK
    task pods)."""


class RunnerSettings(Group):
    """What SDK task pods are given."""

    otlp_endpoint: Annotated[str, Env("DROVER_RUNNER_OTLP_ENDPOINT")] = ""
    """OTLP endpoint for SDK task pods' step spans; the operator's own traces follow the
    `OTEL_*` variables (see docs/observability.md)."""


class OperatorSettings(Group):
    """Every setting of `drover-operator run`, by group."""

    database: DatabaseSettings
    watch: WatchSettings = Field(default_factory=WatchSettings)
    loop: LoopSettings = Field(default_factory=LoopSettings)
    runs: RunSettings = Field(default_factory=RunSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    runner: RunnerSettings = Field(default_factory=RunnerSettings)


@dataclass(frozen=True)
class SettingField:
    """One setting: where it lives, where it is read from, and what it means."""

    group: str
    field: str
    env: Env
    default: Any
    doc: str


def fields() -> Iterator[SettingField]:
    for group_name, group_field in OperatorSettings.model_fields.items():
        group = group_field.annotation
        assert isinstance(group, type) and issubclass(group, Group)
        for name, info in group.model_fields.items():
            env = next(m for m in info.metadata if isinstance(m, Env))
            default = None if info.is_required() else info.get_default(call_default_factory=True)
            yield SettingField(group_name, name, env, default, info.description or "")


def load(
    environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None
) -> OperatorSettings:
    """Settings from `environ` (`DROVER_*`), with `overrides` (by variable name, e.g. from
    command-line flags) taking precedence. Raises `ConfigurationError` naming every
    variable whose value is refused."""
    values = {**environ, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    nested: dict[str, dict[str, Any]] = {}
    by_location: dict[tuple[str, str], str] = {}
    for setting in fields():
        by_location[(setting.group, setting.field)] = setting.env.name
        if setting.env.name in values:
            nested.setdefault(setting.group, {})[setting.field] = values[setting.env.name]
    nested.setdefault("database", {})
    try:
        return OperatorSettings.model_validate(nested)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            group, field = (str(part) for part in (*error["loc"], "", "")[:2])
            name = by_location.get((group, field))
            message = str(error["msg"]).removeprefix("Value error, ")
            if name is None:  # a rule across a group's settings: its message names them
                problems.append(message)
            elif error["type"] == "missing":
                problems.append(f"{name} is required")
            else:
                problems.append(f"{name}={values.get(name, '')!r}: {message}")
        raise ConfigurationError("invalid settings: " + "; ".join(problems)) from None


# -- the table in docs/operator.md ------------------------------------------------------------

_BEGIN = "<!-- settings table: generated by `python -m drover_operator.settings` -->"
_END = "<!-- end of settings table -->"


def _default(setting: SettingField) -> str:
    value = setting.default
    if setting.field == "url" and setting.group == "database":
        return "required"
    if value is None or value == [] or value == "":
        return "none" if setting.field != "namespaces" else "all"
    if isinstance(value, dt.timedelta):
        if setting.env.name.endswith("_SECONDS"):
            return f"{value.total_seconds():g}"
        return f"`{format_duration(value)}`"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f"`{value}`"
    return str(value)


def table() -> str:
    """The settings as a Markdown table, grouped."""
    lines = ["| variable (flag) | default | meaning |", "|---|---|---|"]
    for setting in fields():
        flag = f" (`{setting.env.flag}`)" if setting.env.flag else ""
        doc = " ".join(setting.doc.split()).replace("|", "\\|")
        lines.append(f"| `{setting.env.name}`{flag} | {_default(setting)} | {doc} |")
    return "\n".join(lines)


def render_docs(text: str) -> str:
    """`text` (docs/operator.md) with its settings table replaced by the current one."""
    start, end = text.index(_BEGIN), text.index(_END)
    return text[: start + len(_BEGIN)] + "\n" + table() + "\n" + text[end:]


def main() -> None:
    """Write the table into docs/operator.md; `--check`: fail if it is stale instead."""
    target = Path("docs/operator.md")
    current = target.read_text()
    wanted = render_docs(current)
    if "--check" in sys.argv[1:]:
        if wanted != current:
            sys.exit(f"{target}: the settings table is stale: run `make docs`")
        return
    target.write_text(wanted)
    print(f"wrote the settings table in {target}")


if __name__ == "__main__":
    main()
