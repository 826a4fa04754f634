"""H17: behind a proxy that is not in TWOSTEP_TRUSTED_PROXIES, every client has the proxy's address. A request
that carries X-Forwarded-For from such a peer is logged as a warning naming the setting, once per worker, and
`twostep serve --help` names the setting too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import STRONG_PASSWORD, unique_username
from tests.support.api import API
from tests.support.server import Server

pytestmark = pytest.mark.e2e


def warnings_in(server: Server) -> list[str]:
    return [line for line in server.log().splitlines() if "X-Forwarded-For" in line]


def exercise(server: Server, forwarded_for: str) -> None:
    """Sign up, sign in and look around, every request with an X-Forwarded-For header."""
    with server.client(headers={"X-Forwarded-For": forwarded_for}) as client:
        for _ in range(3):
            body = {"username": unique_username("h17"), "password": STRONG_PASSWORD}
            assert client.post(f"{API}/accounts", json=body).status_code == 201
            assert client.post(f"{API}/login", json=body).json() == {"status": "signed_in"}
            assert client.get(f"{API}/security-events").status_code == 200
            assert client.get(f"{API}/session").status_code == 200


def test_H17_forwarded_requests_from_an_untrusted_peer_are_warned_about_once(tmp_path: Path) -> None:
    with Server(tmp_path / "unset") as server:
        exercise(server, "203.0.113.7")
        exercise(server, "198.51.100.1")
        lines = warnings_in(server)
        assert len(lines) == 1, server.log()
        assert "TWOSTEP_TRUSTED_PROXIES" in lines[0] and "WARNING" in lines[0]
        assert "127.0.0.1" in lines[0]
    # The server noted it in its data directory, so that the operator's `twostep check-config` says it too.
    checked = twostep(tmp_path / "unset", "check-config")
    assert checked.returncode == 0, checked.stderr
    assert "X-Forwarded-For" in checked.stdout and "127.0.0.1" in checked.stdout, checked.stdout

    with Server(tmp_path / "elsewhere", env={"TWOSTEP_TRUSTED_PROXIES": "192.0.2.0/24"}) as server:
        exercise(server, "203.0.113.7")
        lines = warnings_in(server)
        assert len(lines) == 1, server.log()
        assert "127.0.0.1 is not in TWOSTEP_TRUSTED_PROXIES" in lines[0]


def test_H17_no_warning_from_a_trusted_proxy_or_without_forwarding(tmp_path: Path) -> None:
    with Server(tmp_path / "trusted", env={"TWOSTEP_TRUSTED_PROXIES": "127.0.0.1"}) as server:
        exercise(server, "203.0.113.7")
        assert warnings_in(server) == []
    with Server(tmp_path / "direct") as server, server.client() as client:
        body = {"username": unique_username("h17"), "password": STRONG_PASSWORD}
        assert client.post(f"{API}/accounts", json=body).status_code == 201
        assert client.post(f"{API}/login", json=body).status_code == 200
        assert warnings_in(server) == []


def twostep(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWOSTEP_")}
    env["TWOSTEP_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "twostep", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_H17_serve_names_the_setting_and_takes_it_as_a_flag(tmp_path: Path) -> None:
    help_text = twostep(tmp_path, "serve", "--help")
    assert help_text.returncode == 0
    assert "TWOSTEP_TRUSTED_PROXIES" in help_text.stdout
    assert "--trusted-proxies" in help_text.stdout
    refused = twostep(tmp_path, "serve", "--trusted-proxies", "not-an-address")
    assert refused.returncode == 2
    assert "TWOSTEP_TRUSTED_PROXIES" in refused.stderr and "not-an-address" in refused.stderr
