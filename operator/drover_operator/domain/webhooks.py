"""Signed webhooks (pure): the signing secret senders are given, the path a Task's webhook is
served at, and checking a request's signature."""

from __future__ import annotations

import hashlib
import hmac

#: Headers carrying `sha256=<hex HMAC-SHA256 of the body>`: ours, and GitHub's.
SIGNATURE_HEADERS = ("X-Drover-Signature-256", "X-Hub-Signature-256")
DEFAULT_IDEMPOTENCY_HEADER = "Idempotency-Key"
#: The key of the signing secret in the Secret `<task>-webhook`.
SECRET_KEY = "key"


def signing_secret(key: bytes) -> bytes:
    """What senders sign with: the key as hex text, as webhook settings (GitHub, Stripe)
    take a text secret."""
    return key.hex().encode()


def secret_name(task: str) -> str:
    return f"{task}-webhook"


def hook_path(namespace: str, task: str) -> str:
    return f"/v1/hooks/{namespace}/{task}"


def signature(key: bytes, body: bytes) -> str:
    """The header value a sender computes: `sha256=<hex>`."""
    return "sha256=" + hmac.new(signing_secret(key), body, hashlib.sha256).hexdigest()


def valid(key: bytes, body: bytes, header: str | None) -> bool:
    """Whether `header` is the body's signature; compared in constant time."""
    if not header:
        return False
    return hmac.compare_digest(signature(key, body).encode(), header.strip().encode())
