"""H12: every file twostep creates is 0600 and every directory it creates 0700, also in a data directory
that already exists with mode 0755 (the SQLite database, its -wal and -shm files, the writer lock, the key,
the outbox's .eml files, the test clock's file)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.api import Clients, fresh_step, login_totp, new_2fa_user, start_login
from tests.support.server import Server
from tests.support.totp import totp_code

pytestmark = pytest.mark.e2e


def modes(root: Path) -> dict[str, int]:
    """Path (relative to ``root``) → permission bits, for everything under ``root``."""
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in sorted(root.rglob("*"))}


def run(command: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "twostep", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_H12_a_data_directory_that_exists_with_0755_gets_private_files(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    os.chmod(data_dir, 0o755)
    server = Server(data_dir)
    server.log_path = tmp_path / "server.log"  # the test's own file, not twostep's
    with server, Clients(server) as clients:
        user = new_2fa_user(server, clients, email="h12@example.org")
        at = fresh_step(server, 2)
        assert login_totp(start_login(clients, user.username), totp_code(user.secret, at)).status_code == 200
        deadline = time.monotonic() + 20
        while not list(data_dir.glob("outbox/*.eml")) and time.monotonic() < deadline:
            time.sleep(0.2)
        seen = modes(data_dir)
    run("rotate-key", server.env)  # writes the next key, then swaps the key files
    run("migrate", server.env)
    after = modes(data_dir)

    names = set(seen)
    assert {"twostep.sqlite3", "twostep.sqlite3-wal", "twostep.sqlite3-shm", "secret.key"} <= names, seen
    assert "test-clock-offset" in names and "outbox" in names, seen
    assert any(name.endswith(".eml") for name in names), seen
    for found in (seen, after):
        for name, mode in found.items():
            expected = 0o700 if (data_dir / name).is_dir() else 0o600
            assert mode == expected, f"{name}: {mode:o} (all: { {k: f'{v:o}' for k, v in found.items()} })"
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o755  # the operator's own directory is left as it was


def test_H12_directories_twostep_creates_are_0700(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWOSTEP_")}
    env["TWOSTEP_DATA_DIR"] = str(data_dir)
    run("migrate", env)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    found = modes(data_dir)
    assert "twostep.sqlite3" in found
    assert all(mode == 0o600 for mode in found.values()), {k: f"{v:o}" for k, v in found.items()}
