"""E-mail notifications of security events, end to end (SEC-07, SEC-55, SEC-56).

A real `twostep serve` sends to a real SMTP server (aiosmtpd on loopback); without TWOSTEP_SMTP_URL it
writes .eml files to <data_dir>/outbox/. Client addresses come from X-Forwarded-For (the test process
is the trusted proxy), so each message can be checked for the address and browser of whoever acted.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parseaddr, parsedate_to_datetime
from pathlib import Path

import pytest

from tests.support.mail import (
    MAIL_FROM,
    Browser,
    Clock,
    Received,
    SmtpSink,
    User,
    event_of,
    hung_smtp_listener,
    leaks,
    notifications_in,
    pattern_leaks,
    sign_up,
    smtp_sink,
    wait_until,
)
from tests.support.server import Server, free_port

pytestmark = pytest.mark.e2e

TRUST_TEST_PROCESS = {"TWOSTEP_TRUSTED_PROXIES": "127.0.0.1", "TWOSTEP_MAIL_FROM": MAIL_FROM}
WHEN = re.compile(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})\s*(?:UTC|Z|\+00:00)")


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    yield from smtp_sink()


@pytest.fixture(scope="module")
def mail_server(sink: SmtpSink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {**TRUST_TEST_PROCESS, "TWOSTEP_SMTP_URL": sink.url}
    with Server(tmp_path_factory.mktemp("mail-server"), env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def clock(mail_server: Server) -> Clock:
    return Clock(mail_server)


@pytest.fixture
def cast() -> Iterator[list[User]]:
    """Users made by a test; their browsers are closed afterwards."""
    users: list[User] = []
    yield users
    for user in users:
        for b in user.browsers:
            b.close()


# --- checks -----------------------------------------------------------------------------------------


def when_of(text: str) -> datetime:
    found = WHEN.search(text)
    assert found, f"no UTC time in the message:\n{text}"
    return datetime.fromisoformat(f"{found.group(1)}T{found.group(2)}+00:00")


def check_message(
    msg: Received, *, user: User, actor: Browser, server: Server, before: datetime, after: datetime
) -> None:
    """The fields SEC-55 asks for, and no secret (by value and by shape)."""
    text = msg.text
    assert user.email is not None
    assert parseaddr(str(msg.message["To"]))[1] == user.email
    assert set(msg.rcpt_tos) == {user.email}
    assert parseaddr(str(msg.message["From"]))[1] == parseaddr(MAIL_FROM)[1]
    assert msg.message["Message-ID"]
    assert parsedate_to_datetime(str(msg.message["Date"])).utcoffset() == timedelta(0)
    # When (UTC), from where, which browser.
    at = when_of(text)
    assert before - timedelta(seconds=2) <= at <= after + timedelta(seconds=2), (at, before, after)
    assert actor.ip in text, f"client address {actor.ip} missing:\n{text}"
    assert actor.user_agent in text, f"browser {actor.user_agent!r} missing:\n{text}"
    # What to do if it was not them, and whom to reach.
    assert re.search(r"not you|wasn't you|not yourself", text, re.I), text
    assert f"{server.url}/" in text, f"no link back to the service:\n{text}"
    assert re.search(r"reply|contact|support", text, re.I), text
    check_no_secrets(msg, user)


def check_no_secrets(msg: Received, user: User) -> None:
    raw = msg.raw.decode("utf-8", "replace")
    assert leaks(msg.text, user.secret_values()) == []
    assert leaks(raw, user.secret_values()) == []
    assert pattern_leaks(msg.text) == []


def check_log(server: Server, user: User) -> None:
    """No log line holds a password, code, secret or cookie of this user (SEC-56)."""
    log = server.log_path.read_text(errors="replace")
    assert leaks(log, user.secret_values()) == []


def new_messages(sink: SmtpSink, user: User, seen: int, expected: int) -> list[Received]:
    assert user.email is not None
    got = sink.wait_for(user.email, seen + expected)
    return got[seen:]


# --- SEC-55: one message per event ----------------------------------------------------------------


@dataclass
class Scenario:
    """``setup`` prepares the account (its messages are awaited first); ``act`` causes the event and
    returns the browser that acted; ``expected`` is every message the action must cause."""

    setup: Callable[[User, Browser], int]
    act: Callable[[User, Browser, Clock], Browser]
    expected: tuple[str, ...]


def _nothing(user: User, b: Browser) -> int:
    return 0


def _enrolled(user: User, b: Browser) -> int:
    user.enrol_totp(b, "Phone")
    return 1  # two-step verification on, with its first factor: one message (H13)


def _two_factors(user: User, b: Browser) -> int:
    user.enrol_totp(b, "Phone")
    user.enrol_totp(b, "Tablet")
    return 2


def _enable(user: User, b: Browser, clock: Clock) -> Browser:
    user.enrol_totp(b, "Phone")
    return b


def _add_second(user: User, b: Browser, clock: Clock) -> Browser:
    other = user.signed_in()
    user.verify_access(other)
    user.enrol_totp(other, "Tablet")
    return other


def _remove_one(user: User, b: Browser, clock: Clock) -> Browser:
    r = b.delete(f"/factors/{user.factor_ids[1]}")
    assert r.status_code == 204, r.text
    return b


def _remove_last(user: User, b: Browser, clock: Clock) -> Browser:
    r = b.delete(f"/factors/{user.factor_ids[0]}")
    assert r.status_code == 204, r.text
    return b


def _disable(user: User, b: Browser, clock: Clock) -> Browser:
    r = b.delete("/two-factor")
    assert r.status_code == 204, r.text
    return b


def _regenerate(user: User, b: Browser, clock: Clock) -> Browser:
    user.regenerate_codes(b)
    return b


def _recovery_sign_in(user: User, b: Browser, clock: Clock) -> Browser:
    other = user.browser()
    assert "recovery_code" in user.password_step(other)["methods"]
    r = other.post("/login/recovery-code", {"code": user.recovery_codes[3]})
    assert r.status_code == 200 and r.json()["status"] == "signed_in", r.text
    return other


def _change_password(user: User, b: Browser, clock: Clock) -> Browser:
    user.verify_access(b)
    new = user.password[::-1] + " renewed"
    r = b.post("/password", {"current_password": user.password, "new_password": new})
    assert r.status_code == 204, r.text
    user.old_passwords.append(user.password)
    user.password = new
    return b


def _wrong_codes(count: int) -> Callable[[User, Browser, Clock], Browser]:
    def act(user: User, b: Browser, clock: Clock) -> Browser:
        intruder = user.browser()
        assert user.password_step(intruder)["status"] == "second_factor_required"
        for _ in range(count):
            r = intruder.post("/login/totp", {"code": user.device.wrong_code()})
            assert r.status_code == 401 and r.json()["error"] == "invalid_code", r.text
        return intruder

    return act


SCENARIOS: dict[str, Scenario] = {
    # H13: one action, one message: the first factor turns two-step verification on; one message says both.
    "two_factor_enabled": Scenario(_nothing, _enable, ("two_factor_enabled",)),
    "factor_added": Scenario(_enrolled, _add_second, ("factor_added",)),
    "factor_removed": Scenario(_two_factors, _remove_one, ("factor_removed",)),
    "last_factor_removed": Scenario(_enrolled, _remove_last, ("two_factor_disabled",)),
    "two_factor_disabled": Scenario(_enrolled, _disable, ("two_factor_disabled",)),
    "recovery_codes_regenerated": Scenario(_enrolled, _regenerate, ("recovery_codes_regenerated",)),
    "recovery_code_used": Scenario(_enrolled, _recovery_sign_in, ("recovery_code_used",)),
    "password_changed": Scenario(_nothing, _change_password, ("password_changed",)),
    # SEC-07: correct password, then three wrong codes in the same sign-in: ONE message.
    "second_factor_failed": Scenario(_enrolled, _wrong_codes(3), ("second_factor_failed",)),
    "second_factor_locked": Scenario(
        _enrolled, _wrong_codes(5), ("second_factor_failed", "second_factor_locked")
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_sec55_each_event_sends_exactly_one_message_with_the_required_fields(
    name: str, mail_server: Server, sink: SmtpSink, clock: Clock, cast: list[User]
) -> None:
    """SEC-55 (and SEC-07 for the failed second step): one message per event, to the account's address,
    saying what happened, when (UTC), from which address and browser, and what to do if it was not them;
    no code, recovery code, secret, password or cookie in any message or log line (SEC-56)."""
    scenario = SCENARIOS[name]
    user, b = sign_up(mail_server, clock)
    cast.append(user)
    assert user.email is not None
    user.verify_access(b)  # up front, so that the action is the only thing that happens afterwards
    setup_count = scenario.setup(user, b)
    setup_messages = sink.wait_for(user.email, setup_count, quiet=0.6)
    assert len(setup_messages) == setup_count, [m.message["Subject"] for m in setup_messages]

    before = clock.now()
    actor = scenario.act(user, b, clock)
    after = clock.now()

    got = new_messages(sink, user, setup_count, len(scenario.expected))
    assert Counter(event_of(m.message) for m in got) == Counter(scenario.expected), [
        m.message["Subject"] for m in got
    ]
    for msg in got:
        check_message(msg, user=user, actor=actor, server=mail_server, before=before, after=after)
    for msg in sink.to(user.email):
        check_no_secrets(msg, user)
    check_log(mail_server, user)


def test_sec07_three_wrong_codes_then_expiry_still_one_message(
    mail_server: Server, sink: SmtpSink, clock: Clock, cast: list[User]
) -> None:
    """SEC-07: a sign-in with the right password and three wrong codes is told once; when that pending
    sign-in later expires it is not told again as abandoned. The security log has the three failures."""
    user, b = sign_up(mail_server, clock)
    cast.append(user)
    assert user.email is not None
    user.enrol_totp(b)
    assert len(sink.wait_for(user.email, 1, quiet=0.3)) == 1
    before = clock.now()
    intruder = _wrong_codes(3)(user, b, clock)
    after = clock.now()
    clock.advance(5 * 60 + 15)  # the pending sign-in expires; the sweep runs every 0.5 s
    time.sleep(1.0)
    got = new_messages(sink, user, 1, 1)
    assert [event_of(m.message) for m in got] == ["second_factor_failed"]
    check_message(got[0], user=user, actor=intruder, server=mail_server, before=before, after=after)
    events = b.get("/security-events").json()["events"]
    types = Counter(e["type"] for e in events)
    assert types["second_factor_failed"] == 3
    assert types["second_factor_abandoned"] == 0


def test_sec07_abandoned_second_step_gives_one_event_and_one_message(
    mail_server: Server, sink: SmtpSink, clock: Clock, cast: list[User]
) -> None:
    """SEC-07/SEC-55: password accepted, second step never done; when the 5-minute pending sign-in
    expires exactly one `second_factor_abandoned` event and one message name the intruder's address."""
    user, b = sign_up(mail_server, clock)
    cast.append(user)
    assert user.email is not None
    user.enrol_totp(b)
    assert len(sink.wait_for(user.email, 1, quiet=0.3)) == 1
    intruder = user.browser()
    assert user.password_step(intruder)["status"] == "second_factor_required"
    time.sleep(1.2)
    assert len(sink.to(user.email)) == 1, "nothing is sent while the sign-in is still pending"
    before = clock.now()
    clock.advance(5 * 60 + 15)
    got = new_messages(sink, user, 1, 1)
    after = clock.now()
    assert [event_of(m.message) for m in got] == ["second_factor_abandoned"]
    check_message(
        got[0],
        user=user,
        actor=intruder,
        server=mail_server,
        before=before + timedelta(minutes=5),
        after=after,
    )
    events = [e for e in b.get("/security-events").json()["events"] if e["type"] == "second_factor_abandoned"]
    assert len(events) == 1
    assert events[0]["ip"] == intruder.ip
    assert events[0]["user_agent"] == intruder.user_agent
    # The expired sign-in cannot be finished any more.
    r = intruder.post("/login/totp", {"code": user.device.code()})
    assert r.status_code == 401 and r.json()["error"] == "no_pending_login"
    check_log(mail_server, user)


