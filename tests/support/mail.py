"""Helpers for the notification, security-log and session tests: an SMTP sink, a TOTP device,
a server clock, users that sign up, sign in, verify access and enrol, and secret scanners.

Everything here talks to a twostep over HTTP (a real `twostep serve`, or the app in this process); codes come
from `oathtool` (tests.support.totp), never from the code under test.
"""

from __future__ import annotations

import base64
import re
import secrets
import socket
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, cast

import httpx
from aiosmtpd.controller import Controller
from sqlalchemy import create_engine, text

from tests.support.database import database_url
from tests.support.server import Target, free_port
from tests.support.totp import PERIOD, secret_bytes, totp_code, wrong_code

API = "/api/v1"
MAIL_FROM = "twostep notifications <security@twostep.test>"

# What must never leave the server in a message, an event or a log line (SEC-55, SEC-56).
SIX_DIGITS = re.compile(r"(?<![\w.:-])\d{6}(?![\w.:-])")
RECOVERY_CODE = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{4}(?:[- ]?[0-9A-HJKMNP-TV-Z]{4}){3}\b")
BASE32_SECRET = re.compile(r"\b[A-Z2-7]{32}\b")

# The subject of the message of each SEC-55 event, loosely: what happened, in words a person reads.
SUBJECTS: dict[str, re.Pattern[str]] = {
    "two_factor_enabled": re.compile(r"two-step verification .*turned on", re.I),
    "two_factor_disabled": re.compile(r"two-step verification .*turned off", re.I),
    "factor_added": re.compile(r"factor .*added", re.I),
    "factor_removed": re.compile(r"factor .*removed", re.I),
    "recovery_codes_regenerated": re.compile(r"new recovery codes", re.I),
    "recovery_code_used": re.compile(r"recovery code was used", re.I),
    "password_changed": re.compile(r"password was changed", re.I),
    "second_factor_locked": re.compile(r"paused|locked|too many", re.I),
    "second_factor_failed": re.compile(r"password but not your second factor", re.I),
    "second_factor_abandoned": re.compile(r"did not finish", re.I),
}


def event_of(message: EmailMessage) -> str:
    """The SEC-55 event a message is about, from its subject (AssertionError when none or several fit)."""
    subject = str(message["Subject"])
    fits = [name for name, pattern in SUBJECTS.items() if pattern.search(subject)]
    assert len(fits) == 1, f"subject {subject!r} names {fits or 'no event'}"
    return fits[0]


def letters(n: int) -> str:
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(n))


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# --- SMTP ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One message as the SMTP server got it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    message: EmailMessage

    @property
    def text(self) -> str:
        """Subject and decoded body: what a person reads."""
        body = self.message.get_body(preferencelist=("plain",))
        content = body.get_content() if body is not None else ""
        return f"{self.message['Subject']}\n{content}"


class _Collector:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        raw = bytes(envelope.original_content or envelope.content)
        message = BytesParser(policy=policy.default).parsebytes(raw)
        with self.sink.lock:
            self.sink.received.append(
                Received(str(envelope.mail_from), tuple(envelope.rcpt_tos), raw, message)
            )
        return "250 Message accepted for delivery"


class SmtpSink:
    """An aiosmtpd server on 127.0.0.1 that keeps every message it receives."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> SmtpSink:
        self.controller = Controller(_Collector(self), hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def all(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def to(self, address: str) -> list[Received]:
        """The notifications sent to ``address``: every message but the address's verification link (sent
        when an address is given, issue 12), which no notification test counts; ``links_to`` has those."""
        return [m for m in self.all() if address in m.rcpt_tos and not is_verification_link(m)]

    def links_to(self, address: str) -> list[Received]:
        """The e-mail verification messages sent to ``address``."""
        return [m for m in self.all() if address in m.rcpt_tos and is_verification_link(m)]

    def wait_for(
        self, address: str, count: int, *, timeout: float = 10.0, quiet: float = 1.2
    ) -> list[Received]:
        """At least ``count`` messages to ``address`` (bounded wait), then ``quiet`` seconds for any extra."""
        wait_until(lambda: len(self.to(address)) >= count, timeout)
        time.sleep(quiet)
        return self.to(address)


def smtp_sink(port: int | None = None) -> Iterator[SmtpSink]:
    """Body of a fixture: a started sink, stopped afterwards."""
    sink = SmtpSink(port).start()
    try:
        yield sink
    finally:
        sink.stop()


VERIFICATION_SUBJECT = "Confirm your e-mail address"


def is_verification_link(message: Received) -> bool:
    return str(message.message["Subject"]) == VERIFICATION_SUBJECT


def read_outbox(folder: Path) -> list[Received]:
    """The .eml files of the outbox folder, parsed."""
    out: list[Received] = []
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.eml")):
        raw = path.read_bytes()
        message = BytesParser(policy=policy.default).parsebytes(raw)
        out.append(Received(str(message["From"]), (str(message["To"]),), raw, message))
    return out


# --- the server's clock and TOTP -------------------------------------------------------------------


class Clock:
    """The server's clock: the real time plus an offset we set (POST /_test/clock); it only moves forward."""

    def __init__(self, server: Target) -> None:
        self.server = server
        self.offset = 0.0

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)

    def advance(self, seconds: float) -> None:
        self.offset += seconds
        self.server.set_clock(self.offset)


