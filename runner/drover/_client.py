"""A small HTTP client for the run API, on the standard library (task images stay light).

Each thread keeps one persistent connection (checkpoints are on the task's critical path).
Calls are retried with backoff while the operator or its database is briefly unavailable
(connection errors, 5xx, 429); 4xx answers are final and raise `ApiError`.
"""

from __future__ import annotations

import http.client
import json
import random
import ssl
import threading
import time
import urllib.parse
from typing import Any

from pydantic import BaseModel

from drover.errors import ApiError
from drover.protocol import PROTOCOL_HEADER, negotiate

_RETRYABLE = {429, 500, 502, 503, 504}


class RunApi:
    def __init__(
        self,
        base_url: str,
        run_id: str,
        token: str,
        *,
        deadline_s: float = 300.0,
        ca: str = "",
    ):
        url = urllib.parse.urlsplit(base_url)
        self.https = url.scheme == "https"
        self.host = url.hostname or "localhost"
        self.port = url.port or (443 if self.https else 80)
        self.prefix = f"{url.path.rstrip('/')}/v1/runs/{run_id}"
        # Version 1 until the context says what the operator serves (`speak`).
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            PROTOCOL_HEADER: "1",
        }
        self.deadline_s = deadline_s
        # https: the system's CAs, or exactly the operator's (`DROVER_API_CA`).
        self.context = ssl.create_default_context(cadata=ca or None) if self.https else None
        self._local = threading.local()

    def speak(self, served: int | None) -> int:
        """Speak the highest protocol version both this runner and the operator serve."""
        version = negotiate(served)
        self.headers[PROTOCOL_HEADER] = str(version)
        return version

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self.https:
                conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=30, context=self.context
                )
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def call(self, method: str, path: str, body: BaseModel | None = None) -> Any:
        data = body.model_dump_json(by_alias=True).encode() if body is not None else None
        return self.send(method, path, data)

    def send(self, method: str, path: str, data: bytes | None) -> Any:
        """Like `call`, with a body already encoded (the checkpoint path encodes once)."""
        deadline = time.monotonic() + self.deadline_s
        delay = 0.05
        while True:
            try:
                conn = self._connection()
                conn.request(method, self.prefix + path, body=data, headers=self.headers)
                response = conn.getresponse()
                raw = response.read()
                if response.status < 300:
                    return json.loads(raw) if raw else None
                failure: Exception = _api_error(response.status, response.reason, raw)
                if response.status not in _RETRYABLE:
                    raise failure
            except ssl.SSLCertVerificationError:
                raise  # the wrong server, or a misconfigured CA: waiting will not fix it
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                failure = exc
            if time.monotonic() + delay > deadline:
                raise failure
            time.sleep(delay * random.uniform(1.0, 1.5))
            delay = min(delay * 2, 5.0)


def _api_error(status: int, reason: str, raw: bytes) -> ApiError:
    try:
        problem = json.loads(raw or b"{}")
    except ValueError:
        problem = {}
    return ApiError(status, problem.get("type", "error"), problem.get("message", reason))
