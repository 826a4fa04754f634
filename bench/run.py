"""`python -m bench.run [--quick]`: the figures P1..P6 of issue 8, side by side, medians of several rounds,
and P7 of issue 11 (bench/hash_memory.py).

Every load is run by wrk from a separate process on loopback, bounded in time (-d) and connections (-c).
Each round runs every measurement once, in a fixed order, so that each figure and its reference are
measured close together; the figures are medians over the rounds. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
import traceback
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, func, select, text

from bench import argon2_ref, forward_auth, hash_memory, loadgen, machine, report, seed, statements
from bench.loadgen import LoadResult
from bench.servers import ROOT, RssSampler, Server, floor_server, reference_server, twostep_server
from twostep.core.passwords import PasswordHasher
from twostep.core.totp import time_step
from twostep.storage.tables import challenges, security_events, sessions

PASSWORD = "bench correct horse battery staple 42"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
P4_SMALL = 1_000
P4_LARGE = 1_000_000


@dataclass
class Config:
    quick: bool
    rounds: int
    duration: float
    warmup: float
    connections: int
    p2_connections: int
    wrk_threads: int
    out_dir: Path
    work_dir: Path
    pg_url: str | None
    p4_large: int
    floor: bool = True  # the floor of issue 16 beside P1 (and P1 on PostgreSQL)
    floor_only: bool = False  # only P1 and the floor
    only: tuple[str, ...] = ()  # with floor_only: only the loads with these keys (experiments)

    def to_json(self) -> dict[str, Any]:
        return {
            "quick": self.quick,
            "rounds": self.rounds,
            "duration_s": self.duration,
            "warmup_s": self.warmup,
            "connections": self.connections,
            "p2_connections": self.p2_connections,
            "wrk_threads": self.wrk_threads,
            "postgresql": bool(self.pg_url),
            "p4_accounts": [P4_SMALL, self.p4_large] if self.pg_url and not self.floor_only else None,
            "floor": self.floor,
            "floor_only": self.floor_only,
        }


# Issue 16: P1·pg and P5·pg are measured from one address and from this many (forwarded by a trusted proxy).
ADDRESSES = 100

# An experiment (not part of `make bench`): BENCH_AB_SRC=<another checkout>/src adds P1·pg served from that
# code, measured in the same rounds as P1·pg (key p1_pg_1w_ab), to compare two versions on a noisy machine.
AB_SRC = os.environ.get("BENCH_AB_SRC", "")


def log(msg: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class Measurement:
    """One load against one server: ``make_lines(n)`` writes the requests of a round (about n of them)."""

    key: str
    title: str
    server: Server
    path: str
    expect: str
    make_lines: Callable[[int], list[tuple[str | None, str]]]
    guess_rps: float
    connections: int
    engine: Engine | None = None
    watch_rss: bool = False
    fixed_size: bool = False  # make_lines decides how many (P4's fixed set of accounts)
    group: str = "sqlite"  # measured before P2 in a round ("sqlite") or after it ("pg")
    count_signins: bool = False  # check that every ok answer made a session and a signed_in event
    addresses: int = 0  # > 0: the load comes from that many addresses, forwarded by a trusted proxy
    floor_capture: statements.Capture | None = None  # a floor: twostep's statements to compare with
    setup_failures: list[str] = field(default_factory=list)
    results: list[LoadResult] = field(default_factory=list)
    warmup: LoadResult | None = None
    rss_kib: list[int] = field(default_factory=list)

    def estimate(self) -> float:
        seen = [r.ok_rps for r in self.results if r.ok_rps > 0]
        if self.warmup and self.warmup.ok_rps > 0:
            seen.append(self.warmup.ok_rps)
        return max(seen) if seen else self.guess_rps


class Bench:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.servers: list[Server] = []
        self.engines: list[Engine] = []
        self.measurements: list[Measurement] = []
        self.p2: Measurement | None = None
        self.floor_checks: dict[str, Any] = {}
        self.argon2_rounds: list[dict[str, Any]] = []
        self.pg_dbs: list[str] = []
        self.pg_version: str | None = None
        self.notes: list[str] = []
        self.sampler = RssSampler()
        self.counter = 0
        self.cores = len(os.sched_getaffinity(0))
        self.password_hash = ""
        self.setup_s: dict[str, float] = {}
        self.hash_memory: dict[str, Any] | None = None
        self.forward_auth: list[dict[str, Any]] = []  # F1, one result per database

    # ---------------------------------------------------------------------------------------------- set-up

    def lines_file(self, key: str) -> Path:
        self.counter += 1
        return self.cfg.work_dir / "lines" / f"{self.counter:03d}-{key}.txt"

    def start_all(self, servers: list[Server]) -> None:
        for s in servers:
            s.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Start them side by side (each takes a second or two to import), then wait for each.
        import threading

        errors: list[BaseException] = []

        def start(s: Server) -> None:
            try:
                s.start()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(s,)) for s in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.servers += servers
        if errors:
            raise errors[0]

    def pg_admin_url(self) -> str:
        assert self.cfg.pg_url
        return self.cfg.pg_url.rsplit("/", 1)[0] + "/postgres"

    def pg_database(self, name: str) -> str:
        assert self.cfg.pg_url
        admin = seed.engine_for(self.pg_admin_url())
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        self.pg_dbs.append(name)
        url = self.cfg.pg_url.rsplit("/", 1)[0] + "/" + name
        # The schema, as an operator would: `twostep migrate` with the same URL.
        import subprocess

        env = {k: v for k, v in os.environ.items() if not k.startswith("TWOSTEP_")}
        env.update(TWOSTEP_DATABASE_URL=url, TWOSTEP_DATA_DIR=str(self.cfg.work_dir / "pg-migrate"))
        subprocess.run(
            [sys.executable, "-m", "twostep", "migrate"], env=env, cwd=ROOT, check=True, capture_output=True
        )
        return url

    def check_pg(self) -> None:
        if not self.cfg.pg_url:
            return
        try:
            admin = seed.engine_for(self.pg_admin_url())
            with admin.connect() as conn:
                self.pg_version = str(conn.execute(text("SHOW server_version")).scalar_one())
            admin.dispose()
        except Exception as exc:
            self.notes.append(
                f"PostgreSQL unreachable at {self.pg_admin_url()}: {exc!s:.200}; P4 not measured"
            )
            log(self.notes[-1])
            self.cfg.pg_url = None

    def drop_pg(self) -> None:
        if not self.pg_dbs or not self.cfg.pg_url:
            return
        admin = seed.engine_for(self.pg_admin_url())
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for name in self.pg_dbs:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    def engine(self, url: str) -> Engine:
        e = seed.engine_for(url)
        self.engines.append(e)
        return e

    # --------------------------------------------------------------------------------------- measurements

    def totp_measurement(
        self, key: str, title: str, server: Server, url: str, *, rss: bool, addresses: int = 0
    ) -> Measurement:
        engine = self.engine(url)
        box = seed.server_box(Path(server.env["TWOSTEP_DATA_DIR"]))
        prefix = key.replace("_", "") + "u"
        return Measurement(
            key,
            title,
            server,
            "/api/v1/login/totp",
            '"signed_in"',
            lambda n: seed.totp_lines(engine, box, n, prefix=prefix, password_hash=self.password_hash),
            guess_rps=300,
            connections=self.cfg.connections,
            engine=engine,
            watch_rss=rss,
            count_signins=True,
            addresses=addresses,
        )

    def build(self) -> None:
        cfg = self.cfg
        full = not cfg.floor_only
        logs = cfg.work_dir / "logs"
        t0 = time.monotonic()
        self.password_hash = PasswordHasher().hash(PASSWORD)  # production argon2 parameters
        self.setup_s["password_hash"] = round(time.monotonic() - t0, 2)

        sq1 = twostep_server("sqlite-1w", data_dir=cfg.work_dir / "sqlite-1w", workers=1, log_dir=logs)
        servers = [sq1]
        if full:
            ref1 = reference_server("ref-1w", workers=1, log_dir=logs)
            ref2 = reference_server("ref-2w", workers=2, log_dir=logs)
            sq2 = twostep_server("sqlite-2w", data_dir=cfg.work_dir / "sqlite-2w", workers=2, log_dir=logs)
            pk1 = twostep_server("passkey-1w", data_dir=cfg.work_dir / "passkey-1w", workers=1, log_dir=logs)
            pw1 = twostep_server(
                "password-1w", data_dir=cfg.work_dir / "password-1w", workers=1, log_dir=logs
            )
            servers += [ref1, ref2, sq2, pk1, pw1]

        pg: dict[str, tuple[Server, str]] = {}
        p4_accounts: dict[str, list[seed.TotpAccount]] = {}
        url_floor = ""
        if cfg.pg_url:
            t0 = time.monotonic()
            url_p1 = self.pg_database("twostep_bench_p1")
            if cfg.floor:
                url_floor = self.pg_database("twostep_bench_floor")
            pg_servers = [("pg-1w", url_p1, 1)]
            if full:
                url_1k = self.pg_database("twostep_bench_1k")
                url_1m = self.pg_database("twostep_bench_1m")
                pg_servers += [("pg-2w", url_p1, 2), ("pg-1k", url_1k, 1), ("pg-1m", url_1m, 1)]
            self.setup_s["pg_create_migrate"] = round(time.monotonic() - t0, 2)
            for name, url, workers in pg_servers:
                s = twostep_server(
                    name, data_dir=cfg.work_dir / name, workers=workers, log_dir=logs, database_url=url
                )
                if name in ("pg-1w", "pg-2w"):
                    # Issue 16: P1·pg and P5·pg are loaded from one address and from 100 behind a proxy
                    # (X-Forwarded-For from 127.0.0.1; a request without it is the peer's, 127.0.0.1).
                    s.env["TWOSTEP_TRUSTED_PROXIES"] = "127.0.0.1"
                pg[name] = (s, url)
                servers.append(s)
            if AB_SRC:
                s = twostep_server(
                    "pg-1w-ab",
                    data_dir=cfg.work_dir / "pg-1w-ab",
                    workers=1,
                    log_dir=logs,
                    database_url=url_p1,
                )
                s.env["PYTHONPATH"] = AB_SRC
                pg["pg-1w-ab"] = (s, url_p1)
                servers.append(s)
            if full:
                # P4's databases: the same 1,000 accounts with an authenticator app; the large one has
                # 999,000 more.
                t0 = time.monotonic()
                for name in ("pg-1k", "pg-1m"):
                    s, url = pg[name]
                    e = self.engine(url)
                    box = seed.server_box(Path(s.env["TWOSTEP_DATA_DIR"]))
                    with e.begin() as conn:
                        ids = seed.add_accounts(
                            conn, P4_SMALL, prefix="p4u", password_hash=self.password_hash, now=seed.now_utc()
                        )
                        p4_accounts[name] = seed.add_totp(conn, ids, box=box, now=seed.now_utc())
                self.setup_s["p4_seed_1k"] = round(time.monotonic() - t0, 2)
                t0 = time.monotonic()
                seed.bulk_accounts_pg(
                    self.engine(url_1m),
                    first_id=P4_SMALL + 1,
                    count=cfg.p4_large - P4_SMALL,
                    password_hash=self.password_hash,
                )
                seed.analyze(self.engine(url_1k))
                self.setup_s["p4_bulk_insert"] = round(time.monotonic() - t0, 2)
                log(
                    f"P4 databases ready: {P4_SMALL:,} and {cfg.p4_large:,} accounts "
                    f"({self.setup_s['p4_bulk_insert']} s)"
                )

        log(f"starting {len(servers)} servers")
        t0 = time.monotonic()
        self.start_all(servers)
        self.setup_s["server_start"] = round(time.monotonic() - t0, 2)

        # The references answer the same requests as P1 (a cookie and a small JSON body).
        def ref_lines(n: int) -> list[tuple[str | None, str]]:
            return [("x" * 43, '{"code":"123456"}')] * n

        m = self.measurements
        if full:
            m.append(
                Measurement(
                    "ref_1w",
                    "bare Starlette app, 1 worker",
                    ref1,
                    "/api/v1/login/totp",
                    "{}",
                    ref_lines,
                    5000,
                    cfg.connections,
                )
            )
        m.append(
            self.totp_measurement(
                "p1_sqlite_1w",
                "P1 TOTP step, SQLite, 1 worker",
                sq1,
                f"sqlite:///{cfg.work_dir / 'sqlite-1w' / 'twostep.sqlite3'}",
                rss=True,
            )
        )
        if cfg.floor:
            m += self.build_floor_sqlite(sq1, logs)
        if full:
            self.build_sqlite_rest(ref_lines, ref2, sq2, pk1, pw1)
            m += self.build_oidc(sq1)

        if cfg.pg_url:
            pgm: list[Measurement] = [
                self.totp_measurement(
                    "p1_pg_1w", "P1 TOTP step, PostgreSQL, 1 worker", pg["pg-1w"][0], pg["pg-1w"][1], rss=True
                )
            ]
            pgm.append(
                self.totp_measurement(
                    "p1_pg_1w_100",
                    f"P1 TOTP step, PostgreSQL, 1 worker, from {ADDRESSES} addresses",
                    pg["pg-1w"][0],
                    pg["pg-1w"][1],
                    rss=False,
                    addresses=ADDRESSES,
                )
            )
            if AB_SRC:
                pgm.append(
                    self.totp_measurement(
                        "p1_pg_1w_ab",
                        f"P1 TOTP step, PostgreSQL, 1 worker, the code of {AB_SRC}",
                        pg["pg-1w-ab"][0],
                        pg["pg-1w-ab"][1],
                        rss=False,
                    )
                )
            if cfg.floor:
                pgm += self.build_floor_pg(pg["pg-1w"][0], url_floor, logs)
            if full:
                pgm.append(
                    self.totp_measurement(
                        "p5_pg_2w",
                        "P1 TOTP step, PostgreSQL, 2 workers",
                        pg["pg-2w"][0],
                        pg["pg-2w"][1],
                        rss=True,
                    )
                )
                pgm.append(
                    self.totp_measurement(
                        "p5_pg_2w_100",
                        f"P1 TOTP step, PostgreSQL, 2 workers, from {ADDRESSES} addresses",
                        pg["pg-2w"][0],
                        pg["pg-2w"][1],
                        rss=False,
                        addresses=ADDRESSES,
                    )
                )
                for name, key, count in (
                    ("pg-1k", "p4_pg_1k", P4_SMALL),
                    ("pg-1m", "p4_pg_1m", cfg.p4_large),
                ):
                    s, url = pg[name]
                    e = self.engine(url)
                    pgm.append(
                        Measurement(
                            key,
                            f"P1 TOTP step, PostgreSQL, {count:,} accounts, 1 worker",
                            s,
                            "/api/v1/login/totp",
                            '"signed_in"',
                            self._p4_lines(e, p4_accounts[name]),
                            guess_rps=300,
                            connections=cfg.connections,
                            engine=e,
                            watch_rss=True,
                            fixed_size=True,
                            count_signins=True,
                        )
                    )
            for x in pgm:
                x.group = "pg"
            m += pgm

    def build_sqlite_rest(
        self,
        ref_lines: Callable[[int], list[tuple[str | None, str]]],
        ref2: Server,
        sq2: Server,
        pk1: Server,
        pw1: Server,
    ) -> None:
        """P3, the 2-worker reference and P5 (in the SQLite group), and P2."""
        cfg = self.cfg
        m = self.measurements
        pk_engine = self.engine(f"sqlite:///{cfg.work_dir / 'passkey-1w' / 'twostep.sqlite3'}")
        m.append(
            Measurement(
                "p3_passkey_sqlite_1w",
                "P3 passkey step, SQLite, 1 worker",
                pk1,
                "/api/v1/login/passkey",
                '"signed_in"',
                lambda n: seed.passkey_lines(
                    pk_engine,
                    n,
                    prefix="p3u",
                    password_hash=self.password_hash,
                    origin=f"http://localhost:{pk1.port}",
                    rp_id="localhost",
                ),
                guess_rps=200,
                connections=cfg.connections,
                engine=pk_engine,
                count_signins=True,
            )
        )
        m.append(
            Measurement(
                "ref_2w",
                "bare Starlette app, 2 workers",
                ref2,
                "/api/v1/login/totp",
                "{}",
                ref_lines,
                8000,
                cfg.connections,
            )
        )
        m.append(
            self.totp_measurement(
                "p5_sqlite_2w",
                "P1 TOTP step, SQLite, 2 workers",
                sq2,
                f"sqlite:///{cfg.work_dir / 'sqlite-2w' / 'twostep.sqlite3'}",
                rss=True,
            )
        )

        pw_engine = self.engine(f"sqlite:///{cfg.work_dir / 'password-1w' / 'twostep.sqlite3'}")
        usernames = seed.password_accounts(pw_engine, 64, prefix="p2u", password_hash=self.password_hash)

        def password_lines(n: int) -> list[tuple[str | None, str]]:
            return [
                (None, json.dumps({"username": usernames[i % len(usernames)], "password": PASSWORD}))
                for i in range(n)
            ]

        self.p2 = Measurement(
            "p2_password_sqlite_1w",
            "P2 password step, SQLite, 1 worker",
            pw1,
            "/api/v1/login",
            '"signed_in"',
            password_lines,
            guess_rps=5,
            connections=cfg.p2_connections,
            engine=pw_engine,
            count_signins=True,
        )

    def build_oidc(self, sq1: Server) -> list[Measurement]:
        """O1 (token endpoint: code to tokens, confidential client) and O2 (userinfo), on P1's server."""
        engine = self.engine(f"sqlite:///{self.cfg.work_dir / 'sqlite-1w' / 'twostep.sqlite3'}")
        client = seed.oidc_client(engine, password_hash=self.password_hash)
        return [
            Measurement(
                "o1_token_sqlite_1w",
                "O1 token endpoint (code to tokens), SQLite, 1 worker",
                sq1,
                "/oidc/token",
                '"id_token"',
                lambda n: seed.oidc_code_lines(engine, client, n),
                guess_rps=150,
                connections=self.cfg.connections,
                engine=engine,
            ),
            Measurement(
                "o2_userinfo_sqlite_1w",
                "O2 userinfo endpoint, SQLite, 1 worker",
                sq1,
                "/oidc/userinfo",
                '"sub"',
                lambda n: seed.oidc_token_lines(engine, client, n),
                guess_rps=400,
                connections=self.cfg.connections,
                engine=engine,
            ),
        ]

    # ------------------------------------------------------------------------------------------- the floor

    def build_floor_sqlite(self, sq1: Server, logs: Path) -> list[Measurement]:
        """The floor on SQLite (issue 16): bench/floor_app.py with the transaction in the event loop and in
        the thread pool, each on a copy of P1's database (migrated by `twostep serve`, nothing seeded yet)
        and with P1's key; checked first in process (the same statements with the same values as twostep
        for the same sign-ins), then each server's answer against twostep's."""
        cfg = self.cfg
        t0 = time.monotonic()
        check = statements.check_floor_sqlite(cfg.work_dir / "floor-check")
        capture: statements.Capture = check["capture"]
        self.floor_checks["sqlite"] = {
            "in_process": {"ok": check["ok"], "message": check["message"]},
            "twostep": capture.to_json(),
        }
        log(f"floor, SQLite: {check['message']}")
        src_dir = Path(sq1.env["TWOSTEP_DATA_DIR"])
        servers: list[Server] = []
        for mode in ("sqlite-loop", "sqlite-thread"):
            data_dir = cfg.work_dir / f"floor-{mode}"
            data_dir.mkdir(parents=True)
            shutil.copy2(src_dir / "secret.key", data_dir / "secret.key")
            seed.copy_sqlite(src_dir / "twostep.sqlite3", data_dir / "twostep.sqlite3")
            servers.append(floor_server(f"floor-{mode}", mode=mode, data_dir=data_dir, log_dir=logs))
        self.start_all(servers)
        out: list[Measurement] = []
        for server, key, title in (
            (servers[0], "floor_sqlite_loop", "floor: Starlette + sqlite3, transaction in the event loop"),
            (servers[1], "floor_sqlite_thread", "floor: Starlette + sqlite3, transaction in the thread pool"),
        ):
            fm = self.floor_measurement(
                key, title, server, f"sqlite:///{Path(server.env['FLOOR_DATA_DIR']) / 'twostep.sqlite3'}"
            )
            fm.floor_capture = capture
            if not check["ok"]:
                fm.setup_failures.append(check["message"])
            self.check_floor_answer(fm, capture)
            out.append(fm)
        self.setup_s["floor_sqlite"] = round(time.monotonic() - t0, 2)
        return out

    def build_floor_pg(self, pg1: Server, url: str, logs: Path) -> list[Measurement]:
        """The floor on PostgreSQL: psycopg's AsyncConnection in the event loop (one worker, and two: what a
        second worker adds to the same statements with nothing around them, beside P5·pg), and its sync
        Connection in the thread pool, on a database of its own migrated by `twostep migrate`, with P1·pg's
        key."""
        cfg = self.cfg
        t0 = time.monotonic()
        capture = statements.capture_twostep(cfg.work_dir / "floor-capture-pg", database_url=url)
        self.floor_checks["postgresql"] = {"twostep": capture.to_json()}
        log(f"floor, PostgreSQL: twostep runs {len(capture.statements)} statements per TOTP step")
        servers: list[Server] = []
        # Two workers keep 8 connections in all (4 each), not 16: the run's other servers keep theirs open
        # and PostgreSQL's default allows 100 (3 for superusers); 8 transactions at once are still more than
        # two cores run.
        for name, mode, workers, connections in (
            ("floor-pg-async", "pg-async", 1, 16),
            ("floor-pg-thread", "pg-thread", 1, 16),
            ("floor-pg-async-2w", "pg-async", 2, 8),
        ):
            data_dir = cfg.work_dir / name
            data_dir.mkdir(parents=True)
            shutil.copy2(Path(pg1.env["TWOSTEP_DATA_DIR"]) / "secret.key", data_dir / "secret.key")
            servers.append(
                floor_server(
                    name,
                    mode=mode,
                    data_dir=data_dir,
                    log_dir=logs,
                    database_url=url,
                    workers=workers,
                    connections=connections,
                )
            )
        self.start_all(servers)
        out: list[Measurement] = []
        for server, key, title in (
            (servers[0], "floor_pg_async", "floor: Starlette + psycopg async, in the event loop"),
            (servers[1], "floor_pg_thread", "floor: Starlette + psycopg sync, in the thread pool"),
            (
                servers[2],
                "floor_pg_async_2w",
                "floor: Starlette + psycopg async, in the event loop, 2 workers",
            ),
        ):
            fm = self.floor_measurement(key, title, server, url)
            fm.floor_capture = capture
            self.check_floor_answer(fm, capture)
            out.append(fm)
        self.setup_s["floor_pg"] = round(time.monotonic() - t0, 2)
        return out

    def floor_measurement(self, key: str, title: str, server: Server, url: str) -> Measurement:
        engine = self.engine(url)
        box = seed.server_box(Path(server.env["FLOOR_DATA_DIR"]))
        prefix = key.replace("_", "") + "u"
        return Measurement(
            key,
            title,
            server,
            "/api/v1/login/totp",
            '"signed_in"',
            lambda n: seed.totp_lines(engine, box, n, prefix=prefix, password_hash=self.password_hash),
            guess_rps=1000,
            connections=self.cfg.connections,
            engine=engine,
            count_signins=True,
        )

    def check_floor_answer(self, m: Measurement, capture: statements.Capture) -> None:
        """One real sign-in against the floor server: twostep's status, body, cookie and header names."""
        assert m.engine is not None
        box = seed.server_box(Path(m.server.env["FLOOR_DATA_DIR"]))
        ((token, body),) = seed.totp_lines(m.engine, box, 1, prefix=f"{m.key}check", password_hash="x")
        req = urllib.request.Request(
            m.server.url + m.path,
            data=body.encode(),
            method="POST",
            headers={"Content-Type": "application/json", "Cookie": f"twostep_session={token}"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, text_, headers = resp.status, resp.read().decode(), resp.headers
        cookie = headers.get("set-cookie", "")
        new_token = cookie.split(";", 1)[0].split("=", 1)[-1]
        got = {
            "status": status,
            "body": text_,
            "set_cookie": statements.cookie_shape(cookie, new_token),
            "header_names": sorted({k.lower() for k in headers if k.lower() not in statements.TRANSPORT}),
        }
        want = {
            "status": capture.status,
            "body": capture.body,
            "set_cookie": capture.set_cookie,
            "header_names": capture.header_names,
        }
        problems = [
            f"answer differs in {k}: floor {got[k]!r}, twostep {want[k]!r}" for k in want if got[k] != want[k]
        ]
        m.setup_failures += problems
        self.floor_checks.setdefault("answers", {})[m.key] = {"ok": not problems, "floor": got}
        self.cleanup(m)

    def _p4_lines(
        self, engine: Engine, accts: list[seed.TotpAccount]
    ) -> Callable[[int], list[tuple[str | None, str]]]:
        """P4's accounts are a fixed 1,000: each can sign in once per TOTP time step it has not used yet, and
        a code is accepted for steps T-1..T+1 only. A round uses steps max(T, last used + 1)..T+1 (one or two
        sign-ins per account, the earlier step first); with none left, it waits for the next step."""

        def make(n: int) -> list[tuple[str | None, str]]:
            want_blocks = max(1, min(2, math.ceil(n / len(accts))))
            while True:
                cur = time_step(seed.now_utc())
                last = max(a.last_step for a in accts)
                lo = max(cur, last + 1)
                steps = list(range(lo, cur + 2))[:want_blocks]
                if steps:
                    return seed.totp_lines_for(engine, accts, steps)
                wait = 30 - (time.time() % 30) + 0.2
                log(
                    f"  P4: every account used its codes up to step {last}; "
                    f"waiting {wait:.0f} s for the next step"
                )
                time.sleep(wait)

        return make

    # ---------------------------------------------------------------------------------------------- runs

    def cleanup(self, m: Measurement) -> None:
        """Pending sign-ins and challenges left over from a round: removed, so that no later round pays for
        the server's sweep of abandoned sign-ins."""
        if m.engine is None:
            return
        with m.engine.begin() as conn:
            conn.execute(delete(sessions).where(sessions.c.kind == "pending"))
            conn.execute(delete(challenges))

    @staticmethod
    def signins(engine: Engine) -> tuple[int, int]:
        """Signed-in sessions and ``signed_in`` events in the database."""
        with engine.connect() as conn:
            active = conn.execute(
                select(func.count()).select_from(sessions).where(sessions.c.kind == "active")
            ).scalar_one()
            events = conn.execute(
                select(func.count()).select_from(security_events).where(security_events.c.type == "signed_in")
            ).scalar_one()
        return int(active), int(events)

    def settled_signins(self, engine: Engine, timeout: float = 15.0) -> tuple[int, int]:
        """The counts once the server has finished the requests wrk left in flight (two reads 0.3 s apart
        agree)."""
        last = self.signins(engine)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = self.signins(engine)
            if now == last:
                break
            last = now
        return last

    @staticmethod
    def floor_call(m: Measurement, method: str, path: str) -> dict[str, Any]:
        data = b"" if method == "POST" else None
        req = urllib.request.Request(m.server.url + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=30) as resp:
            out: dict[str, Any] = json.loads(resp.read())
        return out

    def run_one(self, m: Measurement, duration: float, *, warmup: bool = False) -> LoadResult:
        est = m.estimate()
        wanted = int(est * duration * 1.6) + 50
        lines = m.make_lines(wanted)
        path = loadgen.write_lines(self.lines_file(m.key), lines)
        run_for = duration
        if m.fixed_size:
            run_for = min(duration, max(2.0, len(lines) / max(est, 1) * 1.4 + 1))
        pids = m.server.worker_pids()
        before = self.signins(m.engine) if m.count_signins and m.engine is not None else None
        if m.floor_capture is not None:
            self.floor_call(m, "POST", "/_floor/reset")
        if m.watch_rss:
            self.sampler.watch(pids)
        result = loadgen.run_wrk(
            label=m.key,
            url=m.server.url,
            path=m.path,
            lines_file=path,
            duration=run_for,
            connections=m.connections,
            threads=self.cfg.wrk_threads,
            expect=m.expect,
            server_cpu=m.server.cpu_seconds,
            addresses=m.addresses,
        )
        if m.watch_rss:
            peaks = self.sampler.collect()
            result.extra["rss_max_kib_per_worker"] = sorted(peaks.values())
            if not warmup:
                m.rss_kib += list(peaks.values())
        result.extra["lines_exhausted"] = result.sent >= result.lines
        result.extra["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
        failed: list[str] = list(m.setup_failures)
        if before is not None and m.engine is not None:
            after = self.settled_signins(m.engine)
            # wrk stops at its deadline without waiting for the requests then in flight (at most one per
            # connection): the server may have signed those in too.
            unanswered = max(0, result.sent - result.ok - result.bad)
            made = {
                "ok_answers": result.ok,
                "unanswered": unanswered,
                "sessions": after[0] - before[0],
                "events": after[1] - before[1],
            }
            result.extra["real_signins"] = made
            if not ok_signins(made):
                failed.append(
                    f"{result.ok} ok answers ({unanswered} requests unanswered at wrk's deadline) made "
                    f"{made['sessions']} signed-in sessions and {made['events']} signed_in events"
                )
        if m.addresses and m.engine is not None and not warmup:
            # The server took the forwarded addresses as the clients' (its sign-ins record them).
            with m.engine.connect() as conn:
                seen = conn.execute(
                    select(func.count(func.distinct(security_events.c.ip))).where(
                        security_events.c.type == "signed_in", security_events.c.ip.like("198.51.100.%")
                    )
                ).scalar_one()
            result.extra["client_addresses"] = int(seen)
            if seen != m.addresses:
                failed.append(f"the sign-ins came from {seen} forwarded addresses, not {m.addresses}")
        if m.floor_capture is not None:
            st = self.floor_call(m, "GET", "/_floor/stats")
            same, why = statements.compare(m.floor_capture.normalised, st["lists"])
            result.extra["statements"] = {
                "same": same,
                "message": why,
                "traced_requests": st["traced"],
                "requests": st["requests"],
                "outcomes": st["outcomes"],
            }
            if not same:
                failed.append(why)
        if failed:
            result.extra["failed_checks"] = failed
        path.unlink(missing_ok=True)
        self.cleanup(m)
        return result

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        started = time.time()
        self.check_pg()
        info = machine.describe(self.pg_version)
        log(
            f"machine: {info['cpu_model']}, {info['cores_usable']} cores, Python {info['python']}, "
            f"PostgreSQL {info['postgresql']}"
        )
        try:
            self.build()
            if cfg.only:
                self.measurements = [m for m in self.measurements if m.key in cfg.only]
            if cfg.warmup > 0:
                log(f"warm-up ({cfg.warmup:g} s each; not counted, sizes the rounds)")
                for m in self.all_measurements():
                    m.warmup = self.run_one(m, self._duration(m, cfg.warmup), warmup=True)
                    log(f"  {m.key}: {m.warmup.ok_rps:.0f}/s ok {m.warmup.ok}/{m.warmup.ok + m.warmup.bad}")
            for r in range(cfg.rounds):
                log(f"round {r + 1}/{cfg.rounds}")
                for m in self.measurements:
                    if m.group == "sqlite":
                        self._measure(m)
                if self.p2 is not None:
                    self._argon2_round()
                    self._measure(self.p2)
                for m in self.measurements:
                    if m.group == "pg":
                        self._measure(m)
            if not cfg.floor_only:
                log(f"P7: worker memory under {hash_memory.REQUESTS} concurrent password requests")
                self.hash_memory = hash_memory.run(cfg.work_dir / "p7", reference=not cfg.quick)
                log(f"  peak {self.hash_memory['bounded']['peak_mib']} MiB")
        finally:
            for s in self.servers:
                s.stop()
            for e in self.engines:
                e.dispose()
            self.sampler.close()
            try:
                self.drop_pg()
            except Exception as exc:
                log(f"could not drop the bench databases: {exc}")
        if not cfg.floor_only:
            # After the other servers are stopped: F1 starts its own, and their database connections.
            log("F1: forward authentication (bench/forward_auth.py)")
            work = cfg.work_dir / "f1"
            duration = min(cfg.duration, 5.0)
            self.forward_auth = [forward_auth.measure("sqlite", work, cfg.rounds, duration, None)]
            if cfg.pg_url:
                self.forward_auth.append(
                    forward_auth.measure("postgresql", work, cfg.rounds, duration, cfg.pg_url)
                )
            for res in self.forward_auth:
                log(f"  {res['database']}: {res['ratio']:.0%} of the floor")
        finished = time.time()
        return self.summary(info, started, finished)

    def all_measurements(self) -> list[Measurement]:
        return [*self.measurements, *([self.p2] if self.p2 is not None else [])]

    def _duration(self, m: Measurement, duration: float) -> float:
        # A password step takes about a second on a busy machine: give P2 enough time for a few dozen.
        return max(duration, 4.0) if m is self.p2 else duration

    def _measure(self, m: Measurement) -> None:
        result = self.run_one(m, self._duration(m, self.cfg.duration))
        m.results.append(result)
        flag = "" if result.valid else f"  INVALID ({result.ok_share:.1%} ok: {result.bad_samples[:200]})"
        for why in result.extra.get("failed_checks", []):
            flag += f"  CHECK FAILED: {why}"
        log(
            f"  {m.key}: {result.ok_rps:.0f}/s  p50 {result.p50_ms:.1f} ms  p99 {result.p99_ms:.1f} ms  "
            f"({result.ok}/{result.ok + result.bad} ok in {result.active_s:.1f} s, "
            f"server {result.server_cpu_s / max(result.active_s, 1e-9):.2f} cores, "
            f"machine {result.machine_busy_s / max(result.wall_s, 1e-9):.2f}){flag}"
        )

    def _argon2_round(self) -> None:
        res = argon2_ref.measure(
            self.password_hash, PASSWORD, processes=self.cores, duration=max(2.0, self.cfg.duration / 2)
        )
        self.argon2_rounds.append(res)
        log(f"  argon2_ref: {res['verifies_per_s']:.2f} verifies/s in {res['processes']} processes")

    # ------------------------------------------------------------------------------------------- summary

    def summary(self, info: dict[str, Any], started: float, finished: float) -> dict[str, Any]:
        meas: dict[str, Any] = {}
        for m in self.all_measurements():
            meas[m.key] = summarize(m)
        if self.argon2_rounds:
            meas["argon2_ref"] = {
                "title": "argon2-cffi verify, same parameters, one process per core",
                "median": {"ok_rps": median([r["verifies_per_s"] for r in self.argon2_rounds])},
                "rounds": self.argon2_rounds,
            }
        info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        return {
            "issue": 8,
            "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
            "elapsed_s": round(finished - started, 1),
            "machine": info,
            "config": self.cfg.to_json(),
            "setup_s": self.setup_s,
            "notes": self.notes,
            "measurements": meas,
            "hash_memory": self.hash_memory,
            "floor": self.floor_checks,
            "forward_auth": self.forward_auth,
            "figures": report.figures(meas)
            + forward_auth.figure_rows(self.forward_auth)
            + ([hash_memory.figure_row(self.hash_memory)] if self.hash_memory else []),
        }


def ok_signins(made: dict[str, int]) -> bool:
    """Every ok answer made a session and an event; so may have requests wrk left unanswered."""
    lo, hi = made["ok_answers"], made["ok_answers"] + made["unanswered"]
    return made["sessions"] == made["events"] and lo <= made["sessions"] <= hi


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else 0.0


def summarize(m: Measurement) -> dict[str, Any]:
    rs = m.results
    out: dict[str, Any] = {
        "title": m.title,
        "server_workers": m.server.workers,
        "connections": m.connections,
        "median": {
            "ok_rps": median([r.ok_rps for r in rs]),
            "p50_ms": median([r.p50_ms for r in rs]),
            "p90_ms": median([r.p90_ms for r in rs]),
            "p99_ms": median([r.p99_ms for r in rs]),
            "server_cpu_ms_per_request": median([1000 * r.server_cpu_s / max(1, r.ok + r.bad) for r in rs]),
            "server_cores_busy": median([r.server_cpu_s / r.active_s for r in rs if r.active_s]),
            "wrk_cores_busy": median([r.wrk_cpu_s / r.active_s for r in rs if r.active_s]),
            "machine_cores_busy": median([r.machine_busy_s / r.wall_s for r in rs if r.wall_s]),
        },
        "valid": bool(rs) and all(r.valid and not r.extra.get("failed_checks") for r in rs),
        "failed_checks": sorted({why for r in rs for why in r.extra.get("failed_checks", [])}),
        "ok_share_min": round(min((r.ok_share for r in rs), default=0.0), 4),
        "requests": sum(r.ok + r.bad for r in rs),
        "rounds": [r.to_json() for r in rs],
        "warmup": m.warmup.to_json() if m.warmup else None,
    }
    made = [r.extra["real_signins"] for r in rs if "real_signins" in r.extra]
    if made:
        out["real_signins"] = {
            k: sum(x[k] for x in made) for k in ("ok_answers", "unanswered", "sessions", "events")
        }
    checked = [r.extra["statements"] for r in rs if "statements" in r.extra]
    if checked:
        out["statements"] = {
            "same": all(c["same"] for c in checked),
            "message": next((c["message"] for c in checked if not c["same"]), checked[0]["message"]),
            "traced_requests": sum(c["traced_requests"] for c in checked),
        }
    if m.rss_kib:
        out["rss_max_mib"] = round(max(m.rss_kib) / 1024, 1)
    return out


def parse_args(argv: list[str] | None) -> Config:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="one short round, SQLite only, written to bench/out/")
    p.add_argument("--rounds", type=int, help="rounds (default 3; 1 with --quick)")
    p.add_argument("--duration", type=float, help="seconds per load (default 10; 2 with --quick)")
    p.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument("--pg-url", default=os.environ.get("TWOSTEP_BENCH_PG_URL", DEFAULT_PG_URL))
    p.add_argument("--no-pg", action="store_true", help="skip the PostgreSQL measurements (P4)")
    p.add_argument("--p4-large", type=int, default=P4_LARGE, help="accounts in P4's large database")
    p.add_argument("--out", type=Path, help="where to write latest.{json,md,png}")
    p.add_argument("--no-floor", action="store_true", help="skip the floor of issue 16 (bench/floor_app.py)")
    p.add_argument(
        "--floor-only", action="store_true", help="only P1 and the floor (and on PostgreSQL unless --quick)"
    )
    p.add_argument(
        "--only",
        default="",
        help="with --floor-only: the loads to run, by key, comma-separated (experiments)",
    )
    a = p.parse_args(argv)
    quick = bool(a.quick)
    out = a.out or (ROOT / "bench" / ("out" if quick else "results"))
    return Config(
        quick=quick,
        rounds=a.rounds or (1 if quick else 3),
        duration=a.duration or (2.0 if quick else 10.0),
        warmup=0.0 if quick else 3.0,
        connections=a.connections,
        p2_connections=len(os.sched_getaffinity(0)),  # as many verifies at once as the reference runs
        wrk_threads=a.wrk_threads,
        out_dir=out,
        work_dir=ROOT / "bench" / "out" / ("work-quick" if quick else "work"),
        pg_url=None if (quick or a.no_pg) else a.pg_url,
        p4_large=a.p4_large,
        floor=not a.no_floor or a.floor_only,
        floor_only=bool(a.floor_only),
        only=tuple(k for k in a.only.split(",") if k) if a.floor_only else (),
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    shutil.rmtree(cfg.work_dir, ignore_errors=True)
    cfg.work_dir.mkdir(parents=True)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        data = Bench(cfg).run()
    except Exception:
        traceback.print_exc()
        log(f"failed; server logs are in {cfg.work_dir / 'logs'}")
        return 1
    paths = report.write(data, cfg.out_dir)
    print(paths["md_text"])
    log(f"wrote {', '.join(str(p) for k, p in paths.items() if k != 'md_text')} in {data['elapsed_s']:.0f} s")
    if not cfg.quick:
        shutil.rmtree(cfg.work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
