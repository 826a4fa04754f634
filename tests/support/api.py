"""Flows of the JSON API over HTTP: sign-up, sign-in, verify access, TOTP enrolment, concurrency helpers.

They run against a ``Target``: a real `twostep serve` or the app in this process. Codes come from `oathtool`
(tests.support.totp) for the secret the API handed out, at a time taken from the server's own (test) clock, so
tests drive time-dependent behaviour with ``set_clock`` and still compute the right codes.
"""

from __future__ import annotations

import math
import secrets
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.support import STRONG_PASSWORD, unique_username
from tests.support.server import Target
from tests.support.totp import PERIOD, totp_code

API = "/api/v1"
RECOVERY_CODE_RE = r"[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}"


# --- time and codes -------------------------------------------------------------------------------------


def get(server: Target, path: str) -> httpx.Response:
    """One GET with a client of its own (no cookies), to ``server`` in a subprocess or in this process."""
    with server.client() as client:
        return client.get(path)


def server_time(server: Target) -> float:
    """The server's current time (its test clock), as Unix seconds."""
    r = get(server, f"{API}/_test/clock")
    r.raise_for_status()
    return datetime.fromisoformat(r.json()["now"]).timestamp()


def clock_offset(server: Target) -> float:
    r = get(server, f"{API}/_test/clock")
    r.raise_for_status()
    return float(r.json()["offset_seconds"])


def advance(server: Target, seconds: float) -> None:
    """Move the server clock forward by ``seconds`` (the offset is absolute, so read it first)."""
    server.set_clock(clock_offset(server) + seconds)


def fresh_step(server: Target, steps_ahead: int = 1) -> float:
    """Move the server clock to 1 s into the start of a later 30 s step and return that server time.

    The step then stays the same for about 29 s of real time, so codes computed for it are stable.
    Time only moves forward.
    """
    offset = clock_offset(server)
    now_real = time.time()
    current = now_real + offset
    target = (math.floor(current / PERIOD) + steps_ahead) * PERIOD + 1
    server.set_clock(target - time.time())
    return float(target)


def code_now(server: Target, secret: str, steps: int = 0) -> str:
    """The code for the server's current step plus ``steps``."""
    return totp_code(secret, server_time(server) + steps * PERIOD)


# --- QR ---------------------------------------------------------------------------------------------------


def decode_qr_svg(svg: str) -> str:
    """Render the SVG to PNG with `rsvg-convert` (on a white page) and decode it with `zbarimg`."""
    with tempfile.TemporaryDirectory() as tmp:
        svg_path = Path(tmp) / "qr.svg"
        png_path = Path(tmp) / "qr.png"
        svg_path.write_text(svg, encoding="utf-8")
        subprocess.run(
            ["rsvg-convert", "--background-color", "white", "-o", str(png_path), str(svg_path)],
            check=True,
            capture_output=True,
        )
        out = subprocess.run(["zbarimg", "--raw", "-q", str(png_path)], capture_output=True, text=True)
    assert out.returncode == 0, f"zbarimg found no QR code (rc={out.returncode})"
    return out.stdout.rstrip("\n")


# --- HTTP -------------------------------------------------------------------------------------------------


class Clients:
    """httpx clients (each with its own cookie jar) that are all closed at the end."""

    def __init__(self, server: Target) -> None:
        self.server = server
        self._all: list[httpx.Client] = []
        self._lock = threading.Lock()

    def new(self, **kwargs: Any) -> httpx.Client:
        client = self.server.client(**kwargs)
        with self._lock:
            self._all.append(client)
        return client

    def close(self) -> None:
        for client in self._all:
            client.close()
        self._all.clear()

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def error_of(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) >= {"error", "message"}, body
    return str(body["error"])


def expect(r: httpx.Response, status: int, error: str | None = None) -> dict[str, Any]:
    """Assert the status (and the error code); return the JSON body ({} for an empty one)."""
    assert r.status_code == status, f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}"
    body: dict[str, Any] = r.json() if r.content else {}
    if error is not None:
        assert body.get("error") == error, body
    return body


def signup(client: httpx.Client, username: str | None = None, *, email: str | None = None) -> str:
    username = username or unique_username()
    payload: dict[str, str] = {"username": username, "password": STRONG_PASSWORD}
    if email is not None:
        payload["email"] = email
    expect(client.post(f"{API}/accounts", json=payload), 201)
    return username


def login(client: httpx.Client, username: str, password: str = STRONG_PASSWORD) -> dict[str, Any]:
    return expect(client.post(f"{API}/login", json={"username": username, "password": password}), 200)


def login_totp(client: httpx.Client, code: str) -> httpx.Response:
    return client.post(f"{API}/login/totp", json={"code": code})


def login_recovery(client: httpx.Client, code: str) -> httpx.Response:
    return client.post(f"{API}/login/recovery-code", json={"code": code})


def verify_password(client: httpx.Client, password: str = STRONG_PASSWORD) -> dict[str, Any]:
    return expect(client.post(f"{API}/verify-access", json={"password": password}), 200)


def verify_totp(client: httpx.Client, code: str) -> httpx.Response:
    return client.post(f"{API}/verify-access/totp", json={"code": code})