class TotpDevice:
    """An authenticator app: each code is for a time step the server has not seen used yet."""

    def __init__(self, secret_b32: str, clock: Clock) -> None:
        self.secret_b32 = secret_b32
        self.secret = secret_bytes(secret_b32)
        self.clock = clock
        self.last_step = -1
        self.used: list[str] = []

    def step(self) -> int:
        return int(self.clock.now().timestamp()) // 30

    def code(self) -> str:
        """A fresh code; moves the server clock to the next time step when this one was used."""
        step = self.step()
        if step <= self.last_step:
            self.clock.advance((self.last_step - step + 1) * 30)
            step = self.step()
        self.last_step = step
        value = totp_code(self.secret_b32, step * PERIOD)
        self.used.append(value)
        return value

    def wrong_code(self) -> str:
        """Six digits that match none of the steps near now."""
        value = wrong_code(self.secret_b32, self.step() * PERIOD, steps=4)
        self.used.append(value)
        return value


# --- users -----------------------------------------------------------------------------------------


@dataclass
class Browser:
    """One client (one cookie jar) with its own User-Agent and client address (X-Forwarded-For)."""

    http: httpx.Client
    user_agent: str
    ip: str
    cookies_seen: set[str]

    def get(self, path: str) -> httpx.Response:
        return self.http.get(API + path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.http.post(API + path, json={} if body is None else body)

    def patch(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.patch(API + path, json=body)

    def delete(self, path: str) -> httpx.Response:
        return self.http.delete(API + path)

    def close(self) -> None:
        self.http.close()


def new_ip() -> str:
    return f"203.0.113.{secrets.randbelow(250) + 2}"


@dataclass
class User:
    server: Target
    clock: Clock
    username: str
    password: str
    email: str | None
    browsers: list[Browser] = field(default_factory=list)
    devices: list[TotpDevice] = field(default_factory=list)
    factor_ids: list[str] = field(default_factory=list)
    recovery_codes: list[str] = field(default_factory=list)
    all_recovery_codes: list[str] = field(default_factory=list)
    old_passwords: list[str] = field(default_factory=list)

    # -- clients

    def browser(self, *, user_agent: str | None = None, ip: str | None = None) -> Browser:
        ua = user_agent or f"Mozilla/5.0 (X11; Linux x86_64) TwostepE2E/{letters(6)}"
        addr = ip or new_ip()
        seen: set[str] = set()

        def keep_cookie(response: httpx.Response) -> None:
            for value in response.cookies.values():
                if value:
                    seen.add(value)

        http = self.server.client(
            headers={"User-Agent": ua, "X-Forwarded-For": addr}, event_hooks={"response": [keep_cookie]}
        )
        b = Browser(http, ua, addr, seen)
        self.browsers.append(b)
        return b

    @property
    def device(self) -> TotpDevice:
        return self.devices[0]

    # -- sign-in

    def signed_in(self, **kwargs: Any) -> Browser:
        """A new browser, fully signed in (with the first TOTP device when 2FA is on)."""
        b = self.browser(**kwargs)
        r = b.post("/login", {"username": self.username, "password": self.password})
        assert r.status_code == 200, r.text
        if r.json()["status"] == "second_factor_required":
            r = b.post("/login/totp", {"code": self.device.code()})
            assert r.status_code == 200, r.text
        assert r.json()["status"] == "signed_in", r.text
        return b

    def password_step(self, b: Browser) -> dict[str, Any]:
        r = b.post("/login", {"username": self.username, "password": self.password})
        assert r.status_code == 200, r.text
        return cast(dict[str, Any], r.json())

    def verify_access(self, b: Browser) -> None:
        r = b.post("/verify-access", {"password": self.password})
        assert r.status_code == 200, r.text
        if r.json()["status"] == "second_factor_required":
            r = b.post("/verify-access/totp", {"code": self.device.code()})
            assert r.status_code == 200, r.text
        assert r.json()["status"] == "verified", r.text

    # -- factors

    def enrol_totp(self, b: Browser, name: str = "Phone") -> dict[str, Any]:
        """Verify access if needed, add an authenticator app; returns the confirm response body."""
        r = b.post("/factors/totp")
        if r.status_code == 403:
            self.verify_access(b)
            r = b.post("/factors/totp")
        assert r.status_code == 201, r.text
        device = TotpDevice(r.json()["secret"], self.clock)
        enrollment = r.json()["enrollment_id"]
        r = b.post(f"/factors/totp/{enrollment}/confirm", {"name": name, "code": device.code()})
        assert r.status_code == 201, r.text
        body = cast(dict[str, Any], r.json())
        self.devices.append(device)
        self.factor_ids.append(body["factor"]["id"])
        if "recovery_codes" in body:
            self.recovery_codes = list(body["recovery_codes"])
            self.all_recovery_codes += self.recovery_codes
        return body

    def regenerate_codes(self, b: Browser) -> list[str]:
        r = b.post("/recovery-codes")
        assert r.status_code == 201, r.text
        self.recovery_codes = list(r.json()["recovery_codes"])
        self.all_recovery_codes += self.recovery_codes
        return self.recovery_codes

    # -- what must never be shown again

    def secret_values(self) -> list[str]:
        """Every password, code, secret and cookie value this user ever typed or received."""
        values: set[str] = {self.password, *self.old_passwords}
        for d in self.devices:
            values.add(d.secret_b32)
            values.add(d.secret_b32.lower())
            values.add(base64.b64encode(d.secret).decode())
            values.add(d.secret.hex())
            values.update(d.used)
        for code in self.all_recovery_codes:
            compact = code.replace("-", "")
            values.update({code, compact, compact.lower(), code.lower()})
        for b in self.browsers:
            values.update(b.cookies_seen)
        return sorted(v for v in values if v)


def sign_up(
    server: Target, clock: Clock, *, email: bool = True, prefix: str = "mail", link: bool = True
) -> tuple[User, Browser]:
    """A new account (unique username, strong unique password), signed in from a new browser. With
    ``link=False`` the address is written in the database after sign-up, so that no verification message
    is sent to it (for a test that counts delivery attempts of notifications)."""
    username = f"{prefix}{letters(10)}"
    password = f"{letters(6)} {letters(6)} {letters(6)} {letters(4)}"
    address = f"{username}@example.test" if email else None
    user = User(server, clock, username, password, address)
    b = user.browser()
    body: dict[str, Any] = {"username": username, "password": password}
    if address and link:
        body["email"] = address
    r = b.post("/accounts", body)
    assert r.status_code == 201, r.text
    if address and not link:
        engine = create_engine(database_url(server))
        try:
            with engine.begin() as conn:
                conn.execute(
                    text("UPDATE accounts SET email = :e WHERE username = :u"), {"e": address, "u": username}
                )
        finally:
            engine.dispose()
    r = b.post("/login", {"username": username, "password": password})
    assert r.status_code == 200 and r.json()["status"] == "signed_in", r.text
    return user, b


def leaks(text: str, values: Iterable[str]) -> list[str]:
    """The given secret values that occur in ``text`` (case-sensitive and lower-cased)."""
    low = text.lower()
    return [v for v in values if v in text or (len(v) >= 8 and v.lower() in low)]


def pattern_leaks(text: str) -> list[str]:
    """Anything in ``text`` shaped like a TOTP code, a recovery code or a base32 TOTP secret."""
    found = SIX_DIGITS.findall(text) + RECOVERY_CODE.findall(text) + BASE32_SECRET.findall(text)
    return list(found)


def hung_smtp_listener() -> socket.socket:
    """A TCP port that completes connections and never says a word (an SMTP server that hangs)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def notifications_in(folder: Path) -> list[Received]:
    """The .eml files of the outbox folder but the e-mail verification links."""
    return [m for m in read_outbox(folder) if not is_verification_link(m)]
