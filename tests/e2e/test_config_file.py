"""The configuration file (TWOSTEP_CONFIG) through the real `twostep` command.

check-config accepts the example, shows where each value came from and never a secret; a bad file stops serve
and check-config with exit status 2 and one line naming the file and the line or key, never a traceback; a
server started with a file uses it, with the environment over the file and a flag over both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.server import CHEAP_ARGON2, Server, free_port
from twostep import config

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "twostep.example.toml"


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWOSTEP_")}
    env.update(TWOSTEP_DATA_DIR=str(data_dir), **extra)
    return env


def twostep(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twostep", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write(tmp_path: Path, text: str, name: str = "twostep.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def setting_line(output: str, name: str) -> list[str]:
    """The value and the source in one row of check-config's table."""
    for line in output.splitlines():
        if line.split("  ", 1)[0] == name:
            return [part.strip() for part in line.split("  ") if part.strip()][1:]
    raise AssertionError(f"{name} not in {output}")


def test_check_config_accepts_the_example_and_shows_no_secret(tmp_path: Path) -> None:
    env = clean_env(
        tmp_path / "data",
        TWOSTEP_CONFIG=str(EXAMPLE),
        TWOSTEP_DATABASE_URL="postgresql+psycopg://twostep:hunter2@db.internal/twostep",
        TWOSTEP_SMTP_URL="smtps://twostep:swordfish@mail.example.com:465",
    )
    done = twostep("check-config", env=env)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "hunter2" not in out + done.stderr and "swordfish" not in out + done.stderr
    assert setting_line(out, "database_url") == [
        "postgresql+psycopg://twostep:***@db.internal/twostep",
        "environment (TWOSTEP_DATABASE_URL)",
    ]
    assert setting_line(out, "smtp_url")[0] == "smtps://twostep:***@mail.example.com:465"
    assert setting_line(out, "origin") == ["https://auth.example.com", "file"]
    assert setting_line(out, "data_dir")[1] == "environment (TWOSTEP_DATA_DIR)"
    assert setting_line(out, "mail_from") == ["twostep <twostep@localhost>", "default"]
    assert setting_line(out, "access.default_policy") == ["deny", "file"]
    rules = [line.strip() for line in out.splitlines() if line.strip().startswith("access.rules[")]
    assert len(rules) == 6
    assert rules[0].startswith("access.rules[0]: domain status.example.com; resources ^/healthz$")
    assert rules[2] == "access.rules[2]: domain *.example.com; groups admins; policy two_factor"
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert warnings == []
    assert out.rstrip().endswith("the configuration is valid")
    # It touched nothing: no data directory, no database, no key.
    assert not (tmp_path / "data").exists()


