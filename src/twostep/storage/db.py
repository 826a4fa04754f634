"""Engine creation and transactions, the same way on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import fcntl
import os
import select
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Dialect, Engine, Insert, Select, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.pool import QueuePool

from twostep.core.errors import Unavailable
from twostep.core.guards import in_transaction

if TYPE_CHECKING:
    import psycopg

# The execution option that marks a read-only transaction (Database.read).
READ_ONLY = "twostep_read_only"
# The execution option of a connection whose transactions are begun and ended on the driver
# (Database.transaction in an event loop's thread, on SQLite).
DRIVER_TRANSACTIONS = "twostep_driver_transactions"


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
    engine = create_engine(url, pool_size=pool_size, max_overflow=20, hide_parameters=True)
    _configure_postgresql(engine)
    return engine


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


def _set_up_sqlite(dbapi_conn: sqlite3.Connection) -> None:
    # Let SQLAlchemy, not the driver, decide where transactions start.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA cache_size=-1024")  # 1 MiB a connection: the working set is small
    cur.close()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        _set_up_sqlite(dbapi_conn)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get(READ_ONLY) or options.get(DRIVER_TRANSACTIONS):
            # A read (Database.read) is one SELECT, atomic on its own in SQLite: no BEGIN, no COMMIT, and in
            # WAL mode it neither waits for the writer nor blocks it. A loop's connection began its
            # transaction already (Database._loop_transaction).
            return
        # Take the write lock at the start: no deadlocked read-to-write upgrades between workers. On the
        # driver (``send``): through SQLAlchemy's execution it cost more than the statement.
        send(conn, "BEGIN IMMEDIATE", ())


def _configure_postgresql(engine: Engine) -> None:
    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        if not is_alive(dbapi_conn):
            raise DisconnectionError("the server closed the connection")  # the pool takes another


def is_alive(dbapi_conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle pooled PostgreSQL connection can still be used, without a round trip (issue 16): the
    pool used to send an empty query (its pre-ping) at every check-out, two round trips of the TOTP step's
    thirteen. When PostgreSQL ends a connection (a restart, ``pg_terminate_backend``, a crash) its socket
    becomes readable: the backend's last message and the end of the stream. An idle connection has nothing
    else to read (twostep does not LISTEN; the server reports a changed setting that way only after a
    reload, and a new connection costs no more than that), so a connection whose socket is readable is not
    used again. A connection lost without the server closing it (a network cut) is found by its first
    statement, as the pre-ping would have been: that request gets 503 (``Database.transaction``), and the
    pool replaces the connection."""
    from psycopg.pq import ConnStatus, TransactionStatus

    if dbapi_conn.closed:
        return False
    pgconn = dbapi_conn.pgconn
    if pgconn.status != ConnStatus.OK or pgconn.transaction_status != TransactionStatus.IDLE:
        return False
    poll = select.poll()  # not select.select: a busy server's sockets may be numbered past 1023
    try:
        poll.register(pgconn.socket, select.POLLIN)
        return not poll.poll(0)  # anything (data, the end, an error) on an idle connection: not used again
    except (OSError, ValueError):  # a socket closed under it
        return False


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


@dataclass(frozen=True, slots=True)
class Prepared:
    """A statement compiled once for one dialect, to be run on the driver itself (``run``, ``first``,
    ``Database.read_row``): its SQL text, the order of its parameters (SQLite's ``?``; for PostgreSQL the
    names of its ``%(name)s`` ones), the conversion of each parameter and of each column it returns (the
    columns' own types: UTC datetimes, booleans), and the values it carries itself."""

    sql: str
    order: tuple[str, ...]
    keys: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    # The values the statement carries itself (``kind == SessionKind.ACTIVE``), as the driver takes them.
    constants: dict[str, Any]
    # The conversion of each parameter that has one (a datetime to SQLite's text, ...), by name.
    binds: tuple[tuple[str, Callable[[Any], Any]], ...] = ()
    positional: bool = True
    # The statement itself: kept so that the id it is cached by is never reused while it is cached.
    source: Any = None
    # ``processors`` by column, only those that convert.
    column_positions: tuple[tuple[int, Callable[[Any], Any]], ...] = ()

    @classmethod
    def of(cls, statement: Any, engine: Engine | Dialect, column_keys: list[str] | None = None) -> Prepared:
        dialect = engine if isinstance(engine, Dialect) else engine.dialect
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        columns = list(statement.exported_columns)
        binds = []
        for name, bind in compiled.binds.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                binds.append((name, process))
        positional = bool(compiled.positional)
        order = tuple(compiled.positiontup or ()) if positional else tuple(compiled.params)
        processors = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
        return cls(
            sql=compiled.string,
            order=order,
            keys=tuple(statement.exported_columns.keys()),
            processors=processors,
            constants={
                name: value.value if isinstance(value, Enum) else value
                for name, value in compiled.params.items()
                if value is not None
            },
            binds=tuple(binds),
            positional=positional,
            source=statement,
            column_positions=tuple(
                (i, process) for i, process in enumerate(processors) if process is not None
            ),
        )

    def parameters(self, params: dict[str, Any]) -> Any:
        """What the driver is given: the statement's own values and ``params``, each converted by its type
        as SQLAlchemy would, in SQLite's order or by name."""
        converted = {**self.constants, **params}
        for name, process in self.binds:  # once a name, however often the statement uses it
            converted[name] = process(converted[name])
        if self.positional:
            return tuple([converted[name] for name in self.order])
        return {name: converted[name] for name in self.order}

    def row(self, values: Sequence[Any] | None) -> dict[str, Any] | None:
        if values is None:
            return None
        return {
            key: (value if process is None else process(value))
            for key, process, value in zip(self.keys, self.processors, values, strict=True)
        }

    def values(self, values: Sequence[Any]) -> tuple[Any, ...]:
        """One row's values, converted by the columns' types, in the statement's order."""
        if not self.column_positions:
            return tuple(values)
        converted = list(values)
        for i, process in self.column_positions:
            converted[i] = process(converted[i])
        return tuple(converted)


