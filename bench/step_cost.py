"""`python -m bench.step_cost [--db pg|sqlite] [-n N]`: what one TOTP sign-in step costs, in process, one at a
time: the service (`sign_in.totp_step`) called directly in one thread, N times, on a database of its own.

Per step it reports the wall time (on PostgreSQL mostly round trips: each statement waits for the server),
the process's CPU, and on PostgreSQL the CPU of the server's backends of that database (from /proc: the
bench runs on the database's machine), and the statements and round trips the driver made (SQLAlchemy's
``before_cursor_execute`` event and the transactions' bounds). Unlike the loads of
``bench.run`` nothing else competes for the cores, so a change of a few round trips or of 0.1 ms of CPU per
step shows above the noise of a shared two-core machine; ``bench.run`` remains the measure of the goals.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

from bench import seed
from bench.servers import cpu_seconds

PG_URL = os.environ.get("TWOSTEP_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _backend_cpu(engine: Any, database: str) -> float:
    """CPU seconds of every server backend of ``database`` (``servers.cpu_seconds``: /proc)."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": database})
        return cpu_seconds([int(r[0]) for r in rows])


def measure(db: str, n: int, rounds: int) -> dict[str, Any]:
    from twostep.app import create_app
    from twostep.config import Settings
    from twostep.services import sign_in
    from twostep.services.context import Client

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        database_url = None
        admin = None
        name = "twostep_bench_step_cost"
        if db == "pg":
            admin = seed.engine_for(PG_URL.rsplit("/", 1)[0] + "/postgres").execution_options(
                isolation_level="AUTOCOMMIT"
            )
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                conn.execute(text(f"CREATE DATABASE {name}"))
            database_url = PG_URL.rsplit("/", 1)[0] + "/" + name
            from twostep.storage.migrate import upgrade

            migration_engine = seed.engine_for(database_url)
            upgrade(migration_engine)
            migration_engine.dispose()
        settings = Settings(
            data_dir=data_dir,
            database_url=database_url,
            origin="http://localhost:8000",
            log_level="warning",
            rate_limit_per_minute=10**9,
        )
        app = create_app(settings)
        ctx = app.state.web.ctx
        engine = ctx.db.engine
        seed_engine = seed.engine_for(settings.resolved_database_url)
        box = seed.server_box(data_dir)
        counts = {"statements": 0, "begins": 0, "commits": 0}

        def on_execute(*_: Any) -> None:
            counts["statements"] += 1

        event.listen(engine, "before_cursor_execute", on_execute)
        event.listen(engine, "begin", lambda *_: counts.__setitem__("begins", counts["begins"] + 1))
        event.listen(engine, "commit", lambda *_: counts.__setitem__("commits", counts["commits"] + 1))
        client = Client(ip="127.0.0.1", user_agent="bench")
        results = []
        try:
            for _ in range(rounds + 1):  # the first round warms up (connections, compiled statements)
                lines = seed.totp_lines(
                    seed_engine, box, n, prefix=f"costu{time.monotonic_ns()}", password_hash="x"
                )
                for k in counts:
                    counts[k] = 0
                backend0 = _backend_cpu(admin, name) if admin is not None else 0.0
                cpu0, wall0 = time.process_time(), time.perf_counter()
                for token, body in lines:
                    result = sign_in.totp_step(ctx, token=token, code=json.loads(body)["code"], client=client)
                    assert result.token
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                backend = (_backend_cpu(admin, name) - backend0) if admin is not None else 0.0
                results.append(
                    {
                        "wall_ms": 1000 * wall / n,
                        "cpu_ms": 1000 * cpu / n,
                        "backend_cpu_ms": 1000 * backend / n,
                        **{k: v / n for k, v in counts.items()},
                    }
                )
        finally:
            ctx.db.dispose()
            seed_engine.dispose()
            if admin is not None:
                with admin.connect() as conn:
                    conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                admin.dispose()
    measured = results[1:]
    return {
        "db": db,
        "steps_per_round": n,
        "rounds": rounds,
        **{k: round(statistics.median(r[k] for r in measured), 3) for k in measured[0]},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", choices=["pg", "sqlite"], default="pg")
    p.add_argument("-n", type=int, default=1000, help="steps per round")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    print(json.dumps(measure(a.db, a.n, a.rounds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
