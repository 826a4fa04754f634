"""Passkey use cases on SQLite and PostgreSQL with a software authenticator (security.md F)."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import select

from tests.support.services import User, pending_login, signed_up, verified
from tests.support.soft_authenticator import SoftAuthenticator
from twostep.core.clock import SettableClock
from twostep.core.errors import PasskeyRegistrationRejected, PasskeyRejected
from twostep.services import enrolment, sign_in
from twostep.services.context import Context
from twostep.storage.tables import factors


def with_passkey(ctx: Context, auth: SoftAuthenticator) -> User:
    user = signed_up(ctx)
    verified(ctx, user)
    options = enrolment.registration_options(ctx, user.session(ctx))
    added = enrolment.register_passkey(
        ctx, user.session(ctx), name="", credential=auth.create(options), client=user.client
    )
    assert added.recovery_codes is not None and len(added.recovery_codes) == 10
    return user


def rows(ctx: Context) -> list[tuple[object, ...]]:
    with ctx.db.transaction() as conn:
        return [tuple(r) for r in conn.execute(select(factors).order_by(factors.c.id))]


def test_WA_R15_a_credential_registered_to_alice_cannot_be_registered_to_bob(ctx: Context) -> None:
    auth = SoftAuthenticator("localhost", ctx.origin)
    with_passkey(ctx, auth)
    bob = signed_up(ctx)
    verified(ctx, bob)
    options = enrolment.registration_options(ctx, bob.session(ctx))
    # Re-attest Alice's existing credential id for Bob's challenge.
    replayed = auth.create(options, credential_id=auth.last.credential_id)
    before = rows(ctx)
    with pytest.raises(PasskeyRegistrationRejected):
        enrolment.register_passkey(ctx, bob.session(ctx), name="", credential=replayed, client=bob.client)
    assert rows(ctx) == before


def test_WA_R17_a_refused_registration_stores_nothing(ctx: Context) -> None:
    user = signed_up(ctx)
    verified(ctx, user)
    options = enrolment.registration_options(ctx, user.session(ctx))
    bad = SoftAuthenticator("localhost", "https://evil.example").create(options)
    before = rows(ctx)
    with pytest.raises(PasskeyRegistrationRejected):
        enrolment.register_passkey(ctx, user.session(ctx), name="", credential=bad, client=user.client)
    assert rows(ctx) == before


def test_WA_A03_bobs_assertion_inside_alices_pending_sign_in_is_refused(ctx: Context) -> None:
    alice_key = SoftAuthenticator("localhost", ctx.origin)
    bob_key = SoftAuthenticator("localhost", ctx.origin)
    alice = with_passkey(ctx, alice_key)
    with_passkey(ctx, bob_key)
    token = pending_login(ctx, alice)
    options = sign_in.passkey_options(
        ctx, token=token, ceremony_key=secrets.token_urlsafe(16), client=alice.client
    )
    challenge = options.options["challenge"]
    assert isinstance(challenge, str)
    with pytest.raises(PasskeyRejected):
        sign_in.passkey_step(
            ctx, token=token, ceremony_key=None, credential=bob_key.get(challenge), client=alice.client
        )


def test_WA_A06_the_challenge_is_single_use(ctx: Context, clock: SettableClock) -> None:
    auth = SoftAuthenticator("localhost", ctx.origin)
    user = with_passkey(ctx, auth)
    token = pending_login(ctx, user)
    options = sign_in.passkey_options(ctx, token=token, ceremony_key="x", client=user.client)
    assertion = auth.get(options.options)
    assert sign_in.passkey_step(ctx, token=token, ceremony_key=None, credential=assertion, client=user.client)
    token2 = pending_login(ctx, user)
    with pytest.raises(PasskeyRejected):
        sign_in.passkey_step(ctx, token=token2, ceremony_key=None, credential=assertion, client=user.client)


def test_WA_A16_a_failed_assertion_leaves_the_record_unchanged(ctx: Context) -> None:
    auth = SoftAuthenticator("localhost", ctx.origin, sign_count_start=5)
    user = with_passkey(ctx, auth)
    token = pending_login(ctx, user)
    options = sign_in.passkey_options(ctx, token=token, ceremony_key="x", client=user.client)
    before = rows(ctx)
    with pytest.raises(PasskeyRejected):
        sign_in.passkey_step(
            ctx,
            token=token,
            ceremony_key=None,
            client=user.client,
            credential=auth.get(options.options, origin="https://evil.example"),
        )
    assert rows(ctx) == before
