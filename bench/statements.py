"""The statements twostep runs for one TOTP sign-in step, captured in process, and their normalised form.

`python -m bench.statements [--pg-url URL]` prints them. bench.run compares them with the statements the
floor (bench/floor_app.py) executed per request.

twostep's side: its own application, built by ``twostep.app.create_app(Settings(...))`` with the settings
`make bench` serves with (production settings, the per-address limit on), answers a real sign-in through
httpx's ASGI transport. On SQLite SQLAlchemy's ``before_cursor_execute`` event of its engine records every
statement sent to the driver, its ``begin`` and ``commit`` events the transaction's bounds; on PostgreSQL a
spy on psycopg's ``Cursor.execute`` records what the driver is given, in its order, with the ``BEGIN`` psycopg
sends before the transaction's first statement (the per-address counter commits on its own ahead of it, on
the same connection), and the ``COMMIT`` of SQLAlchemy's event. Nothing of
twostep is changed. No round trip falls outside that list: the pool's pre-ping, an empty query per check-out,
was replaced by ``storage.db.is_alive`` (issue 16).

The floor's side: SQLite's own trace callback (``sqlite3.Connection.set_trace_callback``), which sees the
statements as SQLite runs them, with the bound values written in; on PostgreSQL the text the floor sends to
psycopg. ``normalise`` makes both comparable: bound values and placeholders become ``?``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# A SQL string literal, a blob literal, a number, NULL, or a placeholder (qmark, named, pyformat, numeric).
_VALUE = re.compile(
    r"""[xX]'[0-9a-fA-F]*'|'(?:[^']|'')*'|%\(\w+\)s|\$\d+|(?<!:):(?!:)\w+|\?|\bNULL\b|(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])"""
)
_SPACE = re.compile(r"\s+")


def normalise(sql: str) -> str:
    """The statement with every bound value or placeholder as ``?`` and white space collapsed."""
    return _SPACE.sub(" ", _VALUE.sub("?", sql)).strip()


@dataclass
class Capture:
    """One TOTP sign-in step of twostep: its statements (transaction bounds included) and its answer."""

    dialect: str
    statements: list[str]
    parameters: list[Any]
    status: int
    body: str
    set_cookie: str  # the token replaced by <token>
    header_names: list[str]
    requests: int = 0
    lists_equal: bool = True
    every_statement: list[list[str]] = field(default_factory=list)
    every_parameters: list[list[Any]] = field(default_factory=list)

    @property
    def normalised(self) -> list[str]:
        return [normalise(s) for s in self.statements]

    def to_json(self) -> dict[str, Any]:
        return {
            "dialect": self.dialect,
            "statements": self.statements,
            "normalised": self.normalised,
            "parameters": [repr(p) for p in self.parameters],
            "status": self.status,
            "body": self.body,
            "set_cookie": self.set_cookie,
            "header_names": self.header_names,
            "requests_captured": self.requests,
            "every_request_same_list": self.lists_equal,
        }


# Headers the HTTP server adds, not the application: left out of the comparison of answers.
TRANSPORT = frozenset({"content-length", "date", "connection", "server", "transfer-encoding"})


def cookie_shape(set_cookie: str, token: str) -> str:
    return set_cookie.replace(token, "<token>") if token else set_cookie


USER_AGENT = "twostep-bench"


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now


