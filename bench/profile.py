"""`python -m bench.profile`: where a worker's time goes under the P1 (or P2, P3) load.

Starts one `twostep serve` worker through bench.instrumented (SQL statements and transactions counted),
drives it with the same wrk replay as bench.run, and samples it with py-spy twice: every active thread,
then only the thread holding the GIL (`--gil`). Writes bench/out/profile/<what>-<db>.{json,md} and the
raw collapsed stacks (open them with https://www.speedscope.app or flamegraph.pl).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench import loadgen, seed
from bench.run import DEFAULT_PG_URL, PASSWORD
from bench.servers import ROOT, twostep_server
from twostep.core.passwords import PasswordHasher

# Leaf-first attribution: a sample belongs to the innermost frame whose file is in one of these.
CATEGORIES: list[tuple[str, str]] = [
    ("argon2/", "argon2 (password hash)"),
    ("_argon2_cffi_bindings/", "argon2 (password hash)"),
    ("sqlite3/", "sqlite3 driver"),
    ("psycopg/", "psycopg driver"),
    ("psycopg_binary/", "psycopg driver"),
    ("psycopg_pool/", "psycopg driver"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("pydantic/", "pydantic"),
    ("pydantic_core/", "pydantic"),
    ("fastapi/", "FastAPI"),
    ("starlette/", "Starlette"),
    ("uvicorn/", "uvicorn"),
    ("anyio/", "anyio (thread pool)"),
    ("webauthn/", "py_webauthn"),
    ("cbor2/", "cbor2"),
    ("cryptography/", "cryptography"),
    ("json/", "json"),
    ("twostep/", "twostep"),
    ("asyncio/", "asyncio / uvloop (C: uvloop, httptools)"),
    ("threading.py", "threads (locks, queues)"),
    ("queue.py", "threads (locks, queues)"),
    ("concurrent/", "threads (locks, queues)"),
    ("email/", "email"),
    ("datetime", "datetime"),
    ("secrets.py", "secrets"),
    ("hashlib", "hashlib / hmac"),
    ("hmac.py", "hashlib / hmac"),
]
# Innermost frames of threads that wait for work (py-spy counts some of them as active).
IDLE = ("Condition.wait (threading.py", "concurrent/futures/thread.py:81", "bench/instrumented.py")

# Inclusive share of these twostep functions (any frame of the stack).
FUNCTIONS = [
    "totp_step",
    "password_step",
    "check_password",
    "passkey_step (twostep/services/sign_in.py",
    "check_assertion (twostep/services/second_factor.py",
    "verify_authentication (twostep/core/passkeys/assertion.py",
    "verify_authentication_response",
    "match_totp",
    "verify_code",
    "reserve (twostep/services/regulator.py",
    "finish_sign_in",
    "reserve_attempt",
    "record (twostep/services/audit.py",
    "create_active",
    "pending (twostep/services/sessions.py",
    "transaction (twostep/storage/db.py",
    "_execute_context",
    "_compile_w_cache",
    "do_execute",
    "do_commit",
    "_connection_for_bind",
    "checkout",
    "_on_begin",
    "run_in_threadpool",
    "serialize_response",
    "validate_",
    "solve_dependencies",
    "__call__ (twostep/web/security.py",
]

FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")


def parse_collapsed(path: Path) -> list[tuple[list[str], int]]:
    stacks: list[tuple[list[str], int]] = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        body, _, count = line.rpartition(" ")
        stacks.append((body.split(";"), int(count)))
    return stacks


def _file(frame: str) -> str:
    m = FRAME_RE.match(frame)
    return m.group("file") if m else frame


DRIVER_CALLS = (
    "DefaultDialect.do_execute ",
    "DefaultDialect.do_commit ",
    "DefaultDialect.do_executemany ",
    "DefaultDialect.do_rollback ",
    "PGDialect_psycopg.do_",
    "SQLiteDialect_pysqlite.do_",
)


def categorize(frames: list[str]) -> str:
    if frames and frames[-1].startswith(DRIVER_CALLS):
        return "database call (C driver: SQL, I/O, lock waits)"
    for frame in reversed(frames):
        file = _file(frame)
        for needle, name in CATEGORIES:
            if file.startswith(needle) or "/" + needle in file:
                if name == "twostep":
                    return "twostep " + file.split("twostep/", 1)[-1]
                return name
    return "other"


def analyze(path: Path) -> dict[str, Any]:
    stacks = parse_collapsed(path)
    idle = sum(c for f, c in stacks if any(i in f[-1] for i in IDLE))
    stacks = [(f, c) for f, c in stacks if not any(i in f[-1] for i in IDLE)]
    total = sum(c for _, c in stacks) or 1
    cats: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for frames, count in stacks:
        cats[categorize(frames)] += count
        leaves[frames[-1]] += count
        joined = ";".join(frames)
        for fn in FUNCTIONS:
            if fn in joined:
                incl[fn] += count

    def pct(n: int) -> float:
        return round(100 * n / total, 1)

    return {
        "samples": total,
        "idle_samples_dropped": idle,
        "by_package_self": {k: pct(v) for k, v in cats.most_common()},
        "top_leaf_frames": {k: pct(v) for k, v in leaves.most_common(25)},
        "inclusive": {k: pct(incl[k]) for k in FUNCTIONS if incl[k]},
    }


def read_counts(path: Path) -> dict[str, int]:
    try:
        return dict(json.loads(path.read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def profile(what: str, db: str, seconds: float, rate: int, out: Path, pg_url: str) -> dict[str, Any]:
    work = ROOT / "bench" / "out" / "work-profile" / f"{what}-{db}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    database_url = None
    admin = None
    dbname = f"twostep_bench_prof_{what}"
    if db == "pg":
        admin = seed.engine_for(pg_url.rsplit("/", 1)[0] + "/postgres")
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{dbname}"'))
        database_url = pg_url.rsplit("/", 1)[0] + "/" + dbname
        env = {k: v for k, v in os.environ.items() if not k.startswith("TWOSTEP_")}
        env.update(TWOSTEP_DATABASE_URL=database_url, TWOSTEP_DATA_DIR=str(work / "migrate"))
        subprocess.run(
            [sys.executable, "-m", "twostep", "migrate"], env=env, cwd=ROOT, check=True, capture_output=True
        )
    server = twostep_server(
        f"profile-{what}-{db}", data_dir=work / "data", workers=1, log_dir=work, database_url=database_url
    )
    counts_file = work / "counts.json"
    server.env["BENCH_COUNTS_FILE"] = str(counts_file)
    server.argv[1:3] = ["-m", "bench.instrumented"]
    server.env["PYTHONPATH"] = str(ROOT) + os.pathsep + server.env.get("PYTHONPATH", "")
    server.start()
    engine = seed.engine_for(database_url or f"sqlite:///{work / 'data' / 'twostep.sqlite3'}")
    password_hash = PasswordHasher().hash(PASSWORD)
    try:
        if what == "totp":
            box = seed.server_box(work / "data")
            path, expect, conns = "/api/v1/login/totp", '"signed_in"', 16

            def make(n: int) -> list[tuple[str | None, str]]:
                return seed.totp_lines(
                    engine, box, n, prefix=f"pf{time.time_ns()}u", password_hash=password_hash
                )
        elif what == "passkey":
            path, expect, conns = "/api/v1/login/passkey", '"signed_in"', 16

            def make(n: int) -> list[tuple[str | None, str]]:
                return seed.passkey_lines(
                    engine,
                    n,
                    prefix=f"pf{time.time_ns()}u",
                    password_hash=password_hash,
                    origin=f"http://localhost:{server.port}",
                    rp_id="localhost",
                )
        else:
            path, expect, conns = "/api/v1/login", '"signed_in"', len(os.sched_getaffinity(0))
            users = seed.password_accounts(engine, 64, prefix="pfu", password_hash=password_hash)

            def make(n: int) -> list[tuple[str | None, str]]:
                return [
                    (None, json.dumps({"username": users[i % 64], "password": PASSWORD})) for i in range(n)
                ]

        def load(duration: float, n: int) -> loadgen.LoadResult:
            f = loadgen.write_lines(work / f"lines-{time.time_ns()}.txt", make(n))
            return loadgen.run_wrk(
                label=what,
                url=server.url,
                path=path,
                lines_file=f,
                duration=duration,
                connections=conns,
                expect=expect,
                server_cpu=server.cpu_seconds,
            )

        warm = load(3, 2000 if what != "password" else 40)
        est = max(warm.ok_rps, 1.0)
        results: dict[str, Any] = {"warmup_rps": warm.ok_rps}
        for mode in ("all-threads", "gil"):
            raw = out / f"{what}-{db}-{mode}.collapsed.txt"
            c0 = read_counts(counts_file)
            assert server.proc is not None
            argv = [
                "py-spy",
                "record",
                "--pid",
                str(server.proc.pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--output",
                str(raw),
            ]
            if mode == "gil":
                argv.append("--gil")
            spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(0.3)
            res = load(seconds + 1, int(est * (seconds + 1) * 1.8) + 20)
            spy_err = spy.communicate(timeout=60)[1]
            time.sleep(0.6)
            c1 = read_counts(counts_file)
            answered = res.ok + res.bad
            per_req = {k: round((c1.get(k, 0) - c0.get(k, 0)) / max(answered, 1), 2) for k in sorted(c1)}
            results[mode] = {
                "load": res.to_json(),
                "sql_per_request": per_req,
                "profile": analyze(raw) if raw.exists() else {"error": spy_err[-500:]},
                "collapsed_stacks": str(raw) if raw.exists() else None,
            }
            est = max(est, res.ok_rps)
        return results
    finally:
        server.stop()
        engine.dispose()
        if admin is not None:
            with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
            admin.dispose()


def markdown(name: str, data: dict[str, Any]) -> str:
    lines = [f"## {name}", ""]
    for mode in ("all-threads", "gil"):
        r = data[mode]
        load = r["load"]
        lines += [
            f"### py-spy, {mode}: {load['ok_rps']:.0f} req/s, p50 {load['p50_ms']:.1f} ms, "
            f"server CPU {load.get('server_cpu_ms_per_request', 0):.2f} ms/request, "
            f"{r['profile'].get('samples', 0)} samples",
            "",
            "SQL per request: " + ", ".join(f"{k} {v}" for k, v in r["sql_per_request"].items()),
            "",
            "| package (innermost frame) | % of samples |",
            "|---|---|",
            *[f"| {k} | {v} |" for k, v in list(r["profile"].get("by_package_self", {}).items())[:18]],
            "",
            "| function (anywhere in the stack) | % of samples |",
            "|---|---|",
            *[f"| `{k}` | {v} |" for k, v in r["profile"].get("inclusive", {}).items()],
            "",
            "| innermost frame | % |",
            "|---|---|",
            *[
                f"| `{k[:110]}` | {v} |"
                for k, v in list(r["profile"].get("top_leaf_frames", {}).items())[:15]
            ],
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument("--what", choices=["totp", "passkey", "password", "all"], default="totp")
    p.add_argument("--db", choices=["sqlite", "pg", "both"], default="sqlite")
    p.add_argument("--seconds", type=float, default=12)
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--pg-url", default=os.environ.get("TWOSTEP_BENCH_PG_URL", DEFAULT_PG_URL))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "profile")
    a = p.parse_args(argv)
    if shutil.which("py-spy") is None and not (Path(sys.executable).parent / "py-spy").exists():
        print("py-spy is missing: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    a.out = a.out.resolve()
    a.out.mkdir(parents=True, exist_ok=True)
    whats = ["totp", "passkey", "password"] if a.what == "all" else [a.what]
    dbs = ["sqlite", "pg"] if a.db == "both" else [a.db]
    for what in whats:
        for db in dbs:
            print(f"profiling {what} on {db} ...", flush=True)
            data = profile(what, db, a.seconds, a.rate, a.out, a.pg_url)
            (a.out / f"{what}-{db}.json").write_text(json.dumps(data, indent=2) + "\n")
            md = markdown(f"{what} on {db}", data)
            (a.out / f"{what}-{db}.md").write_text(md)
            print(md, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
