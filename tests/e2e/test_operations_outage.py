"""Failure while serving (docs/operations.md): the database going away and coming back, and a graceful stop
(SIGTERM) during a burst of sign-ins and notifications."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import STRONG_PASSWORD, unique_username
from tests.support.api import API, Clients, login, new_2fa_user, parallel, signup, start_login
from tests.support.mail import MAIL_FROM, SmtpSink, _Collector, wait_until
from tests.support.scratch_postgres import ScratchPostgres
from tests.support.server import Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


# --- the database goes away ------------------------------------------------------------------------------


@pytest.fixture
def scratch_postgres() -> Iterator[ScratchPostgres]:
    pg = ScratchPostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.close()


def test_database_outage_is_503_unavailable_and_recovers_without_restart(
    scratch_postgres: ScratchPostgres, tmp_path: Any
) -> None:
    pg = scratch_postgres
    server = Server(tmp_path / "data", database_url=pg.url, workers=2)
    migrated = subprocess.run(
        [sys.executable, "-m", "twostep", "migrate"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    with server, server.client() as signed_in:
        username = signup(signed_in)
        assert login(signed_in, username) == {"status": "signed_in"}
        assert signed_in.get(f"{API}/session").status_code == 200
        assert signed_in.get("/settings/security-log").status_code == 200
        assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200

        pg.stop()
        # A signed-in session: the API and a page.
        r = signed_in.get(f"{API}/session")
        assert r.status_code == 503 and r.json()["error"] == "unavailable", r.text
        page = signed_in.get("/settings/security-log")
        assert page.status_code == 503 and int(page.headers["retry-after"]) >= 1, page.text
        assert "text/html" in page.headers["content-type"]
        with server.client() as client:
            r = client.post(f"{API}/login", json={"username": username, "password": STRONG_PASSWORD})
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "unavailable" and r.json()["retry_after"] >= 1
            assert int(r.headers["retry-after"]) >= 1
            r = client.post(
                f"{API}/accounts", json={"username": unique_username(), "password": STRONG_PASSWORD}
            )
            assert r.status_code == 503 and r.json()["error"] == "unavailable"
        for _ in range(4):  # each worker: not ready, but alive
            ready = httpx.get(f"{server.url}/readyz", timeout=10)
            assert ready.status_code == 503
            assert ready.json()["error"] == "not_ready" and ready.json()["reason"] == "database"
            assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        # Metrics still answer (without the outbox backlog, which needs the database).
        assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 200

        pg.start()

        def recovered() -> bool:
            with server.client() as client:
                r = client.post(f"{API}/login", json={"username": username, "password": STRONG_PASSWORD})
                return r.status_code == 200

        assert wait_until(recovered, timeout=20, interval=0.5), server.log()
        # Every pooled connection of every worker was replaced: a run of requests all succeed.
        for _ in range(10):
            with server.client() as client:
                assert login(client, username) == {"status": "signed_in"}
        for _ in range(4):
            assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
    assert "Traceback" not in server.log()


def test_readiness_fails_within_its_timeout_when_the_database_hangs(
    scratch_postgres: ScratchPostgres, tmp_path: Any
) -> None:
    pg = scratch_postgres
    server = Server(tmp_path / "data", database_url=pg.url)
    done = subprocess.run(
        [sys.executable, "-m", "twostep", "migrate"],
        env=server.env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with server:
        assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
        pg.freeze()
        try:
            started = time.monotonic()
            r = httpx.get(f"{server.url}/readyz", timeout=10)
            took = time.monotonic() - started
            assert r.status_code == 503 and r.json()["reason"] == "database", r.text
            assert took < 3.5, took
            # The check still waiting: the next probe fails at once instead of piling up.
            started = time.monotonic()
            assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 503
            assert time.monotonic() - started < 1.0
            assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        finally:
            pg.thaw()
        assert wait_until(
            lambda: httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200, timeout=20, interval=0.5
        )


# --- graceful shutdown -----------------------------------------------------------------------------------


def test_sigterm_lets_requests_in_flight_finish(tmp_path: Any) -> None:
    # Sign-ins that take long: a costly argon2id (about a second each on two busy cores).
    slow = {
        "TWOSTEP_ARGON2_TIME_COST": "12",
        "TWOSTEP_ARGON2_MEMORY_COST": "32768",
        "TWOSTEP_ARGON2_PARALLELISM": "1",
        "TWOSTEP_SHUTDOWN_TIMEOUT": "30",
    }
    server = Server(tmp_path / "data", cheap_argon2=False, env=slow)
    with server:
        with server.client() as client:
            username = signup(client)
        results: list[object] = []

        def sign_in() -> None:
            try:
                with httpx.Client(base_url=server.url, timeout=60) as client:
                    r = client.post(f"{API}/login", json={"username": username, "password": STRONG_PASSWORD})
                    results.append(r.status_code)
            except httpx.HTTPError as exc:
                results.append(exc)

        threads = [threading.Thread(target=sign_in) for _ in range(4)]
        started = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(0.5)  # every request accepted and hashing
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGTERM)
        for t in threads:
            t.join(timeout=60)
        elapsed = time.monotonic() - started
        # uvicorn ends by raising the signal it caught again, after a graceful stop: -SIGTERM or 0.
        assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert results == [200, 200, 200, 200], (results, elapsed, server.log())


class _SlowCollector(_Collector):
    """An SMTP server that takes its time with each message: deliveries are in progress at the SIGTERM."""

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        await asyncio.sleep(0.25)
        return await super().handle_DATA(server, session, envelope)


class SlowSink(SmtpSink):
    def start(self) -> SlowSink:
        from aiosmtpd.controller import Controller

        self.controller = Controller(_SlowCollector(self), hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self


def _outbox(server: Server) -> list[tuple[str, bool]]:
    db = sqlite3.connect(server.data_dir / "twostep.sqlite3")
    try:
        return [(mid, sent is not None) for mid, sent in db.execute("SELECT message_id, sent_at FROM outbox")]
    finally:
        db.close()


def test_sigterm_during_a_burst_loses_no_notification_and_sends_none_twice(tmp_path: Any) -> None:
    sink = SlowSink().start()
    env = {"TWOSTEP_SMTP_URL": sink.url, "TWOSTEP_MAIL_FROM": MAIL_FROM, "TWOSTEP_OUTBOX_POLL_SECONDS": "0.2"}
    server = Server(tmp_path / "data", workers=2, env=env)
    try:
        with server, Clients(server) as clients:
            users = [
                new_2fa_user(server, clients, email=f"{unique_username('u')}@example.test") for _ in range(6)
            ]
            # The set-up's messages delivered first: the SIGTERM below comes amid the burst's.
            assert wait_until(lambda: all(sent for _, sent in _outbox(server)), timeout=60)
            before = len(sink.all())

            def failed_second_step(user: Any) -> int:
                try:
                    pending = start_login(clients, user.username)
                    return pending.post(f"{API}/login/totp", json={"code": "000000"}).status_code
                except (httpx.HTTPError, AssertionError):
                    return 0  # refused once the server stopped listening

            tasks = [functools.partial(failed_second_step, u) for u in users * 3]
            burst = threading.Thread(target=parallel, args=(tasks,), kwargs={"workers": 6})
            burst.start()
            # SIGTERM while messages of the burst are being delivered.
            assert wait_until(lambda: len(sink.all()) > before, timeout=30)
            assert server.proc is not None
            os.killpg(server.proc.pid, signal.SIGTERM)
            assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM)
            burst.join(timeout=60)
            server.proc = None
        written = _outbox(server)
        assert len(written) > before, "the burst wrote messages"
        # Usually some wait for the next start (claimed by a worker that stopped before trying them, or not
        # claimed yet); whether or not, each is delivered exactly once.
        with server:  # the next start delivers the rest
            # Repeats of one kind to one account wait 15 minutes for a message of their own (H13): go there.
            server.set_clock(20 * 60)
            assert wait_until(lambda: all(sent for _, sent in _outbox(server)), timeout=60), server.log()
            time.sleep(1.0)  # anything sent twice would arrive now
        ids = Counter(str(m.message["Message-ID"]) for m in sink.all())
        assert [mid for mid, n in ids.items() if n > 1] == []
        assert set(ids) == {mid for mid, _ in _outbox(server)}
    finally:
        sink.stop()
