"""The in-process layer: the application of ``twostep.app.create_app(settings)`` run in this test process,
spoken to over httpx through its ASGI transport, with the test clock. No port, no subprocess, no uvicorn.

``AppServer`` has the surface of ``tests.support.server.Server`` (``url``, ``client()``, ``set_clock()``,
``data_dir``, ``database_url``), so a test of the API's own behaviour runs on either. The application
runs with its lifespan (the maintenance round: abandoned sign-ins, the outbox, the sweep) on an event loop
of its own in a thread; each request from a synchronous ``httpx.Client`` is handed to that loop, and the
app's handlers run in its thread pool, so requests from several threads run at once as in one worker.

What needs real processes stays on ``Server``: races across workers, the CLI, nginx, SMTP delivery, file modes
and start-up checks, key rotation, two servers on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from tests.support.server import CHEAP_ARGON2, free_port
from twostep.app import create_app
from twostep.config import Settings

# The ASGI scope's client address: the tests' "peer" (a trusted proxy when TWOSTEP_TRUSTED_PROXIES says so).
PEER = ("127.0.0.1", 50000)


def settings_of(env: dict[str, str], extra: dict[str, Any] | None = None) -> Settings:
    """Settings from TWOSTEP_* variables given as a dict, as `twostep serve` would read them, and ``extra``
    settings of the configuration file (such as ``access``, the rules, as its TOML would parse)."""
    fields: dict[str, Any] = {name.removeprefix("TWOSTEP_").lower(): value for name, value in env.items()}
    fields.update(extra or {})
    return Settings(**fields)


class _LogLines(logging.Handler):
    """What the app logs while the server runs (its ``log()``, as a real server's log file)."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.setFormatter(logging.Formatter("%(levelname)s: %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class _Portal:
    """An event loop in a thread of its own, running coroutines for synchronous callers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="app-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout=120)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()


class _Transport(httpx.BaseTransport):
    """A synchronous httpx transport that hands each request to the app's event loop."""

    def __init__(self, app: FastAPI, portal: _Portal) -> None:
        # raise_app_exceptions=False: an unexpected error is a 500 response, as a real server sends it.
        self._inner = httpx.ASGITransport(app=app, client=PEER, raise_app_exceptions=False)
        self._portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        content = request.read()
        status, headers, body = self._portal.run(self._send(request, content))
        return httpx.Response(status, headers=headers, content=body, request=request)

    async def _send(
        self, request: httpx.Request, content: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        forwarded = httpx.Request(request.method, request.url, headers=request.headers, content=content)
        response = await self._inner.handle_async_request(forwarded)
        body = await response.aread()
        return response.status_code, response.headers.raw, body


class AppServer:
    """``create_app(settings)`` in this process; `url` is http://localhost:PORT (a port nobody listens on)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        database_url: str | None = None,
        env: dict[str, str] | None = None,
        test_clock: bool = True,
        cheap_argon2: bool = True,
        settings: dict[str, Any] | None = None,
        origin: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        # Any origin works: requests never leave this process (several domains: https://auth.example.test).
        self.url = origin.format(port=self.port) if origin else f"http://localhost:{self.port}"
        self.database_url = database_url
        self.env: dict[str, str] = {
            "TWOSTEP_DATA_DIR": str(data_dir),
            "TWOSTEP_ORIGIN": self.url,
            # The maintenance round every 0.1 s (the sweep every 0.5 s): tests that wait for it wait less.
            "TWOSTEP_OUTBOX_POLL_SECONDS": "0.1",
            # The per-address ceremony limit (SEC-62) is tested on its own; every test comes from one address.
            "TWOSTEP_RATE_LIMIT_PER_MINUTE": "0",
        }
        if test_clock:
            self.env["TWOSTEP_ENABLE_TEST_CLOCK"] = "1"
        if cheap_argon2:
            self.env.update(CHEAP_ARGON2)
        if database_url:
            self.env["TWOSTEP_DATABASE_URL"] = database_url
        self.env.update(env or {})
        self.settings: dict[str, Any] = dict(settings or {})
        self.app: FastAPI | None = None
        self._portal: _Portal | None = None
        self._lifespan: contextlib.AbstractAsyncContextManager[Any] | None = None
        self._log = _LogLines()

    def start(self) -> AppServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        logging.getLogger("twostep").addHandler(self._log)
        self.app = create_app(settings_of(self.env, self.settings))
        self._portal = _Portal()
        self._lifespan = self.app.router.lifespan_context(self.app)
        self._portal.run(self._lifespan.__aenter__())
        return self

    def stop(self) -> None:
        if self._portal is None:
            return
        if self._lifespan is not None:
            self._portal.run(self._lifespan.__aexit__(None, None, None))
            self._lifespan = None
        self._portal.close()
        self._portal = None
        logging.getLogger("twostep").removeHandler(self._log)

    def log(self) -> str:
        """What the app logged (the warnings and errors, with their tracebacks) since it started."""
        return "\n".join(self._log.lines)

    def client(self, **kwargs: Any) -> httpx.Client:
        """A client like a non-browser API user (no Origin header), with its own cookie jar."""
        assert self.app is not None and self._portal is not None, "start() the server first"
        return httpx.Client(
            base_url=self.url, transport=_Transport(self.app, self._portal), timeout=30, **kwargs
        )

    def set_clock(self, offset_seconds: float) -> None:
        with self.client() as client:
            client.post("/api/v1/_test/clock", json={"offset_seconds": offset_seconds}).raise_for_status()

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def app_server(data_dir: Path, **kwargs: Any) -> Iterator[AppServer]:
    with AppServer(data_dir, **kwargs) as server:
        yield server