def test_sec07_pending_sign_in_ended_by_logout_still_counts_as_abandoned(
    mail_server: Server, sink: SmtpSink, clock: Clock, cast: list[User]
) -> None:
    """SEC-07: someone who got the password right and then logs out of the second step (instead of
    letting it expire) has still abandoned it: the owner gets one event and one message."""
    user, b = sign_up(mail_server, clock)
    cast.append(user)
    assert user.email is not None
    user.enrol_totp(b)
    assert len(sink.wait_for(user.email, 1, quiet=0.3)) == 1
    intruder = user.browser()
    assert user.password_step(intruder)["status"] == "second_factor_required"
    assert intruder.post("/logout").status_code == 204
    clock.advance(5 * 60 + 15)
    got = sink.wait_for(user.email, 2, timeout=4, quiet=0.6)[1:]
    types = [e["type"] for e in b.get("/security-events").json()["events"]]
    assert types.count("second_factor_abandoned") == 1, types
    assert [event_of(m.message) for m in got] == ["second_factor_abandoned"]
    assert intruder.ip in got[0].text


def test_sec55_no_email_address_means_no_message(
    mail_server: Server, sink: SmtpSink, clock: Clock, cast: list[User]
) -> None:
    """SEC-55 negative: an account without an address gets events but no message is sent anywhere."""
    before = len(sink.all())
    user, b = sign_up(mail_server, clock, email=False)
    cast.append(user)
    user.enrol_totp(b)
    user.regenerate_codes(b)
    time.sleep(1.2)
    assert not [m for m in sink.all()[before:] if user.username in m.text]
    types = {e["type"] for e in b.get("/security-events").json()["events"]}
    assert {"two_factor_enabled", "factor_added", "recovery_codes_regenerated"} <= types


