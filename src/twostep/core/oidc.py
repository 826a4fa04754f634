"""OpenID Connect, the pure part: scopes, `sub`, and `amr`/`acr` from what a session actually did.

`amr` values are those of RFC 8176; `acr` is one of three classes of our own, in increasing strength
(docs/oidc.md): ``pwd`` (a password alone), ``mfa`` (a second factor that is not a passkey), ``phr``
(a passkey took part: phishing-resistant).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from enum import StrEnum
from typing import Final

from twostep.core.kinds import Method

SCOPES: Final = ("openid", "profile", "email", "groups", "offline_access")
CLAIMS: Final = (
    "sub",
    "iss",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "acr",
    "amr",
    "preferred_username",
    "name",
    "email",
    "email_verified",
    "groups",
)
# The order in which RFC 8176 values are written (a stable order makes equal sets equal strings).
_AMR_ORDER: Final = ("pwd", "otp", "hwk", "swk", "user", "mfa")


class Acr(StrEnum):
    PWD = "pwd"  # noqa: S105 (a class name, not a password)
    MFA = "mfa"
    PHR = "phr"

    @property
    def rank(self) -> int:
        return {"pwd": 0, "mfa": 1, "phr": 2}[self.value]


def subject(user_handle: bytes) -> str:
    """The `sub` of an account: stable, opaque, never the username. A hash of the WebAuthn user handle
    (64 random bytes) under a label of its own, so that it does not change when the secret key is rotated
    and reveals nothing about the handle."""
    digest = hashlib.sha256(b"twostep/oidc-sub/v1\x00" + user_handle).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def amr_for(method: Method, *, synced_passkey: bool = True, user_verified: bool = False) -> set[str]:
    """The RFC 8176 method references of one sign-in or verification made with ``method``.

    A recovery code counts as ``otp`` (a one-time password written down). A passkey is ``swk`` when it may
    be synced between devices (backup eligible), ``hwk`` when it is bound to its authenticator; ``user`` when
    the authenticator verified the user (PIN or biometrics). A passkey with user verification is two factors
    on its own (something you have and something you know or are), so it is ``mfa`` even without a password.
    """
    key = "swk" if synced_passkey else "hwk"
    if method in (Method.TOTP, Method.RECOVERY_CODE):
        return {"pwd", "otp", "mfa"}
    if method is Method.PASSKEY:
        out = {"pwd", key, "mfa"}
        if user_verified:
            out.add("user")
        return out
    if method is Method.PASSKEY_PASSWORDLESS:
        return {key, "user", "mfa"}  # user verification is required for it
    # The password, and any method not named above (a new one states nothing until it is added here).
    return {"pwd"}


def format_amr(values: Iterable[str]) -> str:
    wanted = set(values)
    return " ".join(v for v in _AMR_ORDER if v in wanted)


def parse_amr(value: str | None) -> list[str]:
    return [v for v in (value or "").split() if v in _AMR_ORDER]


def acr_of(amr: Iterable[str]) -> Acr:
    """``phr`` when a passkey took part, ``mfa`` when another second factor did, ``pwd`` otherwise."""
    values = set(amr)
    if values & {"hwk", "swk"}:
        return Acr.PHR
    if "mfa" in values or "otp" in values:
        return Acr.MFA
    return Acr.PWD


def wanted_acr(acr_values: str | None) -> Acr | None:
    """The weakest class an ``acr_values`` request accepts (a space-separated preference list); None when it
    names none of ours (OpenID Connect Core 3.1.2.1: a voluntary claim, so unknown values are ignored)."""
    known = [Acr(v) for v in (acr_values or "").split() if v in Acr.__members__.values()]
    if not known:
        return None
    return min(known, key=lambda a: a.rank)


def satisfies(have: Acr, want: Acr | None) -> bool:
    return want is None or have.rank >= want.rank


def scope_list(scope: str | None) -> list[str]:
    return [s for s in (scope or "").split() if s]
