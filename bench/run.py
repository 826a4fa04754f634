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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, text

from bench import argon2_ref, hash_memory, loadgen, machine, report, seed
from bench.loadgen import LoadResult
from bench.servers import ROOT, RssSampler, Server, reference_server, twostep_server
from twostep.core.passwords import PasswordHasher
from twostep.core.totp import time_step
from twostep.storage.tables import challenges, sessions

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
            "p4_accounts": [P4_SMALL, self.p4_large] if self.pg_url else None,
        }


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

    def totp_measurement(self, key: str, title: str, server: Server, url: str, *, rss: bool) -> Measurement:
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
        )

    def build(self) -> None:
        cfg = self.cfg
        logs = cfg.work_dir / "logs"
        t0 = time.monotonic()
        self.password_hash = PasswordHasher().hash(PASSWORD)  # production argon2 parameters
        self.setup_s["password_hash"] = round(time.monotonic() - t0, 2)

        ref1 = reference_server("ref-1w", workers=1, log_dir=logs)
        ref2 = reference_server("ref-2w", workers=2, log_dir=logs)
        sq1 = twostep_server("sqlite-1w", data_dir=cfg.work_dir / "sqlite-1w", workers=1, log_dir=logs)
        sq2 = twostep_server("sqlite-2w", data_dir=cfg.work_dir / "sqlite-2w", workers=2, log_dir=logs)
        pk1 = twostep_server("passkey-1w", data_dir=cfg.work_dir / "passkey-1w", workers=1, log_dir=logs)
        pw1 = twostep_server("password-1w", data_dir=cfg.work_dir / "password-1w", workers=1, log_dir=logs)
        servers = [ref1, ref2, sq1, sq2, pk1, pw1]

        pg: dict[str, tuple[Server, str]] = {}
        if cfg.pg_url:
            t0 = time.monotonic()
            url_p1 = self.pg_database("twostep_bench_p1")
            url_1k = self.pg_database("twostep_bench_1k")
            url_1m = self.pg_database("twostep_bench_1m")
            self.setup_s["pg_create_migrate"] = round(time.monotonic() - t0, 2)
            for name, url, workers in (
                ("pg-1w", url_p1, 1),
                ("pg-2w", url_p1, 2),
                ("pg-1k", url_1k, 1),
                ("pg-1m", url_1m, 1),
            ):
                s = twostep_server(
                    name, data_dir=cfg.work_dir / name, workers=workers, log_dir=logs, database_url=url
                )
                pg[name] = (s, url)
                servers.append(s)
            # P4's databases: the same 1,000 accounts with an authenticator app; the large one has
            # 999,000 more.
            t0 = time.monotonic()
            p4_accounts: dict[str, list[seed.TotpAccount]] = {}
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
        )

        if cfg.pg_url:
            m.append(
                self.totp_measurement(
                    "p1_pg_1w", "P1 TOTP step, PostgreSQL, 1 worker", pg["pg-1w"][0], pg["pg-1w"][1], rss=True
                )
            )
            m.append(
                self.totp_measurement(
                    "p5_pg_2w",
                    "P1 TOTP step, PostgreSQL, 2 workers",
                    pg["pg-2w"][0],
                    pg["pg-2w"][1],
                    rss=True,
                )
            )
            for name, key, count in (("pg-1k", "p4_pg_1k", P4_SMALL), ("pg-1m", "p4_pg_1m", cfg.p4_large)):
                s, url = pg[name]
                e = self.engine(url)
                m.append(
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
                    )
                )

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

    def run_one(self, m: Measurement, duration: float, *, warmup: bool = False) -> LoadResult:
        est = m.estimate()
        wanted = int(est * duration * 1.6) + 50
        lines = m.make_lines(wanted)
        path = loadgen.write_lines(self.lines_file(m.key), lines)
        run_for = duration
        if m.fixed_size:
            run_for = min(duration, max(2.0, len(lines) / max(est, 1) * 1.4 + 1))
        pids = m.server.worker_pids()
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
        )
        if m.watch_rss:
            peaks = self.sampler.collect()
            result.extra["rss_max_kib_per_worker"] = sorted(peaks.values())
            if not warmup:
                m.rss_kib += list(peaks.values())
        result.extra["lines_exhausted"] = result.sent >= result.lines
        result.extra["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
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
            if cfg.warmup > 0:
                log(f"warm-up ({cfg.warmup:g} s each; not counted, sizes the rounds)")
                for m in [*self.measurements, self.p2]:
                    m.warmup = self.run_one(m, self._duration(m, cfg.warmup), warmup=True)
                    log(f"  {m.key}: {m.warmup.ok_rps:.0f}/s ok {m.warmup.ok}/{m.warmup.ok + m.warmup.bad}")
            for r in range(cfg.rounds):
                log(f"round {r + 1}/{cfg.rounds}")
                for m in self.measurements[:5]:
                    self._measure(m)
                self._argon2_round()
                self._measure(self.p2)
                for m in self.measurements[5:]:
                    self._measure(m)
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
        finished = time.time()
        return self.summary(info, started, finished)

    def _duration(self, m: Measurement, duration: float) -> float:
        # A password step takes about a second on a busy machine: give P2 enough time for a few dozen.
        return max(duration, 4.0) if m is self.p2 else duration

    def _measure(self, m: Measurement) -> None:
        result = self.run_one(m, self._duration(m, self.cfg.duration))
        m.results.append(result)
        flag = "" if result.valid else f"  INVALID ({result.ok_share:.1%} ok: {result.bad_samples[:200]})"
        log(
            f"  {m.key}: {result.ok_rps:.0f}/s  p50 {result.p50_ms:.1f} ms  p99 {result.p99_ms:.1f} ms  "
            f"({result.ok}/{result.ok + result.bad} ok in {result.active_s:.1f} s, "
            f"server {result.server_cpu_s / max(result.active_s, 1e-9):.2f} cores){flag}"
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
        for m in [*self.measurements, self.p2]:
            meas[m.key] = summarize(m)
        argon = {
            "title": "argon2-cffi verify, same parameters, one process per core",
            "median": {"ok_rps": median([r["verifies_per_s"] for r in self.argon2_rounds])},
            "rounds": self.argon2_rounds,
        }
        meas["argon2_ref"] = argon
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
            "figures": report.figures(meas)
            + ([hash_memory.figure_row(self.hash_memory)] if self.hash_memory else []),
        }


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
        },
        "valid": bool(rs) and all(r.valid for r in rs),
        "ok_share_min": round(min((r.ok_share for r in rs), default=0.0), 4),
        "requests": sum(r.ok + r.bad for r in rs),
        "rounds": [r.to_json() for r in rs],
        "warmup": m.warmup.to_json() if m.warmup else None,
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