# The statements run on the driver (``run``, ``Database.read_row``), compiled once per statement, dialect and
# set of parameter names.
_COMPILED: dict[tuple[int, str, tuple[str, ...]], Prepared] = {}


def compiled(statement: Any, dialect: Dialect, names: tuple[str, ...] = ()) -> Prepared:
    """``statement`` compiled for ``dialect``, once (the statements are module constants). An INSERT without
    values takes its columns from ``names``, the names of its parameters, as ``Connection.execute`` would."""
    key = (id(statement), dialect.name, names)
    found = _COMPILED.get(key)
    if found is None:
        column_keys = list(names) if isinstance(statement, Insert) else None
        found = _COMPILED[key] = Prepared.of(statement, dialect, column_keys=column_keys)
    return found


def prepared_for(conn: Connection, statement: Any, params: dict[str, Any]) -> Prepared:
    """``statement`` compiled for ``conn``'s database, once, for ``params``' names (``compiled``)."""
    return compiled(statement, conn.dialect, tuple(params))


def run(conn: Connection, statement: Any, params: dict[str, Any]) -> Any:
    """One statement of the hot path (issue 16), compiled once, run on ``conn``'s driver connection inside
    its transaction, without SQLAlchemy's execution machinery (per statement it cost more than the statement
    itself: bench/README.md). SQLAlchemy's ``before_cursor_execute`` event still sees it (the benchmark's
    and the tests' statement capture), and a driver error is raised as SQLAlchemy's (``IntegrityError``,
    ``OperationalError``: ``Database.transaction`` makes an unavailable database 503). Returns the driver's
    cursor: ``first`` and ``all_rows`` convert its rows."""
    prepared = prepared_for(conn, statement, params)
    return send(conn, prepared.sql, prepared.parameters(params))


def _run(conn: Connection, statement: Any, params: dict[str, Any]) -> tuple[Prepared, Any]:
    prepared = prepared_for(conn, statement, params)
    return prepared, send(conn, prepared.sql, prepared.parameters(params))


def send(conn: Connection, sql: str, values: Any) -> Any:
    """``sql`` with the driver's ``values``, on ``conn``'s driver connection (``run``)."""
    raw = conn.connection.driver_connection
    # Only when someone listens (the tests' and the benchmark's statement capture, on the engine).
    if conn.engine.dispatch.before_cursor_execute:
        for listener in conn.dispatch.before_cursor_execute:
            listener(conn, None, sql, values, None, False)
    try:
        return raw.execute(sql, values)  # type: ignore[union-attr]  # sqlite3 or psycopg: both have execute
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _driver_error(conn, raw, exc, sql, values) from exc


@contextmanager
def ahead_of_transaction(conn: Connection) -> Iterator[None]:
    """On PostgreSQL, the statements of the block commit on their own, ahead of the transaction of
    ``Database.transaction`` that ``conn`` is in, which has not begun on the server yet: for a row that every
    request from one address updates, which must not stay locked for a whole ceremony (the per-address
    request counter, ``regulator.reserve``), on the ceremony's own connection (one pool check-out). The
    block must come first in the transaction. On SQLite (its writes are serialised anyway) they are the
    transaction's."""
    if conn.dialect.name != "postgresql":
        yield
        return
    from psycopg.pq import TransactionStatus

    raw = conn.connection.driver_connection
    if raw.pgconn.transaction_status != TransactionStatus.IDLE:  # type: ignore[union-attr]
        raise RuntimeError("ahead_of_transaction: the transaction has begun")
    raw.autocommit = True  # type: ignore[union-attr]  # psycopg's: no round trip while idle
    try:
        yield
    finally:
        try:
            raw.autocommit = False  # type: ignore[union-attr]  # the next statement begins the transaction
        except Exception:  # a connection lost in the block: the block's own error is raised
            conn.invalidate()


