"""schemathesis against the OpenAPI document of a real `twostep serve`: no response is a 5xx (SEC-59).

Every operation of ``/api/v1/openapi.json`` gets a bounded number of generated requests (valid and invalid
bodies and path parameters), sent twice over: signed out, and from a signed-in session whose access is
verified, so that the handlers behind the session check are reached too. Requests carry no Origin header
(a non-browser client), so the same-site guard lets them through. Generation is derandomized and uses no
example database, so a run is repeatable.

The whole run is made against a server on SQLite and against one on PostgreSQL (H10: PostgreSQL refuses
NUL in text, which SQLite stores). Random generation rarely puts a NUL where it matters, so each generated
case that has string fields or path parameters is also sent with a NUL in every one of them. Each test
prints how many cases it sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation.modes import GenerationMode

from tests.support import STRONG_PASSWORD, unique_username
from tests.support.server import Server

# schemathesis' generic types, unparametrized for these tests.
Operation = Any
Case = Any

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

API = "/api/v1"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One single-worker server per database for this module (overrides the SQLite-only fixture)."""
    data_dir: Path = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    with Server(data_dir, database_url=url) as srv:
        yield srv
        srv.set_clock(0)


class Account:
    """One account; ``session()`` gives a requests session that is signed in with verified access."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.username = unique_username("fuzz")
        self.offset = 0.0
        self.http = requests.Session()
        r = self.http.post(
            f"{server.url}{API}/accounts",
            json={"username": self.username, "password": STRONG_PASSWORD},
            timeout=10,
        )
        assert r.status_code == 201, r.text
        self._sign_in()

    def _sign_in(self) -> None:
        # Generated bodies may guess passwords: a day later every backoff is over, and a success resets it.
        self.offset += 25 * 3600
        self.server.set_clock(self.offset)
        self.http.cookies.clear()
        creds = {"username": self.username, "password": STRONG_PASSWORD}
        r = self.http.post(f"{self.server.url}{API}/login", json=creds, timeout=10)
        assert r.status_code == 200, r.text
        r = self.http.post(
            f"{self.server.url}{API}/verify-access", json={"password": STRONG_PASSWORD}, timeout=10
        )
        assert r.status_code == 200, r.text

    def session(self) -> requests.Session:
        """Signed in with verified access (signs in again after a generated logout or a long run)."""
        r = self.http.get(f"{self.server.url}{API}/session", timeout=10)
        if r.status_code != 200 or not r.json().get("access_verified_until"):
            self._sign_in()
        return self.http


@pytest.fixture(scope="module")
def operations(server: Server) -> list[Operation]:
    schema = schemathesis.openapi.from_url(f"{server.url}{API}/openapi.json", timeout=10)
    ops = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        ops.append(result.ok())
    assert len(ops) >= 20
    return ops


@pytest.fixture(scope="module")
def account(server: Server) -> Iterator[Account]:
    acct = Account(server)
    yield acct
    acct.http.close()


def assert_error_shape(response: Any, case: Case) -> None:
    """Every error under /api/v1 is JSON {"error": code, "message": sentence}."""
    if response.status_code < 400:
        return
    where = (case.method, case.formatted_path, response.status_code, response.content[:300])
    body = response.json()
    assert isinstance(body, dict), where
    assert isinstance(body.get("error"), str) and body["error"], where
    assert isinstance(body.get("message"), str) and body["message"], where


EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 10}
# Operations that are slow by design get fewer cases: POST /recovery-codes hashes ten fresh codes with a
# slow hash (~0.3 s) on every call, even when it then answers 409 two_factor_not_enabled.
FEWER = {"POST /api/v1/recovery-codes": 3}


def fuzz_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report the first failing case quickly
        print_blob=False,
    )


def with_nul(value: Any) -> Any:
    """``value`` with a NUL at the end of every string in it (dict keys stay as they are)."""
    if isinstance(value, str):
        return value + "\x00"
    if isinstance(value, dict):
        return {k: with_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [with_nul(v) for v in value]
    return value


def nul_variant(case: Case) -> Case | None:
    """The case with a NUL in each string of its body and in each path parameter; None without either."""
    body = with_nul(case.body) if isinstance(case.body, dict | list | str) else case.body
    if body == case.body and not case.path_parameters:
        return None
    variant = case.derive()
    variant.body = body
    variant.path_parameters = {k: f"{v}%00" for k, v in case.path_parameters.items()}
    return variant


def fuzz(operations: list[Operation], mode: GenerationMode, send: Callable[[Case], None]) -> int:
    """Run ``send`` on a bounded number of generated cases of every operation; report every failure.

    Returns the number of cases sent.
    """
    failures: list[str] = []
    sent = 0
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"

        @fuzz_settings(min(EXAMPLES[mode], FEWER.get(label, EXAMPLES[mode])))
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Case) -> None:
            nonlocal sent
            sent += 1
            send(case)
            variant = nul_variant(case)
            if variant is not None:
                sent += 1
                send(variant)

        try:
            run()
        except Unsatisfiable:
            continue  # negative mode: nothing in this operation can be made invalid (no parameters)
        except Exception as exc:  # collect them all, then fail once with the list
            failures.append(f"{label}: {exc!r}"[:2000])
    assert not failures, "\n\n".join(failures)
    return sent


def report(server: Server, what: str, mode: GenerationMode, count: int) -> None:
    dialect = "postgresql" if server.database_url else "sqlite"
    print(f"\nschemathesis {dialect} {what} {mode}: {count} cases, no 5xx")
    assert count > 0


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_sec59_no_server_error_signed_out(
    mode: GenerationMode, server: Server, operations: list[Operation]
) -> None:
    """SEC-59: generated requests without a session: never a 5xx, and errors keep the contract's shape."""

    def send(case: Case) -> None:
        with requests.Session() as http:
            response = case.call_and_validate(
                base_url=server.url, session=http, checks=[not_a_server_error], timeout=10
            )
        assert "origin" not in {k.lower() for k in response.request.headers}
        assert_error_shape(response, case)

    report(server, "signed out", mode, fuzz(operations, mode, send))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_sec59_no_server_error_signed_in(
    mode: GenerationMode, server: Server, operations: list[Operation], account: Account
) -> None:
    """SEC-59: the same from a signed-in session with verified access (factors, sessions, password...)."""

    def send(case: Case) -> None:
        response = case.call_and_validate(
            base_url=server.url, session=account.session(), checks=[not_a_server_error], timeout=10
        )
        assert_error_shape(response, case)

    report(server, "signed in", mode, fuzz(operations, mode, send))


def test_schema_is_served_and_lists_the_api(server: Server) -> None:
    r = httpx.get(f"{server.url}{API}/openapi.json", timeout=10)
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    assert len(doc["paths"]) >= 20
    assert all(path.startswith(API + "/") for path in doc["paths"])
