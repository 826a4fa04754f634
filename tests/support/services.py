"""The use cases called directly (no HTTP): accounts with an authenticator app, driven by the services.
Codes come from `oathtool` (tests.support.totp), never from the code under test."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tests.support import STRONG_PASSWORD, unique_client, unique_username
from tests.support.totp import PERIOD, secret_bytes, secret_text, totp_code
from twostep.core.clock import SettableClock
from twostep.services import account, enrolment, sign_in, verify_access
from twostep.services.context import Client, Context
from twostep.services.sessions import CurrentSession, authenticate


@dataclass
class User:
    username: str
    client: Client
    token: str = ""
    secret: bytes = b""
    recovery_codes: list[str] = field(default_factory=list)
    # When the authenticator app was confirmed (with the code of the step before this time's).
    confirmed_at: datetime | None = None

    def session(self, ctx: Context) -> CurrentSession:
        return authenticate(ctx, self.token)


def code_at(secret: bytes, when: datetime, steps: int = 0) -> str:
    """The code of ``secret`` for the time step of ``when`` plus ``steps``."""
    return totp_code(secret_text(secret), when.timestamp() + steps * PERIOD)


def signed_up(ctx: Context) -> User:
    user = User(unique_username(), unique_client())
    account.sign_up(ctx, username=user.username, password=STRONG_PASSWORD, email=None, client=user.client)
    user.token = sign_in.password_step(
        ctx, username=user.username, password=STRONG_PASSWORD, client=user.client, current_token=None
    ).token
    return user


def verified(ctx: Context, user: User) -> None:
    result = verify_access.with_password(ctx, user.session(ctx), password=STRONG_PASSWORD, client=user.client)
    user.token = result.token
    if result.status == "second_factor_required":
        raise AssertionError("this helper verifies accounts without a second factor only")


def with_totp(ctx: Context, clock: SettableClock, *, name: str = "Phone") -> User:
    """A signed-in user whose first authenticator app was confirmed one step ago.

    The clock (which ticks with real time) first moves to one second into the next time step, so that the
    confirmation is evaluated in the step its code was computed for even on a slow, loaded machine."""
    user = signed_up(ctx)
    verified(ctx, user)
    next_step = (int(clock.now().timestamp()) // PERIOD + 1) * PERIOD
    clock.set(datetime.fromtimestamp(next_step, UTC) + timedelta(seconds=1))
    user.confirmed_at = clock.now()
    enrollment = enrolment.begin_totp(ctx, user.session(ctx))
    user.secret = secret_bytes(enrollment.secret)
    added = enrolment.confirm_totp(
        ctx,
        user.session(ctx),
        enrollment_id=enrollment.enrollment_id,
        name=name,
        code=code_at(user.secret, user.confirmed_at, -1),
        client=user.client,
    )
    assert added.recovery_codes is not None
    user.recovery_codes = added.recovery_codes
    return user


def pending_login(ctx: Context, user: User) -> str:
    result = sign_in.password_step(
        ctx, username=user.username, password=STRONG_PASSWORD, client=user.client, current_token=None
    )
    assert result.status == "second_factor_required"
    return result.token
