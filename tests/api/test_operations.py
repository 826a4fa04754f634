"""Operations in process (docs/api.md "Operations"): /healthz, /readyz, /metrics, request ids, the access
and security-event log lines. Multiprocess metrics, JSON logs on stderr, backups, shutdown and database
outages need real processes: tests/e2e/test_operations.py."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import STRONG_PASSWORD, unique_username
from tests.support.api import API, Clients, expect, login, new_2fa_user, signup
from tests.support.inprocess import AppServer
from twostep.web.observe import JsonFormatter, RequestIdFilter

pytestmark = pytest.mark.api


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by name and sorted labels (parsed by prometheus-client's parser)."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(server: AppServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with server.client() as client:
        r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


def test_healthz_answers_ok(server: AppServer) -> None:
    with server.client() as client:
        r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_readyz_ready_when_database_schema_and_key_are(server: AppServer) -> None:
    with server.client() as client:
        r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready"}


def test_readyz_is_503_with_a_reason_when_the_schema_is_behind(tmp_path: Path) -> None:
    with AppServer(tmp_path) as srv:
        assert srv.app is not None
        engine = srv.app.state.web.ctx.db.engine
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
        with srv.client() as client:
            r = client.get("/readyz")
            assert client.get("/healthz").status_code == 200  # alive, not ready
    assert r.status_code == 503
    body = r.json()
    assert body["error"] == "not_ready" and body["reason"] == "schema", body
    assert "twostep migrate" in body["message"]
    assert r.headers["retry-after"].isdigit()


def test_probes_are_not_rate_limited_nor_refused_as_cross_site(tmp_path: Path) -> None:
    with AppServer(tmp_path, env={"TWOSTEP_RATE_LIMIT_PER_MINUTE": "2"}) as srv, srv.client() as client:
        headers = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
        for _ in range(10):
            assert client.get("/healthz", headers=headers).status_code == 200
            assert client.get("/readyz", headers=headers).status_code == 200


def test_metrics_count_sign_ins_by_method_and_outcome(server: AppServer) -> None:
    before = scrape(server)
    with Clients(server) as clients:
        client = clients.new()
        username = signup(client)
        login(client, username)
        expect(
            client.post(f"{API}/login", json={"username": username, "password": "wrong " + STRONG_PASSWORD}),
            401,
        )
        expect(
            client.post(f"{API}/login", json={"username": unique_username(), "password": STRONG_PASSWORD}),
            401,
        )
        user = new_2fa_user(server, clients)
        pending = clients.new()
        login(pending, user.username)
        expect(pending.post(f"{API}/login/totp", json={"code": "000000"}), 401, "invalid_code")
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # Two password-only sign-ins succeeded (the first user, and the second before it had a factor).
    assert delta("twostep_sign_ins_total", method="password", outcome="succeeded") == 2
    # A wrong password for an account, and a username nobody has.
    assert delta("twostep_sign_ins_total", method="password", outcome="failed") == 2
    assert delta("twostep_sign_ins_total", method="totp", outcome="failed") == 1
    assert delta("twostep_second_factor_failures_total", method="totp") == 1
    assert delta("twostep_security_events_total", type="second_factor_failed") == 1
    # Latency by route template; the status is a class.
    assert (
        delta(
            "twostep_http_request_duration_seconds_count", route="/api/v1/login", method="POST", status="4xx"
        )
        >= 2
    )
    assert (
        delta(
            "twostep_http_request_duration_seconds_count", route="/api/v1/login", method="POST", status="2xx"
        )
        >= 1
    )


def test_metrics_label_routes_by_template_never_by_path(server: AppServer) -> None:
    with server.client() as client:
        client.delete(f"{API}/factors/some-id-{unique_username()}")
        client.get(f"/no/such/page/{unique_username()}")
        client.get(f"{API}/openapi.json")
        client.get("/static/no-such-file.css")
        text = client.get("/metrics").text
    assert 'route="/api/v1/factors/{factor_id}"' in text
    assert 'route="unmatched"' in text
    assert 'route="/api/v1/openapi.json"' in text and 'route="/static"' in text
    assert "some-id-" not in text and "/no/such/page" not in text
    # No username, address or id in any label.
    for line in text.splitlines():
        if not line.startswith("#"):
            assert "user_" not in line and "127.0.0.1" not in line, line


def test_metrics_count_throttled_requests(tmp_path: Path) -> None:
    with AppServer(tmp_path, env={"TWOSTEP_RATE_LIMIT_PER_MINUTE": "3"}) as srv, srv.client() as client:
        statuses = [
            client.post(f"{API}/login", json={"username": "nobody_here", "password": "x" * 12}).status_code
            for _ in range(6)
        ]
        assert 429 in statuses
        scraped = samples(client.get("/metrics").text)
    assert value(scraped, "twostep_throttled_requests_total", route="/api/v1/login") >= statuses.count(429)


def test_metrics_show_the_outbox_backlog(server: AppServer) -> None:
    scraped = scrape(server)
    assert ("twostep_outbox_depth", ()) in scraped
    assert scraped[("twostep_outbox_overdue_seconds", ())] >= 0


def test_metrics_are_404_to_a_peer_outside_metrics_from(tmp_path: Path) -> None:
    # The test process is 127.0.0.1; a forwarded address from a trusted proxy does not open them.
    env = {"TWOSTEP_METRICS_FROM": "10.9.8.0/24", "TWOSTEP_TRUSTED_PROXIES": "127.0.0.1"}
    with AppServer(tmp_path, env=env) as srv, srv.client() as client:
        r = client.get("/metrics", headers={"X-Forwarded-For": "10.9.8.7"})
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"


def test_request_id_is_generated_and_returned(server: AppServer) -> None:
    with server.client() as client:
        first = client.get("/healthz").headers["x-request-id"]
        second = client.get("/healthz").headers["x-request-id"]
        # From a peer that is not a trusted proxy, a sent id is not taken.
        third = client.get("/healthz", headers={"X-Request-Id": "from-the-client"}).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first) and first != second
    assert third != "from-the-client"


def test_request_id_from_a_trusted_proxy_is_kept(tmp_path: Path) -> None:
    with AppServer(tmp_path, env={"TWOSTEP_TRUSTED_PROXIES": "127.0.0.1"}) as srv, srv.client() as client:
        kept = client.get("/healthz", headers={"X-Request-Id": "proxy-id-42"}).headers["x-request-id"]
        # Not a short token (a line break, a space): replaced.
        replaced = client.get("/healthz", headers={"X-Request-Id": "a b"}).headers["x-request-id"]
    assert kept == "proxy-id-42"
    assert replaced != "a b" and re.fullmatch(r"[0-9a-f]{32}", replaced)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.addFilter(RequestIdFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[_Records]:
    handler = _Records()
    logger = logging.getLogger("twostep")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


def test_one_access_line_per_request_with_route_status_latency(server: AppServer, records: _Records) -> None:
    with server.client() as client:
        r = client.post(f"{API}/login", json={"username": unique_username(), "password": "x" * 12})
    rid = r.headers["x-request-id"]
    access = [rec for rec in records.records if rec.name == "twostep.access" and rec.request_id == rid]  # type: ignore[attr-defined]
    assert len(access) == 1
    line = json.loads(JsonFormatter().format(access[0]))
    assert line["route"] == "/api/v1/login" and line["status"] == 401 and line["level"] == "INFO"
    assert isinstance(line["latency_ms"], float) and line["latency_ms"] >= 0
    assert {"time", "message", "request_id"} <= set(line)
    assert "x" * 12 not in json.dumps(line)


def test_security_events_are_log_lines_without_secrets(server: AppServer, records: _Records) -> None:
    with Clients(server) as clients:
        client = clients.new()
        username = signup(client)
        wrong = "not the password 12345"
        client.post(f"{API}/login", json={"username": username, "password": wrong})
    events = [rec for rec in records.records if rec.name == "twostep.security"]
    failed = [rec for rec in events if getattr(rec, "event", None) == "password_failed"]
    assert len(failed) == 1
    line = json.loads(JsonFormatter().format(failed[0]))
    assert line["event"] == "password_failed"
    assert isinstance(line["account_id"], int) and line["client_ip"] == "127.0.0.1"
    assert line["request_id"]
    dumped = json.dumps([JsonFormatter().format(rec) for rec in records.records])
    assert wrong not in dumped and STRONG_PASSWORD not in dumped
