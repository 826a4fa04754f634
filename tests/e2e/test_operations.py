"""Operations with real `twostep serve` processes (docs/api.md "Operations", docs/operations.md): metrics
summed over workers, JSON logs on stderr, online backups while serving, start-up on a data directory that
cannot be written, the systemd unit. The database outage and graceful shutdown: test_operations_outage.py."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.api.test_operations import samples, value
from tests.support import STRONG_PASSWORD, unique_username
from tests.support.api import API, expect, login, parallel, signup
from tests.support.server import CHEAP_ARGON2, Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def twostep(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twostep", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def sign_up_and_in(server: Server) -> str:
    # A client of its own: a new connection, which either worker may accept.
    with server.client() as client:
        username = signup(client)
        assert login(client, username) == {"status": "signed_in"}
    return username


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(f"{server.url}/metrics", timeout=10)
    assert r.status_code == 200, r.text
    return samples(r.text)


def test_metrics_are_summed_over_workers_and_start_from_zero(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", workers=2)
    with server:
        scrape(server)  # the directory is there and readable before any sign-in
        parallel([lambda: sign_up_and_in(server) for _ in range(16)], workers=8)
        with server.client() as client:
            for _ in range(3):
                wrong = {"username": unique_username(), "password": "wrong " + STRONG_PASSWORD}
                expect(client.post(f"{API}/login", json=wrong), 401)
        # Each scrape, whichever worker answers it, sums every worker's counters.
        for _ in range(6):
            scraped = scrape(server)
            assert value(scraped, "twostep_sign_ins_total", method="password", outcome="succeeded") == 16
            assert value(scraped, "twostep_sign_ins_total", method="password", outcome="failed") == 3
        pids = {p.name.split("_")[1] for p in (server.data_dir / "metrics").glob("counter_*.db")}
        assert len(pids) >= 2, "both workers counted (one file of counters each)"
    with server:  # a new start: the files of the last run are gone
        scraped = scrape(server)
        assert value(scraped, "twostep_sign_ins_total", method="password", outcome="succeeded") == 0


def test_metrics_are_404_to_a_peer_outside_metrics_from(tmp_path: Path) -> None:
    with Server(tmp_path / "data", env={"TWOSTEP_METRICS_FROM": "192.0.2.0/24"}) as server:
        r = httpx.get(f"{server.url}/metrics", timeout=10)
        assert r.status_code == 404 and r.json()["error"] == "not_found"
        assert httpx.get(f"{server.url}/healthz", timeout=10).json() == {"status": "ok"}


def test_json_logs_one_object_a_line_with_request_ids_and_security_events(tmp_path: Path) -> None:
    env = {"TWOSTEP_LOG_FORMAT": "json", "TWOSTEP_LOG_LEVEL": "info"}
    wrong = "this is not the password"
    with Server(tmp_path / "data", env=env) as server:
        with server.client() as client:
            username = signup(client)
            r = client.post(f"{API}/login", json={"username": username, "password": wrong})
            assert r.status_code == 401
            rid = r.headers["x-request-id"]
            client.get("/healthz")
    text = server.log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON
    assert all({"time", "level", "message"} <= set(line) for line in lines)
    access = [
        line
        for line in lines
        if line.get("logger") == "twostep.access" and line["path"] != "/api/v1/openapi.json"  # start-up poll
    ]
    (login_line,) = [line for line in access if line["request_id"] == rid]
    assert login_line["route"] == "/api/v1/login" and login_line["status"] == 401
    assert isinstance(login_line["latency_ms"], int | float)
    # One access line per request: the sign-up, the sign-in (the probe is DEBUG), and uvicorn's is off.
    assert len(access) == 2, access
    assert not [line for line in lines if line.get("logger") == "uvicorn.access"]
    (event,) = [line for line in lines if line.get("event") == "password_failed"]
    assert event["request_id"] == rid and event["client_ip"] == "127.0.0.1"
    assert isinstance(event["account_id"], int)
    assert wrong not in text and STRONG_PASSWORD not in text and username not in json.dumps(event)


def test_text_logs_stay_readable_by_default(tmp_path: Path) -> None:
    with Server(tmp_path / "data", env={"TWOSTEP_LOG_LEVEL": "info"}) as server, server.client() as client:
        rid = client.get("/api/v1/session").headers["x-request-id"]
    text = server.log_path.read_text()
    assert "GET /api/v1/session 401" in text
    assert not text.lstrip().startswith("{")
    assert rid  # returned even when the text line does not show it


def test_backup_while_serving_is_consistent_and_complete(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", workers=2)
    with server:
        before = [sign_up_and_in(server) for _ in range(3)]
        stop = threading.Event()
        during: list[str] = []

        def keep_signing_up() -> None:
            while not stop.is_set():
                during.append(sign_up_and_in(server))

        writers = [threading.Thread(target=keep_signing_up) for _ in range(3)]
        for t in writers:
            t.start()
        try:
            copies = []
            for i in range(3):
                target = tmp_path / f"backup-{i}.sqlite3"
                done = twostep("backup", str(target), env=server.env)
                assert done.returncode == 0, done.stderr
                assert "integrity ok" in done.stdout
                copies.append(target)
        finally:
            stop.set()
            for t in writers:
                t.join()
        assert during, "sign-ups went on while the copies were made"
        for copy in copies:
            assert (copy.stat().st_mode & 0o777) == 0o600
            assert not Path(f"{copy}-wal").exists()
            db = sqlite3.connect(copy)
            try:
                assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
                names = {row[0] for row in db.execute("SELECT username FROM accounts")}
                # Every account of before the copy; every session row's account is in it (one moment).
                assert set(before) <= names
                orphans = db.execute(
                    "SELECT COUNT(*) FROM sessions WHERE account_id NOT IN (SELECT id FROM accounts)"
                ).fetchone()
                assert orphans == (0,)
            finally:
                db.close()
        # Nothing of the key in the copy.
        key = (server.data_dir / "secret.key").read_bytes().strip()
        assert key not in copies[0].read_bytes()


def test_backup_restores_into_a_working_server(tmp_path: Path) -> None:
    server = Server(tmp_path / "data")
    with server:
        username = sign_up_and_in(server)
        copy = tmp_path / "copy.sqlite3"
        assert twostep("backup", str(copy), env=server.env).returncode == 0
    restored = tmp_path / "restored"
    restored.mkdir(mode=0o700)
    shutil.copy(copy, restored / "twostep.sqlite3")
    shutil.copy(server.data_dir / "secret.key", restored / "secret.key")
    with Server(restored) as again, again.client() as client:
        assert login(client, username) == {"status": "signed_in"}


def test_backup_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    server = Server(tmp_path / "data")
    with server:
        sign_up_and_in(server)
    target = tmp_path / "exists.sqlite3"
    target.write_bytes(b"keep me")
    refused = twostep("backup", str(target), env=server.env)
    assert refused.returncode == 2
    assert "exists" in refused.stderr and "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert target.read_bytes() == b"keep me"
    forced = twostep("backup", "--force", str(target), env=server.env)
    assert forced.returncode == 0, forced.stderr
    assert sqlite3.connect(target).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_backup_with_postgresql_says_pg_dump(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWOSTEP_")}
    env.update(
        TWOSTEP_DATA_DIR=str(tmp_path),
        TWOSTEP_DATABASE_URL="postgresql+psycopg://twostep@127.0.0.1:9/twostep",
    )
    done = twostep("backup", str(tmp_path / "x"), env=env)
    assert done.returncode == 2
    assert "pg_dump" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()


# --- start-up on a data directory that cannot be written ------------------------------------------------


def _in_mount_namespace(setup: str, data_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`twostep serve` in a mount namespace of its own where ``setup`` (shell) prepared ``data_dir``: a
    read-only or a full file system, without root on the host (a user namespace maps us to root)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is needed to mount a read-only or full file system")
    script = f'{setup} && exec "$0" -m twostep serve --port 1'
    args = [unshare, "--map-root-user", "--mount", "sh", "-c", script, sys.executable]
    probe = subprocess.run([unshare, "--map-root-user", "--mount", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"user and mount namespaces are not available here: {probe.stderr!r}")
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)


def _serve_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWOSTEP_")}
    env.update(TWOSTEP_DATA_DIR=str(data_dir), **CHEAP_ARGON2)
    return env


def test_start_up_on_a_read_only_data_directory_exits_2_with_a_message(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    done = _in_mount_namespace(
        f"mount -t tmpfs -o ro,size=1m tmpfs {data_dir}", data_dir, _serve_env(data_dir)
    )
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert f"cannot write to the data directory {data_dir}" in done.stderr
    assert "Read-only file system" in done.stderr and "Traceback" not in done.stderr


def test_start_up_on_a_full_disk_exits_2_with_a_message(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    fill = (
        f"mount -t tmpfs -o size=256k tmpfs {data_dir}"
        f" && (dd if=/dev/zero of={data_dir}/fill bs=4k 2>/dev/null; true)"
    )
    done = _in_mount_namespace(fill, data_dir, _serve_env(data_dir))
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "No space left on device" in done.stderr and "free some space" in done.stderr
    assert "Traceback" not in done.stderr


def test_start_up_where_a_file_stands_for_the_data_directory_exits_2(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.write_text("not a directory")
    done = subprocess.run(
        [sys.executable, "-m", "twostep", "serve", "--port", "1"],
        env=_serve_env(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "cannot write to the data directory" in done.stderr and "Traceback" not in done.stderr


# --- the systemd unit ------------------------------------------------------------------------------------


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = REPO / "docs" / "twostep.service"
    text = unit.read_text()
    for option in (
        "User=twostep",
        "StateDirectory=twostep",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "TWOSTEP_DATA_DIR=/var/lib/twostep",
        "KillSignal=SIGTERM",
    ):
        assert option in text, option
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (not a required part)")
    # ExecStart must name an executable that exists where it is verified: a copy that points at this one.
    copy = tmp_path / "twostep.service"
    copy.write_text(text.replace("/usr/local/bin/twostep", str(Path(sys.executable).parent / "twostep")))
    done = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if "twostep.service" in line]
    assert complaints == [], complaints
