"""`python -m bench.run --quick` end to end: the servers start, every sign-in of the load is a real one that
succeeds, and the JSON and the Markdown table are written. No timing is asserted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import require_or_skip

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
    meas = data["measurements"]
    for key in (
        "ref_1w",
        "p1_sqlite_1w",
        "p3_passkey_sqlite_1w",
        "ref_2w",
        "p5_sqlite_2w",
        "p2_password_sqlite_1w",
    ):
        assert meas[key]["rounds"], key
    # Every TOTP and passkey sign-in of the load was real and went through
    # (a fresh pending sign-in, a code or assertion never used before).
    for key in ("p1_sqlite_1w", "p3_passkey_sqlite_1w", "p5_sqlite_2w"):
        assert meas[key]["requests"] > 0, key
        assert meas[key]["valid"], (key, meas[key]["rounds"][0]["bad_samples"])
    assert meas["argon2_ref"]["rounds"][0]["parameters"] == {
        "type": "ID",
        "time_cost": 3,
        "memory_cost": 65536,
        "parallelism": 4,
    }

    table = (tmp_path / "latest.md").read_text()
    assert "| # | figure | value | reference | ratio | goal | met? |" in table
    for fig in ("P1", "P2", "P3", "P4", "P5", "P6", "P7"):
        assert f"| {fig} |" in table
