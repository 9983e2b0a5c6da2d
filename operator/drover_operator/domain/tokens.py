"""Per-attempt credentials.

An attempt's token is `<run-id>.<attempt>.<mac>`, the MAC an HMAC over the run and attempt
with a key shared by all replicas (kept in Postgres). Tokens are derived, so the Secret that
carries one can be written again after a crash; only their sha256 is stored with the attempt.
The key itself is created by the store (`store.keys`).

The Secret that carries a token is named with a MAC too (`token_secret_name`): nobody without
the key can know the name before the operator creates it, so a Secret of that name can only
be the operator's own (written before a crash), never someone else's that it would overwrite.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

#: The name of the shared key in the store (`drover_keys`).
SIGNING_KEY_NAME = "attempt-token-hmac"
#: The key waitpoint tokens' URL secrets are derived with.
WAITPOINT_KEY_NAME = "waitpoint-token-hmac"

#: Every token Secret's name starts with this; policies can refuse Tasks that reference them.
TOKEN_SECRET_PREFIX = "drover-token-"


def attempt_token(key: bytes, run_id: str, attempt: int) -> str:
    mac = hmac.new(key, f"{run_id}.{attempt}".encode(), hashlib.sha256).digest()
    return f"{run_id}.{attempt}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def token_secret_name(key: bytes, run_id: str, attempt: int, pod: str) -> str:
    """`drover-token-<pod>-<16 hex digits of a MAC>` (the MAC's message differs from the
    token's, so the name says nothing about the token)."""
    message = f"token-secret:{run_id}.{attempt}".encode()
    mac = hmac.new(key, message, hashlib.sha256).hexdigest()[:16]
    return f"{TOKEN_SECRET_PREFIX}{pod}-{mac}"


def verify(key: bytes, token: str) -> tuple[str, int] | None:
    """(run id, attempt) of a genuine token, checked with the key alone (no database, constant
    time); None for anything else."""
    claimed = parse_token(token) if token.isascii() else None
    if claimed is None:
        return None
    expected = attempt_token(key, *claimed)
    return claimed if hmac.compare_digest(expected.encode(), token.encode()) else None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, int] | None:
    """(run id, attempt) a token claims to be for; None when it is not shaped like one."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[1].isdigit() or len(parts[1]) > 6:
        return None
    try:
        run_id = str(uuid.UUID(parts[0]))
    except ValueError:
        return None
    return run_id, int(parts[1])


def matches(token: str, stored_hash: str | None) -> bool:
    return stored_hash is not None and hmac.compare_digest(token_hash(token), stored_hash)


def waitpoint_secret(key: bytes, token_id: str) -> str:
    """The secret in a waitpoint token's URL: derived, so it is stored nowhere and a
    replayed `create_token` can give the same URL again."""
    mac = hmac.new(key, f"waitpoint.{token_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def secret_matches(key: bytes, token_id: str, secret: str) -> bool:
    # Bytes, not str: compare_digest refuses a str with non-ASCII characters.
    return hmac.compare_digest(waitpoint_secret(key, token_id).encode(), secret.encode())
