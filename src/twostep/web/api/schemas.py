"""Request and response bodies of docs/api.md. Strings are strict (no coercion from numbers), and obey the
input rules of web/inputs.py (H10): such input answers 422 ``invalid_request`` before any service runs.

Handlers return these models (or dicts of their fields) through their ``response_model``; the fields a
response leaves out are unset, and left out of the JSON too (``response_model_exclude_unset``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictStr

from twostep.web.inputs import json_without_controls, secret_without_nul, text_without_controls

Short = Annotated[StrictStr, Field(max_length=256), AfterValidator(text_without_controls)]
Secret = Annotated[StrictStr, Field(max_length=4096), AfterValidator(secret_without_nul)]
Email = Annotated[StrictStr, Field(max_length=320), AfterValidator(text_without_controls)]
Credential = Annotated[dict[str, Any] | StrictStr, AfterValidator(json_without_controls)]


class In(BaseModel):
    """Unknown fields are ignored: a client cannot switch anything on by adding one (SEC-03 d)."""

    model_config = ConfigDict(extra="ignore")


class Empty(In):
    pass


class AccountIn(In):
    username: Short
    password: Secret
    email: Email | None = None
    # The token of an invitation (`twostep invite`), from the link's ?invite=.
    invite: Short | None = None


class EmailIn(In):
    email: Email


class TokenIn(In):
    token: Short


class LoginIn(In):
    username: Short
    password: Secret


class CodeIn(In):
    code: Short


class SecondStepCodeIn(CodeIn):
    """A code at the second step of sign-in; ``trust_browser`` asks to skip it in this browser next time."""

    trust_browser: StrictBool = False


class PasswordIn(In):
    password: Secret


class ConfirmTotpIn(In):
    name: Short
    code: Short


class RenameIn(In):
    name: Short


class PasskeyIn(In):
    name: Short = ""
    credential: Credential


class PasskeyAssertionIn(In):
    credential: Credential


class RegistrationOptionsIn(In):
    """Where the passkey is to be (it becomes the WebAuthn L3 ``hints``); absent: anywhere."""

    authenticator: Literal["client-device", "security-key", "hybrid"] | None = None


class SecondStepPasskeyIn(PasskeyAssertionIn):
    trust_browser: StrictBool = False


class ChangePasswordIn(In):
    current_password: Secret
    new_password: Secret


class Error(BaseModel):
    error: str
    message: str


class AccountOut(BaseModel):
    username: str


class LoginOut(BaseModel):
    status: Literal["signed_in", "second_factor_required"]
    methods: list[str] | None = None
    recovery_codes_remaining: int | None = None
    # Where to go once signed in, when the request named a `?next=` (docs/api.md "Several domains").
    next: str | None = None


class SessionOut(BaseModel):
    username: str
    signed_in_at: datetime
    second_factor: str | None
    access_verified_until: datetime | None
    groups: list[str]
    email_verified: bool
    # A trusted browser skipped the second step of this sign-in: one factor (docs/api.md "Trusted browsers").
    trusted_browser: bool = False
    # Until when the automatic passkey upgrade may add a passkey (once), right after a password sign-in.
    passkey_upgrade_until: datetime | None = None


class VerifyOut(BaseModel):
    status: Literal["verified", "second_factor_required"]
    verified_until: datetime | None = None
    methods: list[str] | None = None
    recovery_codes_remaining: int | None = None


class FactorOut(BaseModel):
    id: str
    type: Literal["totp", "passkey"]
    name: str
    created_at: datetime
    last_used_at: datetime | None
    authenticator: str | None = None
    synced: bool | None = None


class FactorsOut(BaseModel):
    two_factor_enabled: bool
    factors: list[FactorOut]
    recovery_codes_remaining: int


class TotpEnrollmentOut(BaseModel):
    enrollment_id: str
    secret: str
    otpauth_uri: str
    qr_svg: str
    expires_at: datetime


class FactorAddedOut(BaseModel):
    factor: FactorOut
    recovery_codes: list[str] | None = None


class FactorWrap(BaseModel):
    factor: FactorOut


class RecoveryCodesOut(BaseModel):
    recovery_codes: list[str]


class PublicKeyOut(BaseModel):
    publicKey: dict[str, Any]


class EventOut(BaseModel):
    type: str
    at: datetime
    ip: str
    user_agent: str
    detail: dict[str, Any]


class EventsOut(BaseModel):
    events: list[EventOut]


class SessionItemOut(BaseModel):
    id: str
    current: bool
    created_at: datetime
    last_seen_at: datetime
    ip: str
    user_agent: str


class SessionsOut(BaseModel):
    sessions: list[SessionItemOut]


class TrustedBrowserOut(BaseModel):
    id: str
    current: bool
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    ip: str
    user_agent: str


class TrustedBrowsersOut(BaseModel):
    trusted_browsers: list[TrustedBrowserOut]
