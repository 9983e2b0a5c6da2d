"""The peer: DBOS Transact's `@DBOS.step` on the same Postgres, in its own process.

`python -m bench.dbos_steps DSN STEPS` prints `{"steps": N, "seconds": S}`.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def main() -> None:
    from dbos import DBOS  # the bench extra; not a dependency of Drover itself

    dsn, count = sys.argv[1], int(sys.argv[2])
    DBOS(config={"name": "drover-bench", "system_database_url": dsn, "log_level": "WARNING"})

    @DBOS.step()
    def noop(i: int) -> int:
        return i

    @DBOS.workflow()
    def many(n: int) -> float:
        started = time.perf_counter()
        for i in range(n):
            noop(i)
        return time.perf_counter() - started

    DBOS.launch()
    many(10)  # warm-up: connections, prepared statements
    seconds: Any = many(count)
    DBOS.destroy()
    print(json.dumps({"steps": count, "seconds": seconds}))


if __name__ == "__main__":
    main()