def test_sec55_address_line_reaches_the_reader_unmangled(
    mail_server: Server, sink: SmtpSink, clock: Clock, cast: list[User]
) -> None:
    """SEC-55: the client-address line reads as written; SMTP delivery must not mbox-escape it."""
    user, b = sign_up(mail_server, clock)
    cast.append(user)
    assert user.email is not None
    user.enrol_totp(b)
    got = sink.wait_for(user.email, 1, quiet=0.2)
    assert got
    for msg in got:
        lines = msg.text.splitlines()
        assert not [line for line in lines if line.startswith(">From")], msg.text


# --- SMTP outage -------------------------------------------------------------------------------------


def _cause_three_messages(user: User, b: Browser) -> tuple[list[float], Browser]:
    """Events for three messages (2FA on with its first factor, new codes, failed second step); their
    durations."""
    durations: list[float] = []
    t = time.monotonic()
    user.enrol_totp(b)
    durations.append(time.monotonic() - t)
    t = time.monotonic()
    user.regenerate_codes(b)
    durations.append(time.monotonic() - t)
    intruder = user.browser()
    user.password_step(intruder)
    t = time.monotonic()
    r = intruder.post("/login/totp", {"code": user.device.wrong_code()})
    durations.append(time.monotonic() - t)
    assert r.status_code == 401
    return durations, intruder


