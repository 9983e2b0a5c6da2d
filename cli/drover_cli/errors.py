"""Every failure as one line on stderr naming the problem, with an exit code: 2 for usage
errors (a bad flag, a payload that is not JSON), 1 for what the API refused or could not do,
130 when interrupted."""

from __future__ import annotations

from pydantic import ValidationError

import drover
from drover_cli.connect import ConnectError

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130

# Problem types worth naming in front of the API's message.
_PREFIXED = {"forbidden", "unauthenticated", "unavailable", "conflict"}


def one_line(exc: BaseException) -> str:
    """What went wrong, in one line."""
    if isinstance(exc, drover.ClientError):
        message = exc.message or str(exc)
        if isinstance(exc, drover.ForbiddenError) and not message.lower().startswith("forbidden"):
            message = f"forbidden: {message}"
        elif isinstance(exc, drover.UnauthorizedError):
            message = f"unauthorized: {message}"
        elif isinstance(exc, drover.UnavailableError):
            message = f"unavailable: {message}"
        return _flat(message)
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        return _flat(f"{where}: {first['msg']}")
    if isinstance(exc, ConnectError):
        return _flat(str(exc))
    return _flat(f"{type(exc).__name__}: {exc}")


def exit_code_of(exc: BaseException) -> int:
    return EXIT_USAGE if isinstance(exc, ValidationError) else EXIT_FAILED


def _flat(text: str) -> str:
    return " ".join(text.split())
