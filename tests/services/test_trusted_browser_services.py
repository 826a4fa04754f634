"""Trusted browsers through the services, on SQLite and PostgreSQL (docs/api.md "Trusted browsers"): the
trust is bound to its account, ends exactly at its expiry, loses to a revocation, and a race of a trusted
sign-in with a revocation never leaves a trust used after it was revoked."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import select

from tests.support import STRONG_PASSWORD
from tests.support.services import User, code_at, pending_login, with_totp
from twostep.core.clock import SettableClock
from twostep.services import maintenance, sign_in, trusted_browsers
from twostep.services.context import Context
from twostep.services.sessions import authenticate
from twostep.storage.tables import sessions
from twostep.storage.tables import trusted_browsers as trusted_table


def _trusting(ctx: Context, clock: SettableClock, user: User, steps: int = 1) -> str:
    """A second step with trust_browser; returns the trusted-browser cookie value."""
    token = pending_login(ctx, user)
    result = sign_in.totp_step(
        ctx,
        token=token,
        code=code_at(user.secret, clock.now(), steps),
        client=user.client,
        trust_browser=True,
    )
    assert result.trusted is not None
    return result.trusted


def _password(ctx: Context, user: User, cookie: str | None) -> sign_in.LoginResult:
    return sign_in.password_step(
        ctx,
        username=user.username,
        password=STRONG_PASSWORD,
        client=user.client,
        current_token=None,
        trusted=cookie,
    )


def test_SEC_trust_is_per_account_and_ends_at_its_expiry(ctx: Context, clock: SettableClock) -> None:
    alice, bob = with_totp(ctx, clock), with_totp(ctx, clock)
    cookie = _trusting(ctx, clock, alice)
    assert _password(ctx, bob, cookie).status == "second_factor_required"
    result = _password(ctx, alice, cookie)
    assert result.status == "signed_in"
    session = authenticate(ctx, result.token)
    assert session.trusted_browser is not None and session.used_second_factor is False
    # Both accounts in one browser: the cookie keeps the newest first.
    both = sign_in.totp_step(
        ctx,
        token=pending_login(ctx, bob),
        code=code_at(bob.secret, clock.now(), 1),
        client=bob.client,
        trust_browser=True,
        trusted=cookie,
    ).trusted
    assert both is not None and both.endswith(cookie) and both.count(".") == 1
    assert _password(ctx, alice, both).status == "signed_in"
    assert _password(ctx, bob, both).status == "signed_in"

    # The clock also ticks with real time (and the hashes take a while): a minute's margin either side.
    clock.advance(timedelta(days=30).total_seconds() - 60)
    assert _password(ctx, alice, cookie).status == "signed_in"
    clock.advance(61)
    assert _password(ctx, alice, cookie).status == "second_factor_required"
    # The sweep deletes what expired, and only that.
    with ctx.db.engine.connect() as conn:
        before = len(conn.execute(select(trusted_table.c.id)).all())
    assert maintenance.sweep(ctx)["trusted_browsers"] >= 2
    with ctx.db.engine.connect() as conn:
        assert len(conn.execute(select(trusted_table.c.id)).all()) <= before - 2


def test_SEC_a_trusted_sign_in_and_a_revocation_race_cleanly(ctx: Context, clock: SettableClock) -> None:
    """Either the sign-in used the trust before the revocation committed, or it owes the second step; after
    both, the trust is gone. (Each use case reads its clock when it starts, before it may wait for the
    other's row lock, so the order of ``last_used_at`` and ``revoked_at`` says nothing about which committed
    first: the database's order is what the conditional UPDATEs decide.)"""
    for _ in range(5):
        user = with_totp(ctx, clock)
        cookie = _trusting(ctx, clock, user)
        session = authenticate(ctx, _password(ctx, user, cookie).token)
        with ThreadPoolExecutor(2) as pool:
            signed = pool.submit(_password, ctx, user, cookie)
            revoked = pool.submit(trusted_browsers.revoke_every, ctx, session, user.client)
            result, count = signed.result(), revoked.result()
        assert count == 1
        assert result.status in ("signed_in", "second_factor_required")
        assert _password(ctx, user, cookie).status == "second_factor_required"
        if result.status == "signed_in":
            with ctx.db.engine.connect() as conn:
                used = conn.execute(
                    select(trusted_table.c.last_used_at, trusted_table.c.revoked_at).where(
                        trusted_table.c.account_id
                        == select(sessions.c.account_id)
                        .where(sessions.c.public_id == session.public_id)
                        .scalar_subquery()
                    )
                ).one()
            assert used.last_used_at is not None and used.revoked_at is not None