def _driver_error(conn: Connection, raw: Any, exc: Any, sql: str, values: Any) -> Exception:
    """The driver's ``exc`` as SQLAlchemy raises it (``IntegrityError``, ``OperationalError``), the
    connection invalidated if it is lost."""
    invalidated = conn.dialect.is_disconnect(exc, raw, None)
    if invalidated:
        conn.invalidate(exc)
    error: Exception = DBAPIError.instance(
        sql,
        values,
        exc,
        conn.dialect.loaded_dbapi.Error,
        hide_parameters=True,
        connection_invalidated=invalidated,
        dialect=conn.dialect,
    )
    return error


def first(conn: Connection, statement: Any, params: dict[str, Any]) -> tuple[Any, ...] | None:
    """The first row of ``statement`` (``run``), its values converted by the columns' types; None if none."""
    prepared, cursor = _run(conn, statement, params)
    values = cursor.fetchone()
    return None if values is None else prepared.values(values)


def first_mapping(conn: Connection, statement: Any, params: dict[str, Any]) -> dict[str, Any] | None:
    """``first``, by column name."""
    prepared, cursor = _run(conn, statement, params)
    return prepared.row(cursor.fetchone())


def all_rows(conn: Connection, statement: Any, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Every row of ``statement`` (``run``), converted."""
    prepared, cursor = _run(conn, statement, params)
    return [prepared.values(values) for values in cursor.fetchall()]


def _in_event_loop() -> bool:
    """Whether this thread runs an event loop (the code is then a coroutine's, run in the loop)."""
    return asyncio._get_running_loop() is not None  # get_running_loop() raises where there is none


class _AsyncReaders:
    """PostgreSQL connections of psycopg's asyncio interface, in autocommit (one SELECT, one round trip), for
    the reads that run in the event loop (``Database.read_row_async``): at most ``size`` at once, opened
    when first needed, closed when they fail (all of them when the server went away)."""

    def __init__(self, conninfo: str, size: int) -> None:
        self.conninfo = conninfo
        self.size = size
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def fetch(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row of ``sql``. Raises: psycopg.OperationalError (the caller makes it Unavailable)."""
        import psycopg  # here, not at the top: a worker on SQLite does not load it (about 10 MiB)

        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:  # the first read, or a new loop (tests)
            self.close()
            self._slots, self._loop = asyncio.Semaphore(self.size), loop
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True, connect_timeout=10
                )
            try:
                cursor = await conn.execute(sql, params)
                row = await cursor.fetchone()
            except BaseException as exc:
                await conn.close()
                if isinstance(exc, psycopg.OperationalError):
                    self.close()  # the server went away: the idle ones are gone too
                raise
            self._idle.append(conn)
            return row

    def close(self) -> None:
        """Close the idle connections (a connection in use is closed by its reader when it fails)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.pgconn.finish()  # the socket, at once: dispose() is not a coroutine


class Database:
    """The unit of work: ``with db.transaction() as conn`` is one use case's transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer: _WriterLock | None = None
        self._loop_conns: dict[int, sqlite3.Connection] = {}  # read_row's on SQLite, by event loop thread
        self._loop_writers: dict[int, Connection] = {}  # transaction's on SQLite, by event loop thread
        self._async: _AsyncReaders | None = None
        if engine.dialect.name == "sqlite":
            database = make_url(str(engine.url)).database
            if database and database != ":memory:":
                self._writer = _WriterLock(database + ".lock")
        else:
            url = engine.url.set(drivername="postgresql")
            self._async = _AsyncReaders(url.render_as_string(hide_password=False), size=10)

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
            if _in_event_loop():
                with self._writer.held(), self._loop_transaction() as conn, in_transaction():
                    yield conn
                return
            with self._writer.held(), self.engine.begin() as conn, in_transaction():
                yield conn
        except DBAPIError as exc:
            if is_unavailable(exc):
                raise Unavailable() from exc
            raise

    @contextmanager
    def _loop_transaction(self) -> Iterator[Connection]:
        """A transaction on SQLite in an event loop's thread (the services the sign-in steps run in the loop,
        bench/README.md): on a connection the thread keeps, begun and ended on the driver, without the pool's
        check-out and return and SQLAlchemy's transaction objects, which cost more than the statements of a
        step. The caller holds the writer lock; the statements of the block may go through SQLAlchemy
        (``conn.execute``) or the driver (``run``). The same statements are sent as by ``engine.begin``:
        ``BEGIN IMMEDIATE``, then ``COMMIT`` or ``ROLLBACK``."""
        thread = threading.get_ident()
        conn = self._loop_writers.get(thread)
        if conn is None or conn.closed or conn.invalidated:
            conn = self.engine.connect().execution_options(**{DRIVER_TRANSACTIONS: True})
            self._loop_writers[thread] = conn
        try:
            send(conn, "BEGIN IMMEDIATE", ())
            yield conn
            if conn.in_transaction():
                conn.commit()  # SQLAlchemy's, begun by a statement of the block: it ends the driver's too
            else:
                send(conn, "COMMIT", ())
        except BaseException:
            self._end_loop_transaction(thread, conn)
            raise

    def _end_loop_transaction(self, thread: int, conn: Connection) -> None:
        """After a failure in ``_loop_transaction`` (of the block, or of its COMMIT): roll back whatever is
        still open, so that the thread's next transaction can begin; a connection that cannot is dropped."""
        try:
            conn.rollback()  # SQLAlchemy's (a no-op unless a block's statement began one): the driver's too
            if getattr(conn.connection.driver_connection, "in_transaction", False):
                send(conn, "ROLLBACK", ())  # sqlite3's own flag: a transaction is still open on the driver
        except Exception:
            self._loop_writers.pop(thread, None)
            conn.invalidate()
            conn.close()

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

    def prepared(self, statement: Select[Any]) -> Prepared:
        """``statement`` compiled for this database, once (``compiled``)."""
        return compiled(statement, self.engine.dialect)

    def read_row(self, statement: Select[Any], params: dict[str, Any]) -> dict[str, Any] | None:
        """The first row of one SELECT that only reads, by column name, None when there is none: the read of
        every request (the session lookup). Compiled once and sent as it is (``exec_driver_sql``), in
        ``read``: no write lock, and on SQLite no transaction. ``read_row_async`` is the same read for the
        event loop, without SQLAlchemy at all. Raises Unavailable as ``transaction`` does."""
        prepared = self.prepared(statement)
        with self.read() as conn:
            values = conn.exec_driver_sql(prepared.sql, prepared.parameters(params)).fetchone()
        return prepared.row(None if values is None else tuple(values))

    async def read_row_async(self, statement: Select[Any], params: dict[str, Any]) -> dict[str, Any] | None:
        """``read_row`` for the event loop (forward authentication), on the driver itself with none of
        SQLAlchemy's execution machinery (bench/README.md, F1): on SQLite on a connection of its own kept by
        the loop's thread, outside any transaction (one SELECT is atomic on its own, and in WAL mode it never
        waits for the writer); on PostgreSQL on a connection of psycopg's asyncio interface, in autocommit
        (no thread hand-off, one round trip). Raises Unavailable as ``transaction`` does."""
        prepared = self.prepared(statement)
        if self._async is None:
            raw = self._loop_sqlite()
            if raw is None:
                return self.read_row(statement, params)
            try:
                return prepared.row(raw.execute(prepared.sql, prepared.parameters(params)).fetchone())
            except sqlite3.OperationalError as exc:
                raise Unavailable() from exc
        import psycopg  # on PostgreSQL only (see _AsyncReaders.fetch)

        try:
            values = await self._async.fetch(prepared.sql, prepared.parameters(params))
        except psycopg.OperationalError as exc:
            raise Unavailable() from exc
        return prepared.row(values)

    def _loop_sqlite(self) -> sqlite3.Connection | None:
        """The SQLite connection of ``read_row_async`` in this event loop's thread, opened when first needed
        with the pool's pragmas; None on PostgreSQL and for a database in memory."""
        if self._writer is None:
            return None
        thread = threading.get_ident()
        conn = self._loop_conns.get(thread)
        if conn is not None:
            return conn
        if conn is None:
            try:
                conn = sqlite3.connect(
                    make_url(str(self.engine.url)).database or "", timeout=30, check_same_thread=False
                )
                _set_up_sqlite(conn)
            except sqlite3.Error as exc:
                raise Unavailable() from exc
            self._loop_conns[thread] = conn
        return conn

    def dispose(self) -> None:
        writers, self._loop_writers = self._loop_writers, {}
        for writer in writers.values():
            writer.close()
        conns, self._loop_conns = self._loop_conns, {}
        for conn in conns.values():
            conn.close()
        if self._async is not None:
            self._async.close()
        self.engine.dispose()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