def test_check_config_shows_file_environment_and_flag_precedence(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = 9000\nworkers = 3\nrate_limit_per_minute = 7\nhost = "0.0.0.0"\n')
    env = clean_env(tmp_path, TWOSTEP_CONFIG=str(path), TWOSTEP_PORT="9100", TWOSTEP_WORKERS="5")
    done = twostep("check-config", "--workers", "6", env=env)
    assert done.returncode == 0, done.stderr
    assert setting_line(done.stdout, "port") == ["9100", "environment (TWOSTEP_PORT)"]
    assert setting_line(done.stdout, "workers") == ["6", "flag (--workers)"]
    assert setting_line(done.stdout, "rate_limit_per_minute") == ["7", "file"]
    assert setting_line(done.stdout, "host") == ["0.0.0.0", "file"]
    assert setting_line(done.stdout, "issuer") == ["twostep", "default"]
    assert "access rules: none (one_factor for every host)" in done.stdout


BAD = [
    (
        'origin = "https://auth.example.com"\nport = \n',
        "{path}, line 2, column 8: not valid TOML: Invalid value",
    ),
    ("prot = 8000\n", "{path}: prot: unknown key (did you mean port?)"),
    ('port = "8000"\n', "{path}: port: must be an integer, not a string"),
    (
        '[[access.rules]]\ndomain = ["a.example.com"]\npolicy = "deny"\n'
        '[[access.rules]]\ndomain = ["b.example.com"]\npolicy = "deny"\n'
        '[[access.rules]]\ndomain = ["c.example.com"]\npolicy = "allow"\n',
        "{path}: access.rules[2].policy: Input should be 'bypass', 'one_factor', 'two_factor' or 'deny'",
    ),
    (
        '[[access.rules]]\ndomain = ["a.example.com"]\nresources = ["^/(api"]\npolicy = "deny"\n',
        "{path}: access.rules[0].resources[0]: '^/(api' is not a valid regular expression: missing ),",
    ),
    ('[access]\ndefault_policy = "maybe"\n', "{path}: access.default_policy: Input should be 'bypass'"),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_a_bad_file_stops_serve_and_check_config_with_status_2_naming_file_and_line_or_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    data_dir = tmp_path / "data"
    env = clean_env(data_dir, TWOSTEP_CONFIG=str(path), **CHEAP_ARGON2)
    for args in (("check-config",), ("serve", "--port", str(free_port()))):
        done = twostep(*args, env=env)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        lines = done.stderr.splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("twostep: configuration refused: " + expected.format(path=path)), lines
        assert "Traceback" not in done.stderr
        assert done.stdout == ""
    # serve stopped before creating anything.
    assert not data_dir.exists()


def test_a_missing_file_stops_serve_with_status_2(tmp_path: Path) -> None:
    env = clean_env(tmp_path, TWOSTEP_CONFIG=str(tmp_path / "nowhere.toml"))
    done = twostep("serve", "--port", str(free_port()), env=env)
    assert done.returncode == 2
    missing = tmp_path / "nowhere.toml"
    assert (
        done.stderr
        == f"twostep: configuration refused: {missing}: cannot be read: No such file or directory\n"
    )


def test_check_config_warns_about_forwarding_from_an_untrusted_peer_and_still_exits_0(tmp_path: Path) -> None:
    path = write(tmp_path, 'trusted_proxies = ["10.0.0.5"]\n')
    env = clean_env(tmp_path, TWOSTEP_CONFIG=str(path))
    done = twostep("check-config", env=env)
    assert done.returncode == 0 and "no warnings" in done.stdout
    config.record_untrusted_forwarding(tmp_path, "192.0.2.9")
    done = twostep("check-config", env=env)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stdout.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1
    assert "X-Forwarded-For from 192.0.2.9" in warnings[0] and "trusted_proxies" in warnings[0]
    # The flag wins over the file here too: with the peer trusted, nothing to warn about.
    done = twostep("check-config", "--trusted-proxies", "192.0.2.0/24", env=env)
    assert done.returncode == 0 and "no warnings" in done.stdout


def test_check_config_warns_about_open_signup_with_access_rules(tmp_path: Path) -> None:
    path = write(tmp_path, '[[access.rules]]\ndomain = ["localhost"]\npolicy = "one_factor"\n')
    done = twostep("check-config", env=clean_env(tmp_path, TWOSTEP_CONFIG=str(path)))
    assert done.returncode == 0, done.stderr
    assert 'warning: signup is "open" while access rules exist' in done.stdout
    done = twostep("check-config", env=clean_env(tmp_path, TWOSTEP_CONFIG=str(path), TWOSTEP_SIGNUP="closed"))
    assert done.returncode == 0, done.stderr
    assert "signup is" not in done.stdout and "not yet in effect" not in done.stdout


# --- a running server uses the file ----------------------------------------------------------------------


def file_server(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Server:
    """A test server whose rate limit is left to the file (the test harness sets it in the environment)."""
    path = write(tmp_path, text, name="server.toml")
    server = Server(tmp_path / "data", env={"TWOSTEP_CONFIG": str(path), **(env or {})})
    if "TWOSTEP_RATE_LIMIT_PER_MINUTE" not in (env or {}):
        del server.env["TWOSTEP_RATE_LIMIT_PER_MINUTE"]
    return server


def burst(server: Server, count: int) -> list[int]:
    with server.client() as client:
        # One second into a minute, so that the burst falls in one window of the limit.
        server.set_clock(60 - time.time() % 60 + 1)
        return [client.post("/api/v1/login/passkey/options", json={}).status_code for _ in range(count)]


def test_a_server_started_with_a_file_uses_its_rate_limit(tmp_path: Path) -> None:
    with file_server(tmp_path, "rate_limit_per_minute = 3\n") as server:
        assert burst(server, 5) == [200, 200, 200, 429, 429]


def test_the_environment_wins_over_the_file_in_a_running_server(tmp_path: Path) -> None:
    with file_server(
        tmp_path, "rate_limit_per_minute = 3\n", env={"TWOSTEP_RATE_LIMIT_PER_MINUTE": "0"}
    ) as server:
        assert burst(server, 6) == [200] * 6


@contextmanager
def serving(env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "twostep", "serve", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def answers(port: int, proc: subprocess.Popen[bytes], timeout: float = 40) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=1).status_code == 200
        except httpx.HTTPError:
            time.sleep(0.1)
    return False


def test_serve_listens_where_the_file_says_unless_the_environment_or_a_flag_says_otherwise(
    tmp_path: Path,
) -> None:
    file_port, env_port, flag_port = free_port(), free_port(), free_port()
    path = write(tmp_path, f'host = "127.0.0.1"\nport = {file_port}\n')
    env = clean_env(tmp_path / "data", TWOSTEP_CONFIG=str(path), **CHEAP_ARGON2)
    with serving(env) as proc:
        assert answers(file_port, proc)
    with serving({**env, "TWOSTEP_PORT": str(env_port)}) as proc:
        assert answers(env_port, proc)
    with serving({**env, "TWOSTEP_PORT": str(env_port)}, "--port", str(flag_port)) as proc:
        assert answers(flag_port, proc)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{file_port}/api/v1/openapi.json", timeout=1)
