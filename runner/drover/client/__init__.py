"""`drover.Client` and `drover.AsyncClient`: start runs of Drover Tasks from applications,
wait for them and read their history (the `client` extra: `pip install drover[client]`)."""

from drover.client.aio import AsyncClient
from drover.client.results import RunHandle, RunResult
from drover.client.sync import Client

__all__ = ["AsyncClient", "Client", "RunHandle", "RunResult"]