def test_sec55_smtp_down_then_up_every_message_arrives_exactly_once(tmp_path: Path, cast: list[User]) -> None:
    """SEC-55 durability: with nothing listening on the SMTP port the requests still succeed at once;
    the messages are retried with backoff (10 s after one failure, 20 s after two) on the server clock;
    when SMTP is up every message arrives exactly once, and never again later."""
    port = free_port()
    env = {**TRUST_TEST_PROCESS, "TWOSTEP_SMTP_URL": f"smtp://127.0.0.1:{port}"}
    with Server(tmp_path / "srv", env=env) as server:
        clock = Clock(server)
        user, b = sign_up(server, clock, link=False)
        cast.append(user)
        assert user.email is not None
        user.verify_access(b)
        durations, _ = _cause_three_messages(user, b)
        # Delivery is not in the request: well under the 10 s an SMTP attempt may take.
        assert max(durations) < 3.0, durations

        def failures(attempt: int) -> int:
            return server.log().count(f"(attempt {attempt})")

        assert wait_until(lambda: failures(1) >= 3, 10), server.log()
        time.sleep(1.0)
        assert failures(2) == 0, "retried before the 10 s backoff"
        clock.advance(11)
        assert wait_until(lambda: failures(2) >= 3, 10), server.log()

        with SmtpSink(port) as sink:
            time.sleep(1.5)
            assert sink.to(user.email) == [], "retried before the 20 s backoff"
            clock.advance(21)
            got = sink.wait_for(user.email, 3, quiet=1.5)
            assert Counter(event_of(m.message) for m in got) == Counter(
                ["two_factor_enabled", "recovery_codes_regenerated", "second_factor_failed"]
            )
            assert len({str(m.message["Message-ID"]) for m in got}) == 3
            clock.advance(3600)
            time.sleep(1.5)
            assert len(sink.to(user.email)) == 3, "a delivered message was sent again"
            for msg in got:
                check_no_secrets(msg, user)
        check_log(server, user)


