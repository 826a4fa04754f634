"""F1 (issue 13): an allowed forward-auth request with a signed-in session and ten access rules, one worker,
SQLite and PostgreSQL, against the floor doing the same session read with Starlette and the standard driver.

`python -m bench.forward_auth [--rounds 3] [--duration 10] [--no-pg] [--pg-url URL] [--out DIR]`

twostep: `twostep serve --workers 1` with production settings and a configuration file of ten rules (the
request's host matches the last one, so every rule is looked at). One account, signed in with its password
through the API (a real session), in two groups. Each request: `GET /api/v1/forward-auth` with the session
cookie and `X-Original-URL: https://app.bench.test/dashboard?a=1&b=2`; a valid run answers 200 to every
request. The session's last-seen time is written at most once a minute, so a 10-second load is reads.

The floor: bench/floor_app.py's `GET /api/v1/forward-auth` (the same SELECT text as twostep's, compiled from
storage/sessions.py, the same liveness checks and the Remote-* headers; no rules, no middleware), in its
`sqlite-loop`/`sqlite-thread` and `pg-async`/`pg-thread` modes, on the same database. Load: Debian's `wrk`, 1
thread, 16 connections. Goal: twostep ≥ 70 % of the floor's requests/s (the better floor mode), p99 ≤ 10 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from bench import floor_app
from bench.servers import ROOT, Server, floor_server, twostep_server

RULES = "\n".join(
    [
        '[access]\ndefault_policy = "deny"\n',
        *(
            f'[[access.rules]]\ndomain = ["app{i}.other.test", "*.app{i}.other.test"]\n'
            f'resources = ["^/api/v{i}/", "^/admin"]\npolicy = "{"two_factor" if i % 2 else "one_factor"}"\n'
            for i in range(8)
        ),
        '[[access.rules]]\ndomain = ["app.bench.test"]\nresources = ["^/internal/"]\npolicy = "deny"\n',
        '[[access.rules]]\ndomain = ["*.bench.test", "app.bench.test"]\ngroups = ["staff"]\n'
        'policy = "one_factor"\n',
    ]
)
ORIGINAL_URL = "https://app.bench.test/dashboard?a=1&b=2"
PASSWORD = "correct horse battery staple"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def log(msg: str) -> None:
    print(f"[f1] {msg}", flush=True)


def wrk(url: str, cookie: str, duration: float, connections: int = 16) -> dict[str, Any]:
    """One wrk load; requests/s, latency percentiles (ms) and non-2xx answers."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration:g}s",
            "--latency",
            "-H",
            f"Cookie: twostep_session={cookie}",
            "-H",
            f"X-Original-URL: {ORIGINAL_URL}",
            "-H",
            "Accept: text/html",
            f"{url}/api/v1/forward-auth",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        found = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert found, out
        value, unit = float(found.group(1)), found.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert rps and total, out
    return {
        "rps": float(rps.group(1)),
        "requests": int(total.group(1)),
        "non_2xx": int(bad.group(1)) if bad else 0,
        "p50_ms": ms("50"),
        "p90_ms": ms("90"),
        "p99_ms": ms("99"),
    }


def signed_in_session(server: Server, database_url: str) -> tuple[str, str]:
    """An account signed in through the API (a real session) and put in two groups; (username, cookie)."""
    username = f"bench{os.getpid()}"
    with httpx.Client(base_url=server.url, timeout=60) as client:
        client.post("/api/v1/accounts", json={"username": username, "password": PASSWORD}).raise_for_status()
        r = client.post("/api/v1/login", json={"username": username, "password": PASSWORD})
        r.raise_for_status()
        cookie = r.cookies["twostep_session"]
    engine = create_engine(database_url)
    with engine.begin() as conn:
        account = conn.execute(
            text("SELECT id FROM accounts WHERE username = :u"), {"u": username}
        ).scalar_one()
        for group in ("staff", "ops"):
            conn.execute(
                text(
                    "INSERT INTO account_groups (account_id, name, added_at) "
                    "VALUES (:a, :n, CURRENT_TIMESTAMP)"
                ),
                {"a": account, "n": group},
            )
    engine.dispose()
    return username, cookie


def check_answer(server: Server, cookie: str, username: str) -> None:
    r = httpx.get(
        f"{server.url}/api/v1/forward-auth",
        headers={"Cookie": f"twostep_session={cookie}", "X-Original-URL": ORIGINAL_URL},
    )
    if r.status_code != 200 or r.headers.get("remote-user") != username:
        raise RuntimeError(f"{server.name}: {r.status_code} {dict(r.headers)} {r.text[:200]}")
    if r.headers.get("remote-groups") != "ops,staff":
        raise RuntimeError(f"{server.name}: Remote-Groups {r.headers.get('remote-groups')!r}")


def pg_database(pg_url: str, name: str, work: Path) -> str:
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = pg_url.rsplit("/", 1)[0] + "/" + name
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWOSTEP_")}
    env.update(TWOSTEP_DATABASE_URL=url, TWOSTEP_DATA_DIR=str(work / "pg-migrate"))
    subprocess.run(
        [sys.executable, "-m", "twostep", "migrate"], env=env, cwd=ROOT, check=True, capture_output=True
    )
    return url


