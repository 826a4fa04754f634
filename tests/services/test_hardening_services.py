"""Hardening findings H04, H06, H08 and H13 at the service level, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update

from tests.support import STRONG_PASSWORD, unique_client, unique_username
from tests.support.services import code_at, signed_up, verified, with_totp
from twostep.core import guards, recovery_codes, totp
from twostep.core.clock import SettableClock
from twostep.core.errors import NotSignedIn
from twostep.core.events import EventType
from twostep.services import account, enrolment, maintenance, operators, outbox, sign_in
from twostep.services.audit import Audit
from twostep.services.context import Context, hash_token
from twostep.services.sessions import authenticate
from twostep.storage import accounts
from twostep.storage.tables import challenges, sessions
from twostep.storage.tables import outbox as outbox_table


def test_H06_the_check_is_on_in_the_test_suite() -> None:
    """H06: the suite runs with the check on (tests/conftest.py), so any path that hashes inside a write
    transaction fails its test."""
    assert guards.enforced()


def test_H06_a_slow_hash_inside_a_write_transaction_fails(ctx: Context) -> None:
    """H06: each argon2id entry point raises while a transaction of Database is open, and runs outside."""
    hashed = ctx.hasher.hash(STRONG_PASSWORD)
    with ctx.db.transaction():
        with pytest.raises(guards.HashInTransaction):
            recovery_codes.generate_recovery_codes(1)
        with pytest.raises(guards.HashInTransaction):
            ctx.hasher.hash(STRONG_PASSWORD)
        with pytest.raises(guards.HashInTransaction):
            ctx.hasher.verify(hashed, STRONG_PASSWORD)
        with pytest.raises(guards.HashInTransaction):
            ctx.hasher.dummy_verify(STRONG_PASSWORD)
        with pytest.raises(guards.HashInTransaction):
            recovery_codes.verify_recovery_secret(secret="x" * 14, stored_hash=recovery_codes.DUMMY_HASH)
    # Outside a transaction (and after one) they run.
    assert ctx.hasher.verify(hashed, STRONG_PASSWORD)
    assert len(recovery_codes.generate_recovery_codes(1)) == 1


def test_H06_adding_a_first_factor_makes_the_codes_before_its_transaction(
    ctx: Context, clock: SettableClock
) -> None:
    """H06: the first TOTP factor (ten recovery-code hashes) is added with the check on; a second factor
    makes no codes at all."""
    user = with_totp(ctx, clock)
    assert len(user.recovery_codes) == 10
    enrollment = enrolment.begin_totp(ctx, user.session(ctx))
    added = enrolment.confirm_totp(
        ctx,
        user.session(ctx),
        enrollment_id=enrollment.enrollment_id,
        name="Tablet",
        code=code_at(totp.decode_secret(enrollment.secret), clock.now()),
        client=user.client,
    )
    assert added.recovery_codes is None and added.other_sessions_ended is None


def test_H04_the_first_factor_ends_password_only_sessions_in_its_transaction(
    ctx: Context, clock: SettableClock
) -> None:
    """H04: adding the first factor ends the account's other password-only sessions and gives the current
    one the factor; a password-only session that appears afterwards (a racing sign-in) is refused."""
    user = signed_up(ctx)
    other = sign_in.password_step(
        ctx, username=user.username, password=STRONG_PASSWORD, client=unique_client(), current_token=None
    ).token
    assert authenticate(ctx, other).second_factor is None
    verified(ctx, user)
    enrollment = enrolment.begin_totp(ctx, user.session(ctx))
    added = enrolment.confirm_totp(
        ctx,
        user.session(ctx),
        enrollment_id=enrollment.enrollment_id,
        name="Phone",
        code=code_at(totp.decode_secret(enrollment.secret), clock.now()),
        client=user.client,
    )
    assert added.other_sessions_ended == 1
    with pytest.raises(NotSignedIn):
        authenticate(ctx, other)
    assert user.session(ctx).second_factor == "totp"
    # A password-only session of this account written after the enrolment: not signed in, and gone.
    with ctx.db.transaction() as conn:
        conn.execute(
            update(sessions).where(sessions.c.token_hash == hash_token(user.token)).values(second_factor=None)
        )
    with pytest.raises(NotSignedIn):
        user.session(ctx)
    with ctx.db.transaction() as conn:
        found = select(func.count()).where(sessions.c.token_hash == hash_token(user.token))
        assert conn.execute(found).scalar_one() == 0


def _outbox_rows(ctx: Context, account_id: int) -> list[tuple[int, str, object]]:
    with ctx.db.transaction() as conn:
        rows = conn.execute(
            select(outbox_table.c.occurrences, outbox_table.c.kind, outbox_table.c.since)
            .where(outbox_table.c.account_id == account_id)
            .order_by(outbox_table.c.id)
        ).all()
    return [(int(r.occurrences), str(r.kind), r.since) for r in rows]


def _account_with_email(ctx: Context) -> int:
    name = unique_username("h13")
    account.sign_up(
        ctx, username=name, password=STRONG_PASSWORD, email=f"{name}@example.test", client=unique_client()
    )
    with ctx.db.transaction() as conn:
        found = accounts.by_username(conn, name)
    assert found is not None
    return found.id


def test_H13_repeats_from_concurrent_transactions_fold_into_one_message(ctx: Context) -> None:
    """H13: twenty events of one kind to one account, recorded by twenty concurrent transactions, give one
    waiting message that counts twenty (the unique coalescing key decides, in every worker)."""
    account_id = _account_with_email(ctx)
    barrier = threading.Barrier(20)
    errors: list[BaseException] = []

    def one() -> None:
        try:
            barrier.wait(timeout=30)
            with ctx.db.transaction() as conn:
                Audit(ctx, account_id, unique_client(), ctx.now()).record(
                    conn, EventType.SECOND_FACTOR_ABANDONED
                )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = [r for r in _outbox_rows(ctx, account_id) if r[1] == "second_factor_abandoned"]
    assert rows == [(20, "second_factor_abandoned", None)]


def test_H13_after_a_message_went_out_the_next_of_its_kind_waits_15_minutes(
    ctx: Context, clock: SettableClock, tmp_path: Path
) -> None:
    """H13: the first message is due at once; once it went out, repeats collect in one message due 15 minutes
    after it, which says how many; after that window, the next one is due at once again."""
    account_id = _account_with_email(ctx)
    with ctx.db.transaction() as conn:
        account = accounts.by_id(conn, account_id)
    assert account is not None and account.email is not None
    address = account.email
    folder = tmp_path / "outbox"
    mailer = outbox.Mailer(None, "twostep <t@example.test>", folder)

    def abandoned() -> None:
        with ctx.db.transaction() as conn:
            Audit(ctx, account_id, unique_client(), ctx.now()).record(conn, EventType.SECOND_FACTOR_ABANDONED)

    def delivered() -> list[str]:
        """Deliver everything due (the PostgreSQL database is shared with other tests), then the texts of
        this account's messages."""
        for _ in range(100):
            if outbox.deliver_due(ctx, mailer) == 0:
                break
        texts = [f.read_text() for f in sorted(folder.glob("*.eml"))] if folder.is_dir() else []
        # The address's verification link (sent at sign-up) is not one of the notifications counted here.
        return [t for t in texts if f"To: {address}" in t and "Subject: Confirm your e-mail" not in t]

    abandoned()
    assert len(delivered()) == 1
    for _ in range(19):
        clock.advance(10)
        abandoned()
        assert len(delivered()) == 1, "a repeat within 15 minutes went out at once"
    clock.advance(15 * 60)
    texts = delivered()
    assert len(texts) == 2
    summary = [t for t in texts if "sums up" in t]
    assert len(summary) == 1 and "19 times since our last message" in summary[0]
    clock.advance(16 * 60)
    abandoned()
    assert len(delivered()) == 3


