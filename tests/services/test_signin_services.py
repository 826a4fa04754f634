"""Sign-in, verify access and factors through the service functions, on SQLite and PostgreSQL."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from tests.support import STRONG_PASSWORD
from tests.support.services import code_at, pending_login, signed_up, verified, with_totp
from twostep.core import totp
from twostep.core.clock import SettableClock
from twostep.core.errors import (
    InvalidCode,
    InvalidCredentials,
    InvalidEnrollmentCode,
    NoPendingLogin,
    NotSignedIn,
    TooManyAttempts,
    VerifyAccessRequired,
)
from twostep.core.passwords import PasswordHasher
from twostep.services import enrolment, factors, sign_in, verify_access
from twostep.services.context import Context
from twostep.services.sessions import authenticate
from twostep.storage import accounts
from twostep.storage.tables import factors as factors_table
from twostep.storage.tables import recovery_codes, sessions


def test_SEC_01_a_pending_sign_in_is_not_signed_in(ctx: Context, clock: SettableClock) -> None:
    user = with_totp(ctx, clock)
    token = pending_login(ctx, user)
    with pytest.raises(NotSignedIn):
        authenticate(ctx, token)


def test_SEC_18_a_code_works_once_across_sign_in_and_verify_access(
    ctx: Context, clock: SettableClock
) -> None:
    user = with_totp(ctx, clock)
    code = code_at(user.secret, clock.now())
    token = pending_login(ctx, user)
    user.token = sign_in.totp_step(ctx, token=token, code=code, client=user.client).token
    with pytest.raises(InvalidCode):
        sign_in.totp_step(ctx, token=pending_login(ctx, user), code=code, client=user.client)
    user.token = verify_access.with_password(
        ctx, user.session(ctx), password=STRONG_PASSWORD, client=user.client
    ).token
    with pytest.raises(InvalidCode):
        verify_access.with_totp(ctx, user.session(ctx), code=code, client=user.client)
    # The next step's code works (SEC-18 e).
    result = verify_access.with_totp(
        ctx, user.session(ctx), code=code_at(user.secret, clock.now(), 1), client=user.client
    )
    assert result.status == "verified"


def test_SEC_18_d_the_confirmation_code_cannot_sign_in(ctx: Context, clock: SettableClock) -> None:
    user = with_totp(ctx, clock)  # confirmed with the code of step T-1
    assert user.confirmed_at is not None
    with pytest.raises(InvalidCode):
        sign_in.totp_step(
            ctx,
            token=pending_login(ctx, user),
            code=code_at(user.secret, user.confirmed_at, -1),
            client=user.client,
        )


@pytest.mark.parametrize(("steps", "accepted"), [(-1, True), (0, True), (1, True), (-2, False), (2, False)])
def test_SEC_20_window_is_one_step_each_way(
    ctx: Context, clock: SettableClock, steps: int, accepted: bool
) -> None:
    user = with_totp(ctx, clock)
    clock.advance(120)  # well past the confirmation step
    token = pending_login(ctx, user)
    code = code_at(user.secret, clock.now(), steps)
    if accepted:
        assert sign_in.totp_step(ctx, token=token, code=code, client=user.client).status == "signed_in"
    else:
        with pytest.raises(InvalidCode):
            sign_in.totp_step(ctx, token=token, code=code, client=user.client)


def test_SEC_03_pending_sign_in_expires_after_five_minutes(ctx: Context, clock: SettableClock) -> None:
    user = with_totp(ctx, clock)
    token = pending_login(ctx, user)
    clock.advance(5 * 60 + 1)
    with pytest.raises(NoPendingLogin):
        sign_in.totp_step(ctx, token=token, code=code_at(user.secret, clock.now()), client=user.client)


def test_SEC_26_failures_accumulate_across_fresh_logins_and_success_resets(
    ctx: Context, clock: SettableClock
) -> None:
    user = with_totp(ctx, clock)
    for _ in range(5):
        with pytest.raises(InvalidCode):
            sign_in.totp_step(ctx, token=pending_login(ctx, user), code="000000", client=user.client)
    with pytest.raises(TooManyAttempts) as caught:
        sign_in.totp_step(
            ctx, token=pending_login(ctx, user), code=code_at(user.secret, clock.now()), client=user.client
        )
    assert caught.value.retry_after == 30
    clock.advance(31)
    token = pending_login(ctx, user)
    assert sign_in.totp_step(ctx, token=token, code=code_at(user.secret, clock.now()), client=user.client)
    # Reset: five more free failures.
    for _ in range(5):
        with pytest.raises(InvalidCode):
            sign_in.totp_step(ctx, token=pending_login(ctx, user), code="000000", client=user.client)


def test_SEC_33_SEC_36_recovery_code_signs_in_once_and_counts_as_verified(
    ctx: Context, clock: SettableClock
) -> None:
    user = with_totp(ctx, clock)
    code = user.recovery_codes[2]
    result = sign_in.recovery_step(
        ctx, token=pending_login(ctx, user), code=code.lower().replace("-", " "), client=user.client
    )
    assert result.recovery_codes_remaining == 9
    session = authenticate(ctx, result.token)
    assert session.second_factor == "recovery_code"
    assert session.access_verified(clock.now())
    with pytest.raises(InvalidCode):
        sign_in.recovery_step(ctx, token=pending_login(ctx, user), code=code, client=user.client)
    factors.disable(ctx, session, client=user.client)
    with ctx.db.transaction() as conn:
        codes_left = conn.execute(
            select(recovery_codes.c.id).where(recovery_codes.c.account_id == session.account_id)
        ).all()
        left = conn.execute(
            select(factors_table.c.id).where(factors_table.c.account_id == session.account_id)
        ).all()
    assert left == []
    assert codes_left == []


def test_SEC_31_recovery_codes_are_stored_as_salted_argon2id_hashes(
    ctx: Context, clock: SettableClock
) -> None:
    user = with_totp(ctx, clock)
    with ctx.db.transaction() as conn:
        rows = conn.execute(select(recovery_codes.c.selector, recovery_codes.c.code_hash)).all()
    mine = [r for r in rows if any(c.replace("-", "").startswith(r.selector) for c in user.recovery_codes)]
    assert len(mine) >= 10
    salts = {r.code_hash.split("$")[4] for r in mine}
    assert len(salts) == len(mine)
    for code in user.recovery_codes:
        plain = code.replace("-", "")
        assert all(plain[2:] not in r.code_hash and plain not in r.code_hash for r in rows)
        assert all(r.code_hash.startswith("$argon2id$") for r in mine)


def test_SEC_44_password_alone_does_not_verify_access_with_two_step_on(
    ctx: Context, clock: SettableClock
) -> None:
    user = with_totp(ctx, clock)
    user.token = sign_in.totp_step(
        ctx, token=pending_login(ctx, user), code=code_at(user.secret, clock.now()), client=user.client
    ).token
    result = verify_access.with_password(ctx, user.session(ctx), password=STRONG_PASSWORD, client=user.client)
    assert result.status == "second_factor_required"
    user.token = result.token
    with pytest.raises(VerifyAccessRequired):
        enrolment.begin_totp(ctx, user.session(ctx))


def test_SEC_45_verified_access_lasts_ten_minutes(ctx: Context, clock: SettableClock) -> None:
    user = signed_up(ctx)
    verified(ctx, user)
    enrolment.begin_totp(ctx, user.session(ctx))
    clock.advance(10 * 60 + 1)
    with pytest.raises(VerifyAccessRequired):
        enrolment.begin_totp(ctx, user.session(ctx))


def test_enrolment_reports_clock_skew_in_whole_steps(ctx: Context, clock: SettableClock) -> None:
    user = signed_up(ctx)
    verified(ctx, user)
    enrollment = enrolment.begin_totp(ctx, user.session(ctx))
    secret = totp.decode_secret(enrollment.secret)
    with pytest.raises(InvalidEnrollmentCode) as caught:
        enrolment.confirm_totp(
            ctx,
            user.session(ctx),
            enrollment_id=enrollment.enrollment_id,
            name="x",
            code=code_at(secret, clock.now(), -6),
            client=user.client,
        )
    assert caught.value.clock_skew_seconds == -180


def test_SEC_12_hash_is_rewritten_when_parameters_rise(ctx: Context, clock: SettableClock) -> None:
    user = signed_up(ctx)
    stronger = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
    ctx.hasher = stronger
    sign_in.password_step(
        ctx, username=user.username, password=STRONG_PASSWORD, client=user.client, current_token=None
    )
    with ctx.db.transaction() as conn:
        account = accounts.by_username(conn, user.username)
    assert account is not None
    assert re.match(r"^\$argon2id\$v=19\$m=19456,t=2,p=1\$", account.password_hash)
    assert not stronger.needs_rehash(account.password_hash)


def test_SEC_05_unknown_user_costs_a_dummy_verification(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    original = ctx.hasher.dummy_verify

    def counting(password: str) -> None:
        calls.append(password)
        original(password)

    monkeypatch.setattr(ctx.hasher, "dummy_verify", counting)
    client = signed_up(ctx).client
    with pytest.raises(InvalidCredentials):
        sign_in.password_step(
            ctx, username="nobody_here", password=STRONG_PASSWORD, client=client, current_token=None
        )
    assert calls == [STRONG_PASSWORD]


def test_SEC_58_a_failing_store_never_signs_in(
    ctx: Context, clock: SettableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = with_totp(ctx, clock)
    token = pending_login(ctx, user)

    def broken(*_args: object, **_kwargs: object) -> bool:
        raise RuntimeError("database went away")

    monkeypatch.setattr("twostep.storage.factors.advance_totp_step", broken)
    with pytest.raises(RuntimeError):
        sign_in.totp_step(ctx, token=token, code=code_at(user.secret, clock.now()), client=user.client)
    with ctx.db.transaction() as conn:
        kinds = [r.kind for r in conn.execute(select(sessions.c.kind).where(sessions.c.token_hash != ""))]
    assert "pending" in kinds
    with pytest.raises(NotSignedIn):
        authenticate(ctx, token)


def test_SEC_46_removing_the_factor_refuses_its_codes_even_for_a_pending_sign_in(
    ctx: Context, clock: SettableClock
) -> None:
    user = with_totp(ctx, clock)
    other = pending_login(ctx, user)
    user.token = sign_in.recovery_step(
        ctx, token=pending_login(ctx, user), code=user.recovery_codes[0], client=user.client
    ).token
    listed = factors.overview(ctx, user.session(ctx)).factors
    assert factors.remove(ctx, user.session(ctx), factor_id=listed[0].id, client=user.client) is True
    with pytest.raises(InvalidCode):
        sign_in.totp_step(ctx, token=other, code=code_at(user.secret, clock.now()), client=user.client)
    assert factors.overview(ctx, user.session(ctx)).two_factor_enabled is False
