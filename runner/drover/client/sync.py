"""`drover.Client`: start runs, wait for them, read their history (blocking)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import httpx2

from drover.client import calls
from drover.client.calls import Call, Duration
from drover.client.connection import Connection, connect
from drover.client.results import RunHandle, RunResult, handle_of, result_of
from drover.errors import UnavailableError, WaitTimeout
from drover.protocol.history import LogEntry, RunTimeline, TaskSummaryList
from drover.protocol.runs import RunView
from drover.protocol.workflows import TokenState


class Client:
    """Triggers and inspects runs of Drover Tasks, as a Kubernetes identity.

    `Client()` finds its credentials the way kubectl does (the current kubeconfig context, or
    in a pod its ServiceAccount), and talks to Drover through the Kubernetes API server;
    `Client(api_url=..., token=...)` talks to the operator's API directly. Every call is
    authorized by Kubernetes RBAC on `taskruns.drover.dev` in the namespace.
    """

    def __init__(
        self,
        *,
        api_url: str | None = None,
        token: str | None = None,
        ca_file: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        namespace: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.connection: Connection = connect(
            api_url=api_url,
            token=token,
            ca_file=ca_file,
            kubeconfig=kubeconfig,
            context=context,
            namespace=namespace,
            timeout=timeout,
        )
        self.namespace = self.connection.namespace
        self._http = httpx2.Client(**self.connection.params)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call, *, retry: bool = True) -> Any:
        delay = 0.2
        for attempt in range(6):
            try:
                response = self._http.request(
                    call.method, call.path, json=call.json, params=call.params or None
                )
            except httpx2.TransportError as exc:
                if not retry or attempt == 5:
                    raise UnavailableError(
                        0, "unavailable", f"no answer from the API: {exc}"
                    ) from exc
            else:
                body = calls.decode(response.content)
                if response.status_code < 300:
                    return body
                if not retry or response.status_code not in calls.RETRYABLE or attempt == 5:
                    raise calls.error(response.status_code, body, response.reason_phrase)
            time.sleep(delay)
            delay = min(delay * 2, 3.0)
        raise AssertionError("unreachable")

    # -- starting runs -------------------------------------------------------------------

    def trigger(
        self,
        task: str,
        payload: Any = None,
        *,
        namespace: str | None = None,
        idempotency_key: str | None = None,
        idempotency_key_ttl: Duration = None,
        concurrency_key: str | None = None,
        priority: int | None = None,
        delay: Duration = None,
        ttl: Duration = None,
        tags: list[str] | dict[str, str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> RunHandle:
        """Start a run of `task` (returns once its TaskRun exists). With `idempotency_key`,
        a trigger whose key is bound to a run gets that run back (`.cached`)."""
        body = calls.trigger_body(
            payload,
            idempotency_key=idempotency_key,
            idempotency_key_ttl=idempotency_key_ttl,
            concurrency_key=concurrency_key,
            priority=priority,
            delay=delay,
            ttl=ttl,
            tags=tags,
            metadata=metadata,
        )
        call = calls.trigger(self.connection.prefix, namespace or self.namespace, task, body)
        return handle_of(self._send(call, retry=idempotency_key is not None))

    def batch_trigger(
        self, task: str, items: list[dict[str, Any]], *, namespace: str | None = None
    ) -> list[RunHandle]:
        """Start up to 1,000 runs; each item has `trigger`'s keywords (`payload`, ...).
        Nothing is started unless every item is valid."""
        bodies = [calls.trigger_body(**item) for item in items]
        call = calls.batch(self.connection.prefix, namespace or self.namespace, task, bodies)
        return [handle_of(item) for item in self._send(call, retry=False)["items"]]

    def replay(self, name: str, payload: Any = None, *, namespace: str | None = None) -> RunHandle:
        """A new run of the same Task and options (with `payload`, if given)."""
        call = calls.replay(self.connection.prefix, namespace or self.namespace, name, payload)
        return handle_of(self._send(call, retry=False))

    def cancel(self, name: str, *, namespace: str | None = None) -> RunView:
        call = calls.cancel(self.connection.prefix, namespace or self.namespace, name)
        return calls.view(self._send(call))

    # -- waitpoint tokens ------------------------------------------------------------------

    def complete_token(
        self, token_id: str, data: Any = None, *, namespace: str | None = None
    ) -> TokenState:
        """Complete a waitpoint token a run waits on (`drover.create_token`), resuming the
        run with `data`. The first completion wins: a later one changes nothing
        (`completed_now` is False). Needs RBAC `update` on `waitpoints.drover.dev`."""
        call = calls.complete_token(
            self.connection.prefix, namespace or self.namespace, token_id, data
        )
        return calls.token(self._send(call))

    def get_token(self, token_id: str, *, namespace: str | None = None) -> TokenState:
        call = calls.get_token(self.connection.prefix, namespace or self.namespace, token_id)
        return calls.token(self._send(call))

    def tokens(
        self,
        *,
        state: str | None = "waiting",
        task: str | None = None,
        namespace: str | None = None,
        all_namespaces: bool = False,
        limit: int = 100,
    ) -> list[TokenState]:
        """Tokens in the namespace (or in every namespace), newest first (default: those
        still waiting)."""
        call = calls.list_tokens(
            self.connection.prefix,
            None if all_namespaces else namespace or self.namespace,
            state=state,
            task=task,
            limit=limit,
        )
        return calls.tokens(self._send(call))

    # -- reading runs ----------------------------------------------------------------------

    def get(self, name: str, *, namespace: str | None = None) -> RunView:
        call = calls.get(self.connection.prefix, namespace or self.namespace, name)
        return calls.view(self._send(call))

    def wait(
        self, name: str, timeout: float | None = None, *, namespace: str | None = None
    ) -> RunResult:
        """Wait until the run finishes; `drover.WaitTimeout` after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = 0.2
        while True:
            run = self.get(name, namespace=namespace)
            if calls.finished(run):
                return result_of(run)
            if deadline is not None and time.monotonic() + interval > deadline:
                raise WaitTimeout(f"run {name} still {run.phase} after {timeout}s")
            time.sleep(interval)
            interval = min(interval * 1.5, 2.0)

    def runs(
        self,
        *,
        task: str | None = None,
        phase: str | list[str] | None = None,
        tag: str | list[str] | None = None,
        since: dt.datetime | Duration = None,
        until: dt.datetime | None = None,
        parent: str | None = None,
        namespace: str | None = None,
        all_namespaces: bool = False,
        page_size: int = 100,
    ) -> Iterator[RunView]:
        """Every matching run, newest first, page by page (cleaned-up runs included); with
        `parent`, the child runs of that run; with `all_namespaces`, in every namespace
        (RBAC: `list` taskruns at the cluster scope)."""
        after = None
        while True:
            call = calls.list_page(
                self.connection.prefix,
                None if all_namespaces else namespace or self.namespace,
                parent=parent,
                task=task,
                phase=phase,
                tag=tag,
                since=since,
                until=until,
                limit=page_size,
                after=after,
            )
            page = calls.page(self._send(call))
            yield from page.items
            if not page.continue_:
                return
            after = page.continue_

    # -- overviews ------------------------------------------------------------------------

    def timeline(self, name: str, *, namespace: str | None = None) -> RunTimeline:
        """The run's executions (pods, exit codes), steps with their timing, and waits."""
        call = calls.timeline(self.connection.prefix, namespace or self.namespace, name)
        return calls.timeline_of(self._send(call))

    def logs(
        self,
        name: str,
        *,
        after: int = 0,
        attempt: int | None = None,
        since: dt.datetime | Duration = None,
        limit: int = 1000,
        namespace: str | None = None,
    ) -> list[LogEntry]:
        """Up to `limit` of the run's log lines after line `after` (an `id`), oldest first;
        of one attempt, logged from `since`. From Drover's history: also once the pod is
        gone."""
        call = calls.logs(
            self.connection.prefix,
            namespace or self.namespace,
            name,
            after=after,
            attempt=attempt,
            since=since,
            limit=limit,
        )
        return calls.log_lines(self._send(call))

    def tasks(
        self,
        *,
        namespace: str | None = None,
        all_namespaces: bool = False,
        window: Duration = None,
    ) -> TaskSummaryList:
        """Every Task with its runs now (running, queued, waiting) and its outcomes and
        durations in the last `window` (default 24h)."""
        call = calls.tasks(
            self.connection.prefix,
            None if all_namespaces else namespace or self.namespace,
            window=window,
        )
        return calls.task_list(self._send(call))