def drop_pg(pg_url: str, name: str) -> None:
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def measure(database: str, work: Path, rounds: int, duration: float, pg_url: str | None) -> dict[str, Any]:
    differences = floor_app.lookup_differences()
    if differences:
        raise RuntimeError("the floor does not send twostep's statement: " + "; ".join(differences))
    data_dir = work / f"twostep-{database}"
    data_dir.mkdir(parents=True)
    config = work / "twostep.toml"
    config.write_text(RULES)
    url = pg_database(pg_url, "twostep_bench_f1", work) if pg_url else None
    server = twostep_server(
        f"twostep-{database}", data_dir=data_dir, workers=1, log_dir=work, database_url=url
    )
    server.env["TWOSTEP_CONFIG"] = str(config)
    server.start()
    floors: list[tuple[str, Server]] = []
    try:
        db_url = url or f"sqlite:///{data_dir / 'twostep.sqlite3'}"
        username, cookie = signed_in_session(server, db_url)
        check_answer(server, cookie, username)
        modes = ("pg-async", "pg-thread") if url else ("sqlite-loop", "sqlite-thread")
        for mode in modes:
            # The floor reads the same database with the same key file.
            floor = floor_server(
                f"floor-f1-{mode}", mode=mode, data_dir=data_dir, log_dir=work, database_url=url
            )
            floors.append((mode, floor.start()))
            check_answer(floor, cookie, username)
        targets = [("twostep", server), *floors]
        for _, target in targets:
            wrk(target.url, cookie, 2)  # warm-up
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in targets}
        for r in range(rounds):
            for name, target in targets:
                result = wrk(target.url, cookie, duration)
                runs[name].append(result)
                log(
                    f"{database} round {r + 1}: {name}: {result['rps']:.0f} req/s, "
                    f"p99 {result['p99_ms']:.2f} ms"
                )
        summary = {
            name: {
                "rps": statistics.median(x["rps"] for x in results),
                "p50_ms": statistics.median(x["p50_ms"] for x in results),
                "p99_ms": statistics.median(x["p99_ms"] for x in results),
                "non_2xx": sum(x["non_2xx"] for x in results),
                "rounds": results,
            }
            for name, results in runs.items()
        }
        best_floor = max((m for m, _ in floors), key=lambda m: summary[m]["rps"])
        twostep = summary["twostep"]
        return {
            "database": database,
            "rounds": rounds,
            "duration_s": duration,
            "summary": summary,
            "best_floor": best_floor,
            "ratio": twostep["rps"] / summary[best_floor]["rps"],
            "valid": all(s["non_2xx"] == 0 for s in summary.values()),
        }
    finally:
        for _, floor in floors:
            floor.stop()
        server.stop()
        if pg_url:
            drop_pg(pg_url, "twostep_bench_f1")


def markdown(results: list[dict[str, Any]], rounds: int, duration: float) -> str:
    lines = [
        "F1: allowed forward-auth request, signed-in session, ten rules, 1 worker; wrk 1 thread, "
        f"16 connections, {rounds} rounds of {duration:g} s, medians.",
        "",
        "| database | twostep req/s | p50 | p99 | floor (mode) req/s | twostep ÷ floor "
        "| goal ≥ 70 %, p99 ≤ 10 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for res in results:
        t = res["summary"]["twostep"]
        f = res["summary"][res["best_floor"]]
        met = res["ratio"] >= 0.7 and t["p99_ms"] <= 10
        verdict = ("met" if met else "not met") if res["valid"] else "invalid run (non-2xx answers)"
        lines.append(
            f"| {res['database']} | {t['rps']:,.0f} | {t['p50_ms']:.2f} ms | {t['p99_ms']:.2f} ms | "
            f"{f['rps']:,.0f} ({res['best_floor']}) | {res['ratio']:.0%} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def figure_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """F1's rows of `make bench`'s table (bench/report.py's shape): one per database."""
    rows = []
    for res in results:
        t = res["summary"]["twostep"]
        f = res["summary"][res["best_floor"]]
        met = res["ratio"] >= 0.7 and t["p99_ms"] <= 10
        rows.append(
            {
                "figure": "F1" if res["database"] == "sqlite" else "F1-pg",
                "name": f"allowed forward-auth request, ten rules ({res['database']}, 1 worker) vs the floor",
                "value": f"{t['rps']:,.0f}/s (p50 {t['p50_ms']:.1f} ms, p99 {t['p99_ms']:.1f} ms)",
                "reference": f"{f['rps']:,.0f}/s ({res['best_floor']}, p99 {f['p99_ms']:.1f} ms)",
                "value_number": t["rps"],
                "reference_number": f["rps"],
                "ratio": round(res["ratio"], 3),
                "goal": "≥ 70%, p99 ≤ 10 ms",
                "met": bool(met and res["valid"]),
                "valid": res["valid"],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.forward_auth", description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--no-pg", action="store_true")
    p.add_argument("--pg-url", default=os.environ.get("TWOSTEP_BENCH_PG_URL", DEFAULT_PG))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    a = p.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is needed (Debian package wrk)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="twostep-f1-"))
    results = [measure("sqlite", work, a.rounds, a.duration, None)]
    if not a.no_pg:
        results.append(measure("postgresql", work, a.rounds, a.duration, a.pg_url))
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "forward_auth.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results, a.rounds, a.duration)
    (a.out / "forward_auth.md").write_text(table)
    print(table)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
