"""Data at rest: after enrolment, sign-ins and verify access, no file of the data directory (the SQLite
database and its -wal/-shm files, the outbox, the log, the key file) holds a TOTP secret, a recovery code or
the password in any usual encoding (SEC-24, SEC-31)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.api import (
    API,
    Clients,
    begin_totp,
    expect,
    fresh_step,
    login_recovery,
    login_totp,
    new_2fa_user,
    start_login,
    verify_password,
    verify_recovery,
    verify_totp,
)
from tests.support.server import Server
from tests.support.totp import PERIOD, secret_bytes, totp_code, wrong_code

pytestmark = pytest.mark.e2e


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Server]:
    """A server of its own, so that every file of its data directory belongs to this test."""
    with Server(tmp_path / "data") as srv:
        yield srv


def secret_needles(secret: str) -> tuple[list[bytes], list[bytes]]:
    """(case-insensitive needles, exact needles) for a base32 TOTP secret."""
    raw = secret_bytes(secret)
    spaced = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
    folded = [secret.encode(), spaced.encode(), raw.hex().encode()]
    exact = [raw]
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        exact += [encoded, encoded.rstrip(b"=")]
    exact += [secret.encode("utf-16-le"), secret.encode("utf-16-be")]
    return folded, exact


def code_needles(code: str) -> list[bytes]:
    """Case-insensitive needles for a recovery code: with and without hyphens, and its 14-character secret
    part (the 2-character selector is stored in clear by design, and is too short to search for)."""
    bare = code.replace("-", "")
    return [code.encode(), bare.encode(), code.replace("-", " ").encode(), bare[2:].encode()]


def password_needles(password: str) -> list[bytes]:
    return [password.encode("utf-8"), password.encode("utf-16-le"), password.encode("utf-16-be")]


def scan(data_dir: Path, folded: list[bytes], exact: list[bytes]) -> list[str]:
    """Every (file, needle) hit; folded needles are matched case-insensitively."""
    hits = []
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    for path in files:
        content = path.read_bytes()
        lowered = content.lower()
        for needle in folded:
            if needle.lower() in lowered:
                hits.append(f"{path.name}: {needle!r}")
        for needle in exact:
            if needle in content:
                hits.append(f"{path.name}: {needle!r}")
    return hits


def test_no_secret_code_or_password_in_the_data_directory_sec24_sec31(
    own_server: Server, tmp_path: Path
) -> None:
    """SEC-24, SEC-31: scan every file of the data directory (while the server runs, with the -wal and
    -shm files, and again after it stopped) for the TOTP secrets (base32 any case, raw, hex, base64), every
    recovery code (with and without hyphens, any case) and the password (UTF-8, UTF-16) → none found."""
    server = own_server
    email = f"owner-{time.time_ns()}@example.org"
    with Clients(server) as clients:
        user = new_2fa_user(server, clients, email=email)
        second = user.add_totp("Tablet")
        first_codes = list(user.recovery_codes)
        left_pending = begin_totp(user.client).secret  # an enrolment never confirmed
        at = fresh_step(server, 2)
        expect(login_totp(start_login(clients, user.username), totp_code(user.secret, at)), 200)
        expect(login_recovery(start_login(clients, user.username), first_codes[0]), 200)
        failing = start_login(clients, user.username)
        expect(login_totp(failing, wrong_code(user.secret, at)), 401)
        verify_password(user.client)
        expect(verify_totp(user.client, totp_code(second.secret, at + PERIOD)), 200)
        new_codes = expect(user.client.post(f"{API}/recovery-codes", json={}), 201)["recovery_codes"]
        verify_password(user.client)
        expect(verify_recovery(user.client, new_codes[3]), 200)
        time.sleep(2)  # let the outbox be written to files

    folded: list[bytes] = []
    exact: list[bytes] = []
    for secret in (user.secret, second.secret, left_pending):
        f, e = secret_needles(secret)
        folded += f
        exact += e
    for code in first_codes + new_codes:
        folded += code_needles(code)
    exact += password_needles(user.password)

    data_dir = server.data_dir
    names = {p.name for p in data_dir.rglob("*") if p.is_file()}
    assert {"twostep.sqlite3", "twostep.sqlite3-wal", "twostep.sqlite3-shm"} <= names, names
    assert any(name.endswith(".eml") for name in names), names  # notifications were written
    # The scan does find what is stored in clear (the username and the e-mail address).
    assert scan(data_dir, [user.username.encode(), email.encode()], [])
    assert scan(data_dir, folded, exact) == []

    server.stop()
    assert scan(data_dir, folded, exact) == []
    assert scan(data_dir, [user.username.encode()], [])