def verify_recovery(client: httpx.Client, code: str) -> httpx.Response:
    return client.post(f"{API}/verify-access/recovery-code", json={"code": code})


def session_of(client: httpx.Client) -> httpx.Response:
    return client.get(f"{API}/session")


def factors_of(client: httpx.Client) -> dict[str, Any]:
    return expect(client.get(f"{API}/factors"), 200)


@dataclass
class Enrollment:
    enrollment_id: str
    secret: str
    otpauth_uri: str
    qr_svg: str
    expires_at: str
    response: httpx.Response


def begin_totp(client: httpx.Client) -> Enrollment:
    r = client.post(f"{API}/factors/totp", json={})
    body = expect(r, 201)
    return Enrollment(
        body["enrollment_id"], body["secret"], body["otpauth_uri"], body["qr_svg"], body["expires_at"], r
    )


def confirm_totp(client: httpx.Client, enrollment_id: str, *, name: str, code: str) -> httpx.Response:
    return client.post(f"{API}/factors/totp/{enrollment_id}/confirm", json={"name": name, "code": code})


@dataclass
class Factor:
    factor_id: str
    secret: str
    name: str
    confirmed_at: float  # server time of the confirming code (its step is used)


@dataclass
class User:
    """An account and its signed-in session ``client`` (access verified at set-up)."""

    server: Target
    username: str
    client: httpx.Client
    password: str = STRONG_PASSWORD
    factors: list[Factor] = field(default_factory=list)
    recovery_codes: list[str] = field(default_factory=list)

    @property
    def secret(self) -> str:
        return self.factors[0].secret

    def add_totp(self, name: str | None = None, *, at: float | None = None) -> Factor:
        """Enrol an authenticator app in ``client`` (access must be verified) and confirm it."""
        name = name or f"App {len(self.factors) + 1}"
        enrollment = begin_totp(self.client)
        when = server_time(self.server) if at is None else at
        body = expect(
            confirm_totp(
                self.client, enrollment.enrollment_id, name=name, code=totp_code(enrollment.secret, when)
            ),
            201,
        )
        if "recovery_codes" in body:
            self.recovery_codes = list(body["recovery_codes"])
        factor = Factor(body["factor"]["id"], enrollment.secret, name, when)
        self.factors.append(factor)
        return factor


def new_user(server: Target, clients: Clients, *, email: str | None = None) -> User:
    """A fresh account, signed in (password only: no second factor yet) with access verified."""
    client = clients.new()
    username = signup(client, email=email)
    assert login(client, username) == {"status": "signed_in"}
    assert verify_password(client)["status"] == "verified"
    return User(server, username, client)


def new_2fa_user(
    server: Target, clients: Clients, *, email: str | None = None, at: float | None = None
) -> User:
    """A fresh account with one authenticator app (confirmed with the code of ``at``) and 10 recovery codes.

    ``client`` stays signed in with access verified (it verified access before enrolling).
    """
    user = new_user(server, clients, email=email)
    user.add_totp("Phone", at=at)
    assert len(user.recovery_codes) == 10
    return user


def start_login(clients: Clients, username: str, password: str = STRONG_PASSWORD) -> httpx.Client:
    """A new client with a pending sign-in (password accepted, second factor owed)."""
    client = clients.new()
    body = login(client, username, password)
    assert body["status"] == "second_factor_required", body
    return client


def signed_in_with_totp(clients: Clients, user: User, code: str) -> httpx.Client:
    client = start_login(clients, user.username, user.password)
    assert expect(login_totp(client, code), 200) == {"status": "signed_in"}
    return client


def openapi_operations(server: Target) -> list[tuple[str, str]]:
    """Every (METHOD, path) of the OpenAPI document, path parameters filled with dummy ids."""
    doc = get(server, f"{API}/openapi.json").json()
    ops: list[tuple[str, str]] = []
    for path, methods in doc["paths"].items():
        concrete = path
        while "{" in concrete:
            start = concrete.index("{")
            end = concrete.index("}", start)
            concrete = concrete[:start] + "dummy0id0" + secrets.token_hex(4) + concrete[end + 1 :]
        for method in methods:
            if method.upper() in {"GET", "POST", "PUT", "PATCH", "DELETE"}:
                ops.append((method.upper(), concrete))
    return ops


def call(client: httpx.Client, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    if method in {"POST", "PUT", "PATCH"}:
        return client.request(method, path, json=body if body is not None else {})
    return client.request(method, path)


# --- concurrency --------------------------------------------------------------------------------------------


def release_together(tasks: Sequence[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Run every task in its own thread, all released at once by a barrier; results in task order."""
    barrier = threading.Barrier(len(tasks))

    def run(task: Callable[[], httpx.Response]) -> httpx.Response:
        barrier.wait(timeout=30)
        return task()

    with ThreadPoolExecutor(max_workers=len(tasks)) as pool:
        futures = [pool.submit(run, task) for task in tasks]
        return [f.result(timeout=120) for f in futures]


def parallel(tasks: Sequence[Callable[[], Any]], workers: int = 20) -> list[Any]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [f.result(timeout=120) for f in [pool.submit(t) for t in tasks]]


@contextmanager
def clients_for(server: Target) -> Iterator[Clients]:
    with Clients(server) as clients:
        yield clients
