"""H11: the test clock (TWOSTEP_ENABLE_TEST_CLOCK) cannot reach production and cannot break the server.

It is refused with an https origin (exit status 2, a message naming the setting), it is announced by a
warning at start-up, and its offset is bounded (ten years either way): out of range is 422, never a 500.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import STRONG_PASSWORD, unique_username
from tests.support.server import Server, free_port

pytestmark = pytest.mark.e2e

CLOCK = "/api/v1/_test/clock"
TEN_YEARS = 10 * 365 * 24 * 3600


def serve(data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TWOSTEP_")}
    clean.update(TWOSTEP_DATA_DIR=str(data_dir), **env)
    return subprocess.run(
        [sys.executable, "-m", "twostep", "serve", "--port", str(free_port())],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_H11_the_test_clock_with_an_https_origin_refuses_to_start(tmp_path: Path) -> None:
    done = serve(tmp_path, TWOSTEP_ENABLE_TEST_CLOCK="1", TWOSTEP_ORIGIN="https://accounts.example.com")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "TWOSTEP_ENABLE_TEST_CLOCK" in done.stderr
    assert "https" in done.stderr
    assert "Traceback" not in done.stderr
    # It stopped before touching anything: no database, no key.
    assert not (tmp_path / "twostep.sqlite3").exists()
    assert not (tmp_path / "secret.key").exists()


def test_H11_a_server_with_the_test_clock_warns_at_start_up(tmp_path: Path) -> None:
    with Server(tmp_path / "on") as on:
        assert "TWOSTEP_ENABLE_TEST_CLOCK is on" in on.log()
    with Server(tmp_path / "off", test_clock=False) as off:
        assert httpx.get(off.url + CLOCK, timeout=10).status_code == 404
        assert "TWOSTEP_ENABLE_TEST_CLOCK" not in off.log()


def test_H11_the_offset_is_bounded_and_an_out_of_range_one_is_422(tmp_path: Path) -> None:
    with Server(tmp_path) as server, server.client() as client:
        for offset in (1e12, -1e12, TEN_YEARS * 2, 1e308):
            r = client.post(CLOCK, json={"offset_seconds": offset})
            assert r.status_code == 422, r.text
            assert r.json()["error"] == "invalid_request"
        for raw in ("NaN", "Infinity", "-Infinity"):  # Python's JSON parser accepts these words
            r = client.post(
                CLOCK, content=f'{{"offset_seconds": {raw}}}', headers={"Content-Type": "application/json"}
            )
            assert r.status_code == 422, r.text
        assert client.get(CLOCK).json()["offset_seconds"] == 0
        # Every request still works after the refused offsets, and at the edge of the range too.
        for offset in (TEN_YEARS, -TEN_YEARS, 0):
            assert client.post(CLOCK, json={"offset_seconds": offset}).status_code == 200
            name = unique_username("h11")
            body = {"username": name, "password": STRONG_PASSWORD}
            assert client.post("/api/v1/accounts", json=body).status_code == 201
            assert client.post("/api/v1/login", json=body).json() == {"status": "signed_in"}
            assert client.get("/api/v1/session").status_code == 200
        assert "unexpected error" not in server.log()


def test_H11_an_out_of_range_offset_file_is_ignored(tmp_path: Path) -> None:
    """A data directory whose offset file holds what an older version let through still serves."""
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "test-clock-offset").write_text("1000000000000.0")
    with Server(tmp_path) as server, server.client() as client:
        assert client.get(CLOCK).json()["offset_seconds"] == 0
        assert client.get("/api/v1/session").status_code == 401
