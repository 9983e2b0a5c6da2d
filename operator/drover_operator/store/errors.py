"""What store calls raise when the database cannot help, for callers to catch without
knowing the driver."""

from __future__ import annotations

import psycopg

#: The database is briefly unavailable (restarting, unreachable, pool exhausted): retry.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.errors.AdminShutdown,
    TimeoutError,
)

#: Valid JSON Postgres cannot store, e.g. a NUL character in a string.
UNSTORABLE: tuple[type[BaseException], ...] = (psycopg.DataError,)
