"""Where the command line connects, and as whom: the flags every command takes (as kubectl
has them), turned into a `drover.Client`."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

import drover

F = TypeVar("F", bound=Callable[..., Any])

#: The environment variable `--token` defaults to (with `--api-url`).
ENV_TOKEN = "DROVER_TOKEN"


class ConnectError(Exception):
    """No way to reach the API: no kubeconfig, an unknown context, ..."""


@dataclass(frozen=True)
class Target:
    """The connection flags of one command."""

    namespace: str | None = None
    context: str | None = None
    kubeconfig: str | None = None
    api_url: str | None = None
    token: str | None = None

    def client(self) -> drover.Client:
        try:
            return drover.Client(
                api_url=self.api_url,
                token=self.token or (os.environ.get(ENV_TOKEN) if self.api_url else None),
                kubeconfig=self.kubeconfig,
                context=self.context,
                namespace=self.namespace,
            )
        except Exception as exc:  # lightkube's ConfigError, a missing file, a bad context
            raise ConnectError(f"cannot use the kubeconfig: {exc}") from None


def target_of(params: dict[str, Any]) -> Target:
    """The connection flags among a command's parameters (also during completion, when only
    some are parsed)."""
    return Target(
        namespace=params.get("namespace"),
        context=params.get("context"),
        kubeconfig=params.get("kubeconfig"),
        api_url=params.get("api_url"),
        token=params.get("token"),
    )


def connection_options(command: F) -> F:
    """`-n/--namespace`, `--context`, `--kubeconfig`, `--api-url`, `--token`."""
    options = [
        click.option(
            "-n",
            "--namespace",
            metavar="NAMESPACE",
            help="The namespace (default: the kubeconfig context's, else default).",
        ),
        click.option("--context", metavar="NAME", help="The kubeconfig context to use."),
        click.option(
            "--kubeconfig",
            metavar="PATH",
            type=click.Path(dir_okay=False),
            help="The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).",
        ),
        click.option(
            "--api-url",
            metavar="URL",
            help="Call the operator's API directly at URL (bearer token) instead of through "
            "the Kubernetes API server.",
        ),
        click.option(
            "--token",
            metavar="TOKEN",
            help=f"The bearer token for --api-url (default: ${ENV_TOKEN}).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def all_namespaces_option(command: F) -> F:
    return click.option(
        "-A",
        "--all-namespaces",
        is_flag=True,
        help="In every namespace (needs `list` at the cluster scope, as kubectl get -A).",
    )(command)


def pop_target(params: dict[str, Any]) -> Target:
    """Take the connection flags out of a command's parameters."""
    return Target(
        **{k: params.pop(k) for k in ("namespace", "context", "kubeconfig", "api_url", "token")}
    )