def _run_in_own_loop(fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run(fn())`` in a thread of its own: the caller's thread may have a loop running already
    (pytest with Playwright's sync API, for one)."""
    out: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            out.append(asyncio.run(fn()))
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="bench-capture")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return out[0]


def capture_twostep(
    data_dir: Path,
    *,
    database_url: str | None = None,
    requests: int = 3,
    lines: list[tuple[str | None, str]] | None = None,
    clock: Any = None,
) -> Capture:
    """Build twostep's app for ``data_dir`` (and ``database_url``; default its own SQLite file), seed
    ``requests`` accounts with an authenticator app and a pending sign-in (or take ``lines``, seeded
    already), and sign each one in, with ``clock`` if given.

    The statements of the last request are returned; every request must have run the same list."""
    import httpx
    from sqlalchemy import event

    from bench import seed
    from twostep.app import create_app
    from twostep.config import Settings

    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        origin="http://localhost:8000",
        log_level="warning",
        rate_limit_per_minute=10**9,  # as bench.servers.twostep_server
    )
    app = create_app(settings, clock=clock)
    engine = app.state.web.ctx.db.engine
    dialect = engine.dialect.name
    per_request: list[list[str]] = []
    params: list[list[Any]] = []

    def on_execute(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        per_request[-1].append(statement)
        params[-1].append(parameters)

    def on_begin(conn: Any) -> None:
        # SQLite's BEGIN IMMEDIATE is a statement of its own (storage/db.py)
        if dialect != "sqlite":
            per_request[-1].append("BEGIN")
            params[-1].append(None)

    def on_commit(conn: Any) -> None:
        per_request[-1].append("COMMIT")
        params[-1].append(None)

    def on_rollback(conn: Any) -> None:
        per_request[-1].append("ROLLBACK")
        params[-1].append(None)

    # On PostgreSQL what the driver is given, in the order it is given: a spy on psycopg's cursor (nothing
    # is changed). The per-address counter commits on its own before the transaction begins, on the same
    # connection (storage.db.ahead_of_transaction), so SQLAlchemy's begin event, which comes before it, does
    # not tell where the BEGIN goes: psycopg sends it before a statement when it is not in autocommit and no
    # transaction is open; the COMMIT comes from SQLAlchemy's commit event.
    import psycopg
    from psycopg.pq import TransactionStatus

    raw_execute = psycopg.Cursor.execute

    def driver_execute(cur: Any, query: Any, values: Any = None, **kw: Any) -> Any:
        if capturing:
            conn = cur.connection
            if not conn.autocommit and conn.pgconn.transaction_status == TransactionStatus.IDLE:
                per_request[-1].append("BEGIN")
                params[-1].append(None)
            per_request[-1].append(query if isinstance(query, str) else str(query))
            params[-1].append(values)
        return raw_execute(cur, query, values, **kw)

    capturing = False
    seed_engine = seed.engine_for(settings.resolved_database_url)
    try:
        box = seed.server_box(data_dir)
        if lines is None:
            lines = seed.totp_lines(seed_engine, box, requests, prefix="captureu", password_hash="x")
        if dialect == "sqlite":
            event.listen(engine, "before_cursor_execute", on_execute)
            event.listen(engine, "begin", on_begin)
            event.listen(engine, "commit", on_commit)
            event.listen(engine, "rollback", on_rollback)
        else:
            psycopg.Cursor.execute = driver_execute  # type: ignore[method-assign, assignment]
            event.listen(engine, "commit", on_commit)
            event.listen(engine, "rollback", on_rollback)
            capturing = True

        async def sign_in() -> list[httpx.Response]:
            out: list[httpx.Response] = []
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8000") as client:
                for token, body in lines:
                    per_request.append([])
                    params.append([])
                    # The request as bench/wrk/replay.lua sends it.
                    out.append(
                        await client.post(
                            "/api/v1/login/totp",
                            content=body.encode(),
                            headers={
                                "Content-Type": "application/json",
                                "Cookie": f"twostep_session={token}",
                                "User-Agent": USER_AGENT,
                            },
                        )
                    )
            return out

        responses = _run_in_own_loop(sign_in)
    finally:
        capturing = False
        psycopg.Cursor.execute = raw_execute  # type: ignore[method-assign]
        app.state.web.ctx.db.dispose()
        seed_engine.dispose()
    last = responses[-1]
    token = last.cookies.get("twostep_session") or ""
    for r in responses:
        if r.status_code != 200 or b'"signed_in"' not in r.content:
            raise RuntimeError(f"twostep's TOTP step did not sign in: {r.status_code} {r.text[:200]}")
    shapes = {tuple(normalise(s) for s in lst) for lst in per_request}
    return Capture(
        dialect=dialect,
        statements=per_request[-1],
        parameters=params[-1],
        status=last.status_code,
        body=last.text,
        set_cookie=cookie_shape(last.headers.get("set-cookie", ""), token),
        header_names=sorted({k.lower() for k in last.headers if k.lower() not in TRANSPORT}),
        requests=len(per_request),
        lists_equal=len(shapes) == 1,
        every_statement=per_request,
        every_parameters=params,
    )


def first_difference(floor: str, twostep: str, context: int = 50) -> str:
    """Where two statements part: a little of each around the first character that differs."""
    n = next((i for i, (a, b) in enumerate(zip(floor, twostep, strict=False)) if a != b), None)
    if n is None:
        n = min(len(floor), len(twostep))
    lo = max(0, n - context)
    return f"floor ...{floor[lo : n + context]!r}..., twostep ...{twostep[lo : n + context]!r}..."


def compare(expected: list[str], lists: list[list[Any]]) -> tuple[bool, str]:
    """``lists``: [[normalised statements, how many requests ran them], ...] from the floor. True when
    every request ran exactly ``expected`` (normalised); else the first difference, in words."""
    if not lists:
        return False, "the floor traced no request"
    for stmts, count in lists:
        if stmts == expected:
            continue
        if len(stmts) != len(expected):
            return False, (
                f"statement lists differ: {count} request(s) ran {len(stmts)} statements, twostep "
                f"{len(expected)}"
            )
        for i, (a, b) in enumerate(zip(stmts, expected, strict=True)):
            if a != b:
                return False, f"statement lists differ at #{i + 1}: {first_difference(a, b)}"
    return True, f"same {len(expected)} statements"


def sqlite_literal(value: Any) -> str:
    """A bound value as SQLite's expanded SQL (the trace callback) writes it."""
    if value is None:
        return "NULL"
    if isinstance(value, bool | int):
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes | memoryview):
        return "x'" + bytes(value).hex() + "'"
    return "'" + str(value).replace("'", "''") + "'"