def test_sec55_hung_smtp_server_does_not_slow_the_requests(tmp_path: Path, cast: list[User]) -> None:
    """SEC-55: sending never blocks the request that caused it, even when the SMTP server accepts the
    connection and then says nothing (the delivery worker waits on it, the requests do not)."""
    listener = hung_smtp_listener()
    port = listener.getsockname()[1]
    env = {**TRUST_TEST_PROCESS, "TWOSTEP_SMTP_URL": f"smtp://127.0.0.1:{port}"}
    server = Server(tmp_path / "srv", env=env).start()
    try:
        clock = Clock(server)
        user, b = sign_up(server, clock)
        cast.append(user)
        user.verify_access(b)
        user.enrol_totp(b)
        time.sleep(1.0)  # the delivery worker is now stuck on the silent server
        durations = _more_events(user, b)
        # The worker waits up to 10 s on the silent server; a request that waited for it would too.
        assert max(durations) < 3.0, durations
        assert "(attempt 1)" not in server.log(), "the SMTP attempt should still be hanging"
    finally:
        listener.close()  # resets the stuck connection, so the server stops promptly
        server.stop()


def _more_events(user: User, b: Browser) -> list[float]:
    durations: list[float] = []
    for _ in range(2):
        t = time.monotonic()
        user.regenerate_codes(b)
        durations.append(time.monotonic() - t)
    intruder = user.browser()
    user.password_step(intruder)
    t = time.monotonic()
    r = intruder.post("/login/totp", {"code": user.device.wrong_code()})
    durations.append(time.monotonic() - t)
    assert r.status_code == 401
    return durations


# --- no SMTP configured: .eml files --------------------------------------------------------------------


