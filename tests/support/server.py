"""A real `twostep serve` process for end-to-end tests, spoken to over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import httpx

CHEAP_ARGON2 = {
    "TWOSTEP_ARGON2_TIME_COST": "1",
    "TWOSTEP_ARGON2_MEMORY_COST": "8",
    "TWOSTEP_ARGON2_PARALLELISM": "1",
}


class Target(Protocol):
    """A running twostep the tests speak to: a `twostep serve` subprocess (``Server``) or the app in this
    process (``tests.support.inprocess.AppServer``)."""

    url: str
    data_dir: Path
    database_url: str | None

    def client(self, **kwargs: Any) -> httpx.Client: ...

    def set_clock(self, offset_seconds: float) -> None: ...


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """Starts `python -m twostep serve` with its own data directory; `url` is http://localhost:PORT."""

    def __init__(
        self,
        data_dir: Path,
        *,
        database_url: str | None = None,
        workers: int = 1,
        port: int | None = None,
        env: dict[str, str] | None = None,
        test_clock: bool = True,
        cheap_argon2: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://localhost:{self.port}"
        self.database_url = database_url
        self.workers = workers
        self.env = dict(os.environ)
        for key in list(self.env):
            if key.startswith("TWOSTEP_") and key != "TWOSTEP_TEST_POSTGRES_URL":
                del self.env[key]
        self.env.update(
            TWOSTEP_DATA_DIR=str(data_dir),
            TWOSTEP_ORIGIN=self.url,
            TWOSTEP_LOG_LEVEL="warning",
            TWOSTEP_OUTBOX_POLL_SECONDS="0.5",
            # The per-address ceremony limit (SEC-62) is tested on its own; every test comes from 127.0.0.1.
            TWOSTEP_RATE_LIMIT_PER_MINUTE="0",
            # H06: a slow hash inside a write transaction fails the request (and so the test).
            TWOSTEP_ASSERT_NO_HASH_IN_TX="1",
        )
        if test_clock:
            self.env["TWOSTEP_ENABLE_TEST_CLOCK"] = "1"
        if cheap_argon2:
            self.env.update(CHEAP_ARGON2)
        if database_url:
            self.env["TWOSTEP_DATABASE_URL"] = database_url
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "server.log"

    def start(self, timeout: float = 40.0) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "twostep",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"twostep serve exited: {self.log()}")
            try:
                if httpx.get(f"{self.url}/api/v1/openapi.json", timeout=1).status_code == 200:
                    if self.workers > 1:
                        time.sleep(1.0)  # let every worker come up
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"twostep serve did not start: {self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def client(self, **kwargs: Any) -> httpx.Client:
        """A client like a non-browser API user (no Origin header), with its own cookie jar."""
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def set_clock(self, offset_seconds: float) -> None:
        r = httpx.post(f"{self.url}/api/v1/_test/clock", json={"offset_seconds": offset_seconds}, timeout=10)
        r.raise_for_status()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
