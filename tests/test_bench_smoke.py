"""`python -m bench.run --quick` end to end: the servers start, every sign-in of the load is a real one that
succeeds, and the JSON and the Markdown table are written. No timing is asserted.

The floor of issue 16 (bench/floor_app.py) is part of the quick run; its statements are also checked here in
process against twostep's, on SQLite (values included) and on PostgreSQL."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bench import floor_app, seed, statements
from sqlalchemy import Engine, func, select

from tests.support import require_or_skip
from twostep.storage.tables import security_events, sessions

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.e2e


def test_quick_bench_writes_json_and_table(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        require_or_skip("wrk (Debian package)")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,  # about 40 s on an idle 2-core machine
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    data = json.loads((tmp_path / "latest.json").read_text())
    assert data["config"]["quick"] is True
    assert [f["figure"] for f in data["figures"]][:6] == ["P1", "P2", "P3", "P4", "P5", "P6"]
    # P7 (issue 11, H03): every password request of the burst was answered 201/200 or 503 busy.
    p7 = data["hash_memory"]["bounded"]
    assert set(p7["sign_ups"]) <= {"201", "503"} and "201" in p7["sign_ups"], p7
    assert p7["peak_mib"] > p7["baseline_mib"] > 0, p7
    assert "P7" in [f["figure"] for f in data["figures"]]
    # F1 (issue 13): forward authentication against its floor, every answer a 200 with Remote-User.
    (f1,) = [f for f in data["figures"] if f["figure"] == "F1"]
    assert f1["valid"] and f1["value_number"] > 0 and f1["reference_number"] > 0, f1
    assert "F1: allowed forward-auth request" in (tmp_path / "latest.md").read_text()
    meas = data["measurements"]
    for key in (
        "ref_1w",
        "p1_sqlite_1w",
        "p3_passkey_sqlite_1w",
        "ref_2w",
        "p5_sqlite_2w",
        "p2_password_sqlite_1w",
        "o1_token_sqlite_1w",
        "o2_userinfo_sqlite_1w",
    ):
        assert meas[key]["rounds"], key
    assert {"O1", "O2"} <= {f["figure"] for f in data["figures"]}
    # Every TOTP and passkey sign-in of the load was real and went through
    # (a fresh pending sign-in, a code or assertion never used before).
    for key in ("p1_sqlite_1w", "p3_passkey_sqlite_1w", "p5_sqlite_2w"):
        assert meas[key]["requests"] > 0, key
        assert meas[key]["valid"], (key, meas[key]["rounds"][0]["bad_samples"], meas[key]["failed_checks"])
    # Every ok answer made a signed-in session and a signed_in event (counted in the database after the load).
    for key in (
        "p1_sqlite_1w",
        "p3_passkey_sqlite_1w",
        "p5_sqlite_2w",
        "p2_password_sqlite_1w",
        "floor_sqlite_loop",
        "floor_sqlite_thread",
    ):
        made = meas[key]["real_signins"]
        assert made["sessions"] == made["events"] >= made["ok_answers"] > 0, (key, made)
        assert made["sessions"] <= made["ok_answers"] + made["unanswered"], (key, made)
    # The floor: real sign-ins, the same statements as twostep per traced request, twostep's answer.
    assert data["floor"]["sqlite"]["in_process"]["ok"], data["floor"]["sqlite"]["in_process"]
    assert len(data["floor"]["sqlite"]["twostep"]["statements"]) == 11
    for key in ("floor_sqlite_loop", "floor_sqlite_thread"):
        assert meas[key]["valid"], (key, meas[key]["failed_checks"], meas[key]["rounds"][0]["bad_samples"])
        assert meas[key]["statements"]["same"], meas[key]["statements"]
        assert meas[key]["statements"]["traced_requests"] > 0
        assert data["floor"]["answers"][key]["ok"], data["floor"]["answers"][key]
    figures = {f["figure"]: f for f in data["figures"]}
    assert figures["FL1"]["value_number"] == meas["p1_sqlite_1w"]["median"]["ok_rps"]
    assert figures["FL1"]["reference_number"] == meas["floor_sqlite_loop"]["median"]["ok_rps"]
    assert figures["FL2"]["ratio"] > 0 and figures["FL2"]["met"] in (True, False)
    assert meas["argon2_ref"]["rounds"][0]["parameters"] == {
        "type": "ID",
        "time_cost": 3,
        "memory_cost": 65536,
        "parallelism": 4,
    }

    table = (tmp_path / "latest.md").read_text()
    assert "| # | figure | value | reference | ratio | goal | met? |" in table
    for fig in ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "FL1", "FL2"):
        assert f"| {fig} |" in table
    assert "| floor, transaction in the event loop |" in table


def test_f1_floor_sends_twostep_session_lookup() -> None:
    """F1's floor (issue 13) sends the very statement twostep's forward authentication sends, on both
    databases, and reads its columns by the same names."""
    assert floor_app.lookup_differences() == []


def test_f1_floor_check_fails_when_the_statement_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        floor_app, "SQLITE_LOOKUP", floor_app.SQLITE_LOOKUP.replace("accounts.language, ", "")
    )
    assert any(d.startswith("sqlite:") for d in floor_app.lookup_differences())


def test_floor_runs_twostep_statements_with_the_same_values_on_sqlite(tmp_path: Path) -> None:
    """twostep (its app, in process) and the floor sign in the same accounts at the same time on two copies of
    one seeded database: the same statements with the same values, but the new session's token hash."""
    result = statements.check_floor_sqlite(tmp_path / "check")
    assert result["ok"], result["message"]
    cap = result["capture"]
    assert cap.lists_equal and cap.requests == 3
    assert cap.statements[0] == "BEGIN IMMEDIATE" and cap.statements[-1] == "COMMIT"
    assert len(cap.statements) == 11, cap.statements
    assert (cap.status, cap.body) == (200, '{"status":"signed_in"}')
    assert cap.set_cookie == "twostep_session=<token>; HttpOnly; Path=/; SameSite=lax"


