"""`drover dashboard`: the web dashboard on 127.0.0.1, through a local proxy carrying the
user's kubeconfig credentials (docs/dashboard.md)."""

from __future__ import annotations

import webbrowser
from typing import Any

import click

from drover_cli.connect import connection_options, pop_target
from drover_cli.proxy import DashboardProxy


@click.command()
@connection_options
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default="any free port",
    help="The local port to serve the dashboard on.",
)
@click.option("--no-open", is_flag=True, help="Print the URL only; do not open a browser.")
def dashboard(port: int, no_open: bool, **params: Any) -> None:
    """Serve the web dashboard on 127.0.0.1 and open it in a browser.

    Every page is read, and every action taken, as you: the proxy carries your kubeconfig
    credentials to Drover's API, which shows only what your Kubernetes RBAC allows.
    Ctrl-C stops it.
    """
    target = pop_target(params)
    client = target.client()
    client.close()
    try:
        proxy = DashboardProxy(client.connection, port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    click.echo(f"Drover dashboard: {proxy.url}", err=False)
    click.echo("Press Ctrl-C to stop.", err=True)
    if not no_open:
        webbrowser.open(proxy.url)
    try:
        proxy.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
