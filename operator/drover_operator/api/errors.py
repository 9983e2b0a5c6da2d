"""Every error the API returns is JSON: `{"type": ..., "message": ...}` with a 4xx/5xx code."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from lightkube import ApiError
from pydantic import ValidationError

from drover_operator.errors import RequestError
from drover_operator.kube import NETWORK_ERRORS
from drover_operator.store.errors import UNAVAILABLE, UNSTORABLE

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ProblemError(RequestError):
    """Raised by a handler: becomes a JSON problem response with this status."""


# A problem is also a Kubernetes `Status`, so that kubectl (`create --raw`) and Kubernetes
# clients of the aggregated API print it as they print the API server's own errors.
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    503: "ServiceUnavailable",
}


def problem_response(status: int, type: str, message: str) -> web.Response:
    return web.json_response(
        {
            "type": type,
            "message": message,
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "reason": _REASONS.get(status, "InternalError"),
            "code": status,
        },
        status=status,
    )


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RequestError as exc:
        response = problem_response(exc.status, exc.type, exc.message)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response
    except ValidationError as exc:
        return problem_response(422, "invalid-body", _validation_message(exc))
    except json.JSONDecodeError as exc:
        return problem_response(400, "invalid-json", f"the body is not JSON: {exc}")
    except UnicodeDecodeError as exc:
        return problem_response(400, "invalid-json", f"the body is not UTF-8 JSON: {exc}")
    except web.HTTPRequestEntityTooLarge as exc:
        return problem_response(413, "too-large", exc.text or "request body too large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem_response(
            exc.status, exc.reason.lower().replace(" ", "-"), exc.text or exc.reason
        )
    except UNSTORABLE as exc:
        # Valid JSON Postgres cannot store, e.g. a NUL character in a string.
        return problem_response(422, "invalid-body", f"the body cannot be stored: {exc}")
    except (ApiError, *NETWORK_ERRORS) as exc:
        # The Kubernetes API server did not answer as it should: callers retry 503s.
        log.warning("Kubernetes API unavailable for %s %s: %s", request.method, request.path, exc)
        return problem_response(503, "unavailable", "the Kubernetes API is unavailable; retry")
    except UNAVAILABLE as exc:
        # The database is briefly unavailable: runners retry 503s.
        log.warning("database unavailable for %s %s: %s", request.method, request.path, exc)
        return problem_response(503, "unavailable", "the database is unavailable; retry")
    except ConnectionResetError:
        # The client went away mid-answer (a dashboard tab closed on a live stream): nobody
        # is left to answer, and aiohttp ignores the disconnection quietly.
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return problem_response(500, "internal", "internal error")
