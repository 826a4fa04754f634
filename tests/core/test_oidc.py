"""amr and acr from what a session did; sub; acr_values."""

from __future__ import annotations

import pytest

from twostep.core import oidc
from twostep.core.kinds import Method


@pytest.mark.parametrize(
    ("method", "synced", "uv", "amr", "acr"),
    [
        (Method.PASSWORD, True, False, "pwd", "pwd"),
        (Method.TOTP, True, False, "pwd otp mfa", "mfa"),
        (Method.RECOVERY_CODE, True, False, "pwd otp mfa", "mfa"),
        (Method.PASSKEY, True, False, "pwd swk mfa", "phr"),
        (Method.PASSKEY, False, True, "pwd hwk user mfa", "phr"),
        (Method.PASSKEY_PASSWORDLESS, True, True, "swk user mfa", "phr"),
        (Method.PASSKEY_PASSWORDLESS, False, True, "hwk user mfa", "phr"),
    ],
)
def test_amr_and_acr_of_each_method(method: Method, synced: bool, uv: bool, amr: str, acr: str) -> None:
    values = oidc.amr_for(method, synced_passkey=synced, user_verified=uv)
    assert oidc.format_amr(values) == amr
    assert oidc.acr_of(values) == acr


def test_amr_round_trip_drops_unknown_values() -> None:
    assert oidc.parse_amr("pwd bogus otp") == ["pwd", "otp"]
    assert oidc.parse_amr(None) == []
    assert oidc.format_amr({"mfa", "otp", "pwd"}) == "pwd otp mfa"


def test_wanted_acr_takes_the_weakest_known_value() -> None:
    assert oidc.wanted_acr(None) is None
    assert oidc.wanted_acr("urn:unknown") is None
    assert oidc.wanted_acr("phr") is oidc.Acr.PHR
    assert oidc.wanted_acr("phr mfa") is oidc.Acr.MFA
    assert oidc.satisfies(oidc.Acr.PHR, oidc.Acr.MFA)
    assert not oidc.satisfies(oidc.Acr.MFA, oidc.Acr.PHR)
    assert oidc.satisfies(oidc.Acr.PWD, None)


def test_sub_is_opaque_stable_and_distinct() -> None:
    a, b = b"\x01" * 64, b"\x02" * 64
    assert oidc.subject(a) == oidc.subject(a) != oidc.subject(b)
    assert len(oidc.subject(a)) == 43 and "=" not in oidc.subject(a)


def test_a_method_without_a_rule_states_the_password_only() -> None:
    """A sign-in method added later (say, a trusted browser that skipped the second factor) must not be
    taken for a passkey: until amr_for names it, it is pwd."""

    class Fake:
        pass

    assert oidc.amr_for(Fake()) == {"pwd"}  # type: ignore[arg-type]