def test_floor_check_fails_when_a_statement_or_a_value_differs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check can fail: another SQL text, another bound value, or a statement fewer."""
    monkeypatch.setattr(floor_app, "SQLITE_RESET", 'DELETE FROM throttles WHERE "key" = ?')
    result = statements.check_floor_sqlite(tmp_path / "text")
    assert not result["ok"] and "#9" in result["message"], result["message"]
    monkeypatch.undo()
    monkeypatch.setattr(floor_app, "CAP", 99)
    result = statements.check_floor_sqlite(tmp_path / "value")
    assert not result["ok"] and "#4" in result["message"], result["message"]
    expected = result["capture"].normalised
    assert statements.compare(expected, [[expected, 5]]) == (True, "same 11 statements")
    same, why = statements.compare(expected, [[expected, 5], [expected[:-2] + expected[-1:], 1]])
    assert not same and "ran 10 statements, twostep 11" in why


def test_floor_runs_twostep_statements_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """On PostgreSQL the floor's step (psycopg, the thread-pool variant's driver) sends the statements
    twostep's SQLAlchemy sends, and each sign-in makes a session and an event."""
    import psycopg

    cap = statements.capture_twostep(tmp_path / "twostep", database_url=postgres_url)
    assert cap.dialect == "postgresql" and cap.lists_equal
    # The per-address counter commits on its own before the ceremony's transaction (issue 16, the hot row).
    assert cap.statements[0].startswith("INSERT INTO rate_windows"), cap.statements
    assert cap.statements[1] == "BEGIN" and cap.statements[-1] == "COMMIT" and len(cap.statements) == 11

    floor_dir = tmp_path / "floor"
    engine = seed.engine_for(postgres_url)
    try:
        lines = seed.totp_lines(engine, seed.server_box(floor_dir), 3, prefix="floortestu", password_hash="x")
        before = _signins(engine)
        floor_app.load_key(floor_dir)
        pool: queue.Queue[psycopg.Connection] = queue.Queue()
        pool.put(psycopg.Connection.connect(postgres_url.replace("+psycopg", "", 1), autocommit=True))
        traces: list[list[str]] = []
        for token, body in lines:
            assert token is not None
            trace: list[str] = []
            step = floor_app.pg_step(
                floor_app.hash_token(token), json.loads(body)["code"], "127.0.0.1", "", datetime.now(UTC)
            )
            assert floor_app.run_pg_sync(pool, step, trace).token is not None
            traces.append([statements.normalise(s) for s in trace])
        pool.get().close()
        assert _signins(engine) == (before[0] + 3, before[1] + 3)
    finally:
        engine.dispose()
    assert statements.compare(cap.normalised, [[t, 1] for t in traces]) == (True, "same 11 statements")


def _signins(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        active = conn.execute(select(func.count()).select_from(sessions).where(sessions.c.kind == "active"))
        n_active = int(active.scalar_one())
        events = conn.execute(
            select(func.count()).select_from(security_events).where(security_events.c.type == "signed_in")
        )
        return n_active, int(events.scalar_one())
