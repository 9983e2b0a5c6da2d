"""Operator settings, from environment variables (`DROVER_*`) and command-line flags.

| variable | default | meaning |
|---|---|---|
| `DROVER_DATABASE_URL` | (required) | Postgres DSN, e.g. `postgresql://user:pw@host:5432/drover` |
| `DROVER_DATABASE_POOL_SIZE` | 10 | connections in the operator's pool |
| `DROVER_NAMESPACES` | (all) | comma-separated namespaces to watch; empty = cluster-wide |
| `DROVER_PEERING` | `drover` | kopf peering name; replicas with the same name elect one active |
| `DROVER_STANDALONE` | false | run without peering (a single replica, e.g. development) |
| `DROVER_TICK_SECONDS` | 1.0 | how often timers are checked when nothing wakes the loop |
| `DROVER_ATTEMPTS_IN_STATUS` | 10 | how many recent attempts `status.attempts` keeps |
| `DROVER_OUTPUT_LIMIT_BYTES` | 4096 | `status.output` is cut past this (full in Postgres) |
| `DROVER_DEFAULT_PENDING_TIMEOUT` | `10m` | `timeouts.pending` when a Task sets none |
| `DROVER_LOG_LEVEL` | `INFO` | operator log level |
| `DROVER_API_HOST` | `0.0.0.0` | where the HTTP API (run API, metrics, probes) listens |
| `DROVER_API_PORT` | 8080 | its port |
| `DROVER_API_URL` | `http://127.0.0.1:<port>` | the API's URL as task pods reach it |
| `DROVER_POD_RETENTION` | `5m` | pods of finished runs are deleted this long after the run ends |
| `DROVER_HISTORY_RETENTION` | `720h` | records of deleted TaskRuns are purged after; `0s`: never |
| `DROVER_LOG_FORMAT` | `text` | `json`: one JSON object per line (also given to SDK task pods) |
| `DROVER_RUNNER_OTLP_ENDPOINT` | (none) | OTLP endpoint given to SDK task pods (step spans) |
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from drover_operator.crd.durations import parse_duration


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DROVER_", extra="ignore")

    database_url: str = Field(min_length=1)
    database_pool_size: int = Field(default=10, ge=2, le=200)
    # NoDecode: the env value is comma-separated (split below), not JSON.
    namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)
    peering: str = "drover"
    standalone: bool = False
    tick_seconds: float = Field(default=1.0, gt=0, le=60)
    attempts_in_status: int = Field(default=10, ge=1, le=100)
    output_limit_bytes: int = Field(default=4096, ge=0, le=262_144)
    default_pending_timeout: str = "10m"
    log_level: str = "INFO"
    api_host: str = "0.0.0.0"
    api_port: int = Field(default=8080, ge=0, le=65535)
    api_url: str | None = None
    pod_retention: str = "5m"
    history_retention: str = "720h"
    log_format: Literal["text", "json"] = "text"
    runner_otlp_endpoint: str = ""

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("pod_retention", "history_retention")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)  # raises ValueError with the reason
        return value

    @property
    def pod_api_url(self) -> str:
        return self.api_url or f"http://127.0.0.1:{self.api_port}"

    @property
    def pending_timeout(self) -> timedelta:
        return parse_duration(self.default_pending_timeout)