def expand(sql: str, params: Any) -> str:
    """A qmark statement with its values written in, as SQLite's trace callback shows it."""
    if not params:
        return sql
    values = iter(params)
    return re.sub(r"\?", lambda _m: sqlite_literal(next(values)), sql)


_NEW_SESSION = re.compile(r"^(INSERT INTO sessions \(.*?\) VALUES \()'[0-9a-f]{64}'")


def _mask_new_token(sql: str) -> str:
    """The hash of the new session's random token: the one value the two sides cannot share."""
    return _NEW_SESSION.sub(r"\1'<new session token hash>'", sql)


def check_floor_sqlite(work_dir: Path, *, requests: int = 3) -> dict[str, Any]:
    """Both sides sign in the same accounts, at the same fixed time, on two copies of one seeded SQLite
    database: twostep through its app (statements from SQLAlchemy's events, values written in as SQLite
    would), the floor through bench.floor_app's own step (SQLite's trace callback). Every statement must
    be the same, values included, but the hash of the new session's random token."""
    import shutil
    import sqlite3

    from bench import floor_app, seed
    from twostep.app import prepare_database
    from twostep.config import Settings

    ours, theirs = work_dir / "twostep", work_dir / "floor"
    shutil.rmtree(work_dir, ignore_errors=True)
    prepare_database(Settings(data_dir=ours)).dispose()
    box = seed.server_box(ours)
    engine = seed.engine_for(f"sqlite:///{ours / 'twostep.sqlite3'}")
    try:
        lines = seed.totp_lines(engine, box, requests, prefix="checku", password_hash="x")
    finally:
        engine.dispose()
    theirs.mkdir(parents=True)
    shutil.copy2(ours / "secret.key", theirs / "secret.key")
    with sqlite3.connect(ours / "twostep.sqlite3") as src, sqlite3.connect(theirs / "twostep.sqlite3") as dst:
        src.backup(dst)
    src.close()
    dst.close()
    now = datetime.now(UTC)
    cap = capture_twostep(ours, lines=lines, clock=FixedClock(now))

    floor_app.load_key(theirs)
    conn = floor_app.sqlite_connect(theirs / "twostep.sqlite3")
    floor_lists: list[list[str]] = []
    try:
        for token, body in lines:
            assert token is not None
            trace: list[str] = []
            code = json.loads(body)["code"]
            step = floor_app.sqlite_step(floor_app.hash_token(token), code, "127.0.0.1", USER_AGENT, now)
            outcome = floor_app.run_sqlite(conn, step, trace)
            if outcome.token is None:
                return {"ok": False, "message": f"the floor did not sign in: {outcome}", "capture": cap}
            floor_lists.append(trace)
    finally:
        conn.close()
    for i, (stmts, prms, floor) in enumerate(
        zip(cap.every_statement, cap.every_parameters, floor_lists, strict=True), 1
    ):
        mine = [_mask_new_token(expand(s, p)) for s, p in zip(stmts, prms, strict=True)]
        other = [_mask_new_token(f) for f in floor]
        if mine != other:
            if len(mine) != len(other):
                why = f"{len(other)} statements, twostep {len(mine)}"
            else:
                j = next(k for k in range(len(mine)) if mine[k] != other[k])
                why = f"#{j + 1}: {first_difference(other[j], mine[j])}"
            return {"ok": False, "message": f"statement lists differ (request {i}): {why}", "capture": cap}
    return {
        "ok": True,
        "message": f"{requests} sign-ins on copies of one database: the same {len(cap.statements)} "
        "statements with the same values",
        "capture": cap,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.statements", description=__doc__)
    p.add_argument("--pg-url", help="a migrated PostgreSQL database (default: a new SQLite file)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cap = capture_twostep(Path(tmp), database_url=a.pg_url)
    if a.json:
        print(json.dumps(cap.to_json(), indent=2))
        return 0
    print(
        f"{cap.dialect}: {len(cap.statements)} statements per TOTP step ({cap.requests} requests captured, "
        f"all the same: {cap.lists_equal})"
    )
    for i, (s, prm) in enumerate(zip(cap.statements, cap.parameters, strict=True), 1):
        print(f"{i:2}. {s}\n    {prm!r}")
    print(f"answer: {cap.status} {cap.body}; set-cookie: {cap.set_cookie}")
    print(f"headers: {', '.join(cap.header_names)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
