"""`python -m bench.instrumented serve ...`: `twostep serve` with SQL statements and transactions counted.

Used by bench.profile only (never by the figures): SQLAlchemy event listeners on every Engine count the
statements by their first word and the commits; a thread writes the counts to $BENCH_COUNTS_FILE twice a
second. Nothing of twostep is changed.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from typing import Any

from sqlalchemy import Engine, event

COUNTS: Counter[str] = Counter()
_lock = threading.Lock()


@event.listens_for(Engine, "before_cursor_execute")
def _statement(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
    verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
    if verb == "INSERT" and "ON CONFLICT" in statement.upper():
        verb = "UPSERT"
    with _lock:
        COUNTS["statements"] += 1
        COUNTS[verb] += 1


@event.listens_for(Engine, "commit")
def _commit(conn: Any) -> None:
    with _lock:
        COUNTS["commits"] += 1


@event.listens_for(Engine, "begin")
def _begin(conn: Any) -> None:
    with _lock:
        COUNTS["transactions"] += 1


def _dump(path: str) -> None:
    while True:
        time.sleep(0.5)
        with _lock:
            data = dict(COUNTS)
        tmp = path + ".tmp"
        with open(tmp, "w") as out:
            json.dump(data, out)
        os.replace(tmp, path)


def _serialize_sqlite_transactions() -> None:
    """Experiment for the README's suggestion 1 (BENCH_SQLITE_WRITE_LOCK=1): the worker's threads queue on a
    Python lock for SQLite's single write lock, instead of sleep-polling in SQLite's busy handler."""
    from contextlib import contextmanager

    from twostep.storage import db

    original = db.Database.transaction
    lock = threading.Lock()

    @contextmanager
    def transaction(self: Any) -> Any:
        if self.engine.dialect.name != "sqlite":
            with original(self) as conn:
                yield conn
            return
        with lock, original(self) as conn:
            yield conn

    db.Database.transaction = transaction  # type: ignore[method-assign]


def main() -> int:
    if os.environ.get("BENCH_SQLITE_WRITE_LOCK") == "1":
        _serialize_sqlite_transactions()
    path = os.environ.get("BENCH_COUNTS_FILE")
    if path:
        threading.Thread(target=_dump, args=(path,), daemon=True).start()
    from twostep.cli import main as twostep_main

    return twostep_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