def test_H08_the_sweep_deletes_dead_rows_in_bounded_batches(
    ctx: Context, clock: SettableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """H08: expired challenges, dead signed-in sessions, notifications sent over 7 days ago and undeliverable
    ones older than 7 days are deleted, a bounded batch per transaction (at most BATCH x MAX_BATCHES of a
    kind in one sweep); live rows stay."""
    monkeypatch.setattr(maintenance, "BATCH", 7)
    bound = 7 * maintenance.MAX_BATCHES
    now = ctx.now()
    mine = [f"h08-{unique_username()}-{i}" for i in range(30)]
    with ctx.db.transaction() as conn:
        for i, cid in enumerate(mine):
            conn.execute(
                challenges.insert().values(
                    id=cid[:32],
                    session_key=cid[:64],
                    purpose="passwordless",
                    challenge=b"x" * 32,
                    account_id=None,
                    expires_at=now + timedelta(minutes=5 if i < 25 else 600),
                )
            )
    live = signed_up(ctx)
    dead = signed_up(ctx)
    account_id = _account_with_email(ctx)
    for _ in range(2):
        with ctx.db.transaction() as conn:
            for kind in (EventType.PASSWORD_CHANGED, EventType.FACTOR_REMOVED):
                Audit(ctx, account_id, unique_client(), ctx.now()).record(conn, kind)
            # One kind sent, the other never delivered; both free the coalescing key as a claim does.
            conn.execute(
                update(outbox_table)
                .where(outbox_table.c.account_id == account_id, outbox_table.c.sent_at.is_(None))
                .values(coalesce_key=None)
            )
            conn.execute(
                update(outbox_table)
                .where(
                    outbox_table.c.account_id == account_id,
                    outbox_table.c.kind == "password_changed",
                    outbox_table.c.sent_at.is_(None),
                )
                .values(sent_at=ctx.now())
            )
    assert len(_outbox_rows(ctx, account_id)) == 4

    def sweep_all() -> None:
        for _ in range(100):
            done = maintenance.sweep(ctx)
            assert max(done.values()) <= bound, done
            if max(done.values()) < bound:
                return
        raise AssertionError("the sweep never finished")

    def my_challenges() -> int:
        with ctx.db.transaction() as conn:
            ids = [c[:32] for c in mine]
            return int(conn.execute(select(func.count()).where(challenges.c.id.in_(ids))).scalar_one())

    clock.advance(20 * 60)
    live.session(ctx)  # seen: its idle time starts again
    clock.advance(15 * 60)  # `dead` idle 35 minutes, `live` 15
    sweep_all()
    assert my_challenges() == 5
    live.session(ctx)
    with ctx.db.transaction() as conn:
        assert (
            conn.execute(
                select(func.count()).where(sessions.c.token_hash == hash_token(dead.token))
            ).scalar_one()
            == 0
        )
    with pytest.raises(NotSignedIn):
        authenticate(ctx, dead.token)
    assert len(_outbox_rows(ctx, account_id)) == 4, "kept for 7 days"
    clock.advance(8 * 86400)
    sweep_all()
    assert my_challenges() == 0
    assert _outbox_rows(ctx, account_id) == []
    with pytest.raises(NotSignedIn):
        live.session(ctx)


def test_H08_attempt_counters_are_swept_once_their_policy_has_forgotten_them(
    ctx: Context, clock: SettableClock
) -> None:
    """H08: the counters anonymous requests create (per address, per username and address, per username)
    are deleted once their policy forgets them; the second-factor counter of an account is never swept."""
    from twostep.core.throttle import PASSKEY_ADDRESS, PASSWORD_ADDRESS, PASSWORD_USER, PASSWORD_USER_ADDRESS
    from twostep.core.throttle import SECOND_FACTOR as SF
    from twostep.storage import throttle
    from twostep.storage.tables import throttles

    tag = unique_username()
    keys = {
        f"pw-ip:{tag}": PASSWORD_ADDRESS,
        f"pw-user-ip:{tag}|10.0.0.1": PASSWORD_USER_ADDRESS,
        f"pw-user:{tag}": PASSWORD_USER,
        f"pk-ip:{tag}": PASSKEY_ADDRESS,
        f"mfa:{tag}": SF,
    }
    with ctx.db.transaction() as conn:
        for key, policy in keys.items():
            throttle.reserve_attempt(conn, key=key, policy=policy, now=ctx.now())

    def left() -> set[str]:
        with ctx.db.transaction() as conn:
            rows = conn.execute(select(throttles.c.key).where(throttles.c.key.in_(list(keys)))).scalars()
            return set(rows)

    clock.advance(23 * 3600)
    maintenance.sweep(ctx)
    assert left() == set(keys)
    clock.advance(2 * 3600)
    maintenance.sweep(ctx)
    assert left() == {f"pw-user:{tag}", f"mfa:{tag}"}
    clock.advance(30 * 24 * 3600)
    maintenance.sweep(ctx)
    assert left() == {f"mfa:{tag}"}


def test_H08_the_sweep_forgets_expired_e_mail_links_and_old_invitations(
    ctx: Context, clock: SettableClock
) -> None:
    """Issue 12 under H08: a verification link is deleted once its 24 hours are over; an invitation a week
    after it expired or was used; live ones stay."""

    account_id = _account_with_email(ctx)
    operators.invite(ctx, expires=timedelta(days=30))
    expiring = operators.invite(ctx, expires=timedelta(hours=1))

    def counts() -> tuple[int, int]:
        with ctx.db.transaction() as conn:
            links = conn.execute(
                text("SELECT count(*) FROM email_verifications WHERE account_id = :a"), {"a": account_id}
            ).scalar_one()
            hashes = conn.execute(
                text("SELECT count(*) FROM invitations WHERE token_hash = :h"),
                {"h": hash_token(expiring.url.split("=", 1)[1])},
            ).scalar_one()
        return int(links), int(hashes)

    maintenance.sweep(ctx)
    assert counts() == (1, 1)
    clock.advance(25 * 3600)
    maintenance.sweep(ctx)
    assert counts() == (0, 1), "the invitation is kept a week after it expired"
    clock.advance(7 * 86400)
    maintenance.sweep(ctx)
    assert counts() == (0, 0)
