"""Engine creation and transactions, the same way on SQLite and PostgreSQL."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.pool import QueuePool

from twostep.core.errors import Unavailable
from twostep.core.guards import in_transaction

# The execution option that marks a read-only transaction (Database.read).
READ_ONLY = "twostep_read_only"


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine: SQLite in WAL mode with foreign keys and BEGIN IMMEDIATE; PostgreSQL via psycopg 3.

    Bound parameters (password hashes, e-mail addresses, sealed secrets) never appear in an exception's
    text, and so never in a log (H09).
    """
    if url.startswith("sqlite"):
        _create_private(make_url(url).database)
        engine = create_engine(
            url,
            poolclass=QueuePool,
            pool_size=min(pool_size, 5),
            max_overflow=10,
            connect_args={"check_same_thread": False, "timeout": 30},
            hide_parameters=True,
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=20, pool_pre_ping=True, hide_parameters=True)


def _create_private(database: str | None) -> None:
    """Create the SQLite file with mode 0600 before SQLite does (H12): SQLite gives its -wal and -shm files
    the database file's mode, whatever the directory's mode or the process's umask."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError:
        return  # a missing directory: SQLite reports it when it connects
    os.close(fd)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide where transactions start.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA cache_size=-1024")  # 1 MiB a connection: the working set is small
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            # A read (Database.read) is one SELECT, atomic on its own in SQLite: no BEGIN, no COMMIT, and in
            # WAL mode it neither waits for the writer nor blocks it.
            return
        # Take the write lock at the start: no deadlocked read-to-write upgrades between workers.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


# SQLSTATE classes of PostgreSQL that mean the server went away or refuses connections: 08 connection
# exception, 57P0x operator intervention (admin shutdown, crash shutdown, cannot connect now), 53 out of
# resources (disk full, too many connections).
_UNAVAILABLE_SQLSTATES = ("08", "57P", "53")


def is_unavailable(exc: DBAPIError) -> bool:
    """A driver error that says the database cannot serve now, rather than that this statement is wrong:
    a connection refused or lost, an administrator shutdown, a full disk. SQLite's operational errors
    (locked, disk full or read-only, cannot open) all are; so is a statement cancelled by the timeout of a
    probe. A serialization failure or a constraint is not."""
    if exc.connection_invalidated or isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate is None:
        return True  # SQLite, or psycopg before a connection exists (refused, timed out)
    return str(sqlstate).startswith(_UNAVAILABLE_SQLSTATES)


class _WriterLock:
    """SQLite has one writer. Waiting for it here, on a thread lock and a file lock shared by the worker
    processes, blocks properly instead of in SQLite's busy handler, which sleeps and retries."""

    def __init__(self, path: str) -> None:
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._thread_lock:
            self._depth += 1
            if self._depth == 1:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


class Database:
    """The unit of work: ``with db.transaction() as conn`` is one use case's transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer: _WriterLock | None = None
        if engine.dialect.name == "sqlite":
            database = make_url(str(engine.url)).database
            if database and database != ":memory:":
                self._writer = _WriterLock(database + ".lock")

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction.

        Raises:
            Unavailable: the database cannot be reached (a driver error about the connection, not the
                request): the caller answers 503 and the pool reconnects on a later request.
        """
        try:
            if self._writer is None:
                with self.engine.begin() as conn, in_transaction():
                    yield conn
                return
            with self._writer.held(), self.engine.begin() as conn, in_transaction():
                yield conn
        except DBAPIError as exc:
            if is_unavailable(exc):
                raise Unavailable() from exc
            raise

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection that only reads (the session lookup of every request): on SQLite it takes neither
        the writer lock nor ``BEGIN IMMEDIATE`` (no explicit transaction at all: run one SELECT in it, atomic
        on its own), so that reads never queue behind a writer; on PostgreSQL an ordinary transaction. The
        session lookup, readiness and the metrics' outbox backlog use it (on SQLite their SELECTs are not one
        snapshot: none needs one). Never write in it. Raises Unavailable as ``transaction`` does."""
        try:
            with self.engine.connect() as conn:
                conn.execution_options(**{READ_ONLY: True})
                with conn.begin():
                    yield conn
        except DBAPIError as exc:
            if is_unavailable(exc):
                raise Unavailable() from exc
            raise

    def dispose(self) -> None:
        self.engine.dispose()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