def test_sec55_without_smtp_url_messages_are_eml_files_in_the_outbox(
    tmp_path: Path, cast: list[User]
) -> None:
    """SEC-55: without TWOSTEP_SMTP_URL each event is one .eml file in <data_dir>/outbox/, a parseable
    message with the same fields as over SMTP, and no secret."""
    data_dir = tmp_path / "srv"
    with Server(data_dir, env=TRUST_TEST_PROCESS) as server:
        clock = Clock(server)
        folder = data_dir / "outbox"
        user, b = sign_up(server, clock)
        cast.append(user)
        user.verify_access(b)
        before = clock.now()
        user.enrol_totp(b)
        user.regenerate_codes(b)
        after = clock.now()
        assert wait_until(lambda: len(notifications_in(folder)) >= 2, 10)
        intruder_before = clock.now()
        intruder = _wrong_codes(3)(user, b, clock)
        intruder_after = clock.now()
        assert wait_until(lambda: len(notifications_in(folder)) >= 3, 10)
        time.sleep(1.2)
        files = notifications_in(folder)
        assert len(files) == 3, [m.message["Subject"] for m in files]
        assert Counter(event_of(m.message) for m in files) == Counter(
            ["two_factor_enabled", "recovery_codes_regenerated", "second_factor_failed"]
        )
        for msg in files:
            if event_of(msg.message) == "second_factor_failed":
                check_message(
                    msg,
                    user=user,
                    actor=intruder,
                    server=server,
                    before=intruder_before,
                    after=intruder_after,
                )
            else:
                check_message(msg, user=user, actor=b, server=server, before=before, after=after)
        # Written once: later rounds of the delivery loop add nothing.
        clock.advance(3600)
        time.sleep(1.2)
        assert len(notifications_in(folder)) == 3
        check_log(server, user)


# --- H13: one action, one message; no mail flood ---------------------------------------------------------


def test_H13_turning_two_step_on_sends_one_message_that_names_both(
    mail_server: Server, sink: SmtpSink, clock: Clock, cast: list[User]
) -> None:
    """H13: adding the first factor turns two-step verification on: exactly one message, which says that
    two-step verification is on and that a second factor (named) was added; the security log keeps both
    events."""
    user, b = sign_up(mail_server, clock)
    cast.append(user)
    assert user.email is not None
    user.verify_access(b)
    before = clock.now()
    user.enrol_totp(b, "Work phone")
    after = clock.now()
    got = sink.wait_for(user.email, 1, quiet=2.0)
    assert len(got) == 1, [m.message["Subject"] for m in got]
    assert event_of(got[0].message) == "two_factor_enabled"
    text = got[0].text
    assert re.search(r"turned on", text, re.I) and re.search(r"second factor was added", text, re.I), text
    assert "Factor: Work phone" in text
    check_message(got[0], user=user, actor=b, server=mail_server, before=before, after=after)
    types = Counter(e["type"] for e in b.get("/security-events").json()["events"])
    assert types["factor_added"] == 1 and types["two_factor_enabled"] == 1


def test_H13_twenty_abandoned_sign_ins_send_the_first_at_once_and_then_one_summary(
    mail_server: Server, sink: SmtpSink, clock: Clock, cast: list[User]
) -> None:
    """H13: twenty abandoned sign-ins of one account within 15 minutes: the first message goes out at once
    (no clock move), the other nineteen are held and counted, and 15 minutes after the first exactly one
    more message says "19 times"; never zero, never twenty. The security log has all twenty."""
    user, b = sign_up(mail_server, clock)
    cast.append(user)
    assert user.email is not None
    user.enrol_totp(b)
    assert len(sink.wait_for(user.email, 1, quiet=0.3)) == 1
    intruder = user.browser()

    def abandon() -> None:
        assert user.password_step(intruder)["status"] == "second_factor_required"
        assert intruder.post("/logout").status_code == 204

    abandon()
    got = sink.wait_for(user.email, 2, timeout=10, quiet=0.3)
    assert [event_of(m.message) for m in got[1:]] == ["second_factor_abandoned"], "the first is not held"
    assert "sums up" not in got[1].text and "times in all" not in got[1].text
    for _ in range(19):
        abandon()
    time.sleep(2.5)  # five delivery rounds
    assert len(sink.to(user.email)) == 2, "a repeat within 15 minutes went out on its own"
    clock.advance(15 * 60 + 5)
    got = sink.wait_for(user.email, 3, timeout=10, quiet=2.0)
    assert len(got) == 3, [m.message["Subject"] for m in got]
    summary = got[2]
    assert event_of(summary.message) == "second_factor_abandoned"
    assert "19 times since our last message" in summary.text, summary.text
    assert intruder.ip in summary.text
    check_no_secrets(summary, user)
    events = b.get("/security-events").json()["events"]
    assert sum(1 for e in events if e["type"] == "second_factor_abandoned") == 20
