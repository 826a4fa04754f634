"""`twostep rotate-key`: every sealed secret re-sealed with a new key, the old key no longer needed.

Also the crash case: the next key written and the secrets re-sealed, but the key files not yet swapped.
"""

from __future__ import annotations

import base64
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.support import STRONG_PASSWORD, unique_username
from tests.support.server import Server
from twostep.core.secretbox import SecretBox, SecretBoxError, aad_for, generate_key
from twostep.keyfile import next_key_path, read_key, write_key
from twostep.services.keys import reseal_all
from twostep.storage.db import Database, make_engine

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def totp_code(secret: str, offset_seconds: float = 0) -> str:
    at = datetime.now(UTC) + timedelta(seconds=offset_seconds)
    out = subprocess.run(
        ["oathtool", "--totp", "-b", "--now", at.strftime("%Y-%m-%d %H:%M:%S UTC"), secret],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def enrol(client: httpx.Client, username: str) -> tuple[str, str, str]:
    """Sign up with an authenticator app, and leave a second enrolment pending.

    Returns the confirmed secret, the pending enrolment's id and its secret.
    """
    assert (
        client.post("/api/v1/accounts", json={"username": username, "password": STRONG_PASSWORD}).status_code
        == 201
    )
    assert client.post("/api/v1/login", json={"username": username, "password": STRONG_PASSWORD}).json() == {
        "status": "signed_in"
    }
    assert (
        client.post("/api/v1/verify-access", json={"password": STRONG_PASSWORD}).json()["status"]
        == "verified"
    )
    first = client.post("/api/v1/factors/totp", json={}).json()
    r = client.post(
        f"/api/v1/factors/totp/{first['enrollment_id']}/confirm",
        json={"name": "phone", "code": totp_code(first["secret"])},
    )
    assert r.status_code == 201, r.text
    pending = client.post("/api/v1/factors/totp", json={}).json()
    assert client.post("/api/v1/logout", json={}).status_code == 204
    return str(first["secret"]), str(pending["enrollment_id"]), str(pending["secret"])


def sign_in(server: Server, username: str, secret: str, offset_seconds: float) -> None:
    server.set_clock(offset_seconds)
    with server.client() as client:
        r = client.post("/api/v1/login", json={"username": username, "password": STRONG_PASSWORD})
        assert r.json()["status"] == "second_factor_required", r.text
        r = client.post("/api/v1/login/totp", json={"code": totp_code(secret, offset_seconds)})
        assert r.json() == {"status": "signed_in"}, r.text


def sealed_rows(data_dir: Path) -> dict[bytes, bytes]:
    """Associated data → sealed bytes, for every sealed secret, read straight from the SQLite file."""
    with sqlite3.connect(data_dir / "twostep.sqlite3") as db:
        out = {
            aad_for("factors", "totp_secret", fid): bytes(sealed)
            for fid, sealed in db.execute("SELECT id, totp_secret FROM factors WHERE totp_secret IS NOT NULL")
        }
        out.update(
            {
                aad_for("totp_enrollments", "secret", eid): bytes(sealed)
                for eid, sealed in db.execute("SELECT id, secret FROM totp_enrollments")
            }
        )
    db.close()
    return out


def b32(secret: bytes) -> str:
    return base64.b32encode(secret).decode().rstrip("=")


def rotate_key(server: Server) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twostep", "rotate-key"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_rotate_key_reseals_every_secret_and_sign_in_still_works(server: Server) -> None:
    username = unique_username("rot")
    with server.client() as client:
        secret, enrolment_id, pending_secret = enrol(client, username)
    server.stop()

    key_path = server.data_dir / "secret.key"
    old_text = key_path.read_text()
    old = SecretBox(read_key(key_path))
    before = sealed_rows(server.data_dir)
    factor_aads = [aad for aad in before if aad.startswith(b"twostep:factors:")]
    assert len(factor_aads) == 1 and len(before) == 2
    assert b32(old.open(before[factor_aads[0]], aad=factor_aads[0])) == secret

    done = rotate_key(server)
    assert done.returncode == 0, done.stderr
    assert "2 secrets re-sealed" in done.stdout

    assert key_path.read_text() != old_text
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert not next_key_path(key_path).exists()
    new = SecretBox(read_key(key_path))
    after = sealed_rows(server.data_dir)
    assert after.keys() == before.keys()
    for aad, sealed in after.items():
        with pytest.raises(SecretBoxError):
            old.open(sealed, aad=aad)
    assert b32(new.open(after[factor_aads[0]], aad=factor_aads[0])) == secret
    pending_aad = aad_for("totp_enrollments", "secret", enrolment_id)
    assert b32(new.open(after[pending_aad], aad=pending_aad)) == pending_secret

    server.start()
    sign_in(server, username, secret, 60)


def test_interrupted_rotation_keeps_sign_in_working_and_rotate_key_completes_it(server: Server) -> None:
    username = unique_username("rot")
    with server.client() as client:
        secret, _, _ = enrol(client, username)
    server.stop()

    # What rotate-key does first, then the re-sealing; the process "dies" before swapping the key files.
    key_path = server.data_dir / "secret.key"
    old_text = key_path.read_text()
    old = SecretBox(read_key(key_path))
    next_key = generate_key()
    write_key(next_key_path(key_path), next_key)
    db = Database(make_engine(f"sqlite:///{server.data_dir / 'twostep.sqlite3'}"))
    try:
        assert reseal_all(db, old=old, new=SecretBox(next_key)) == 2
    finally:
        db.dispose()
    assert key_path.read_text() == old_text
    for aad, sealed in sealed_rows(server.data_dir).items():
        with pytest.raises(SecretBoxError):
            old.open(sealed, aad=aad)

    # The server reads both key files: the secrets open.
    server.start()
    sign_in(server, username, secret, 60)
    server.stop()

    done = rotate_key(server)
    assert done.returncode == 0, done.stderr
    assert "2 secrets re-sealed" in done.stdout
    assert not next_key_path(key_path).exists()
    assert read_key(key_path) == next_key
    new = SecretBox(next_key)
    for aad, sealed in sealed_rows(server.data_dir).items():
        new.open(sealed, aad=aad)

    server.start()
    sign_in(server, username, secret, 120)
