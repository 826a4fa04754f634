"""Second factors, recovery codes and two-step verification on/off (docs/api.md "Second factors")."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from twostep.core.kinds import FactorKind
from twostep.services import enrolment, factors
from twostep.services.factors import FactorView
from twostep.web.api.schemas import (
    ConfirmTotpIn,
    Empty,
    FactorAddedOut,
    FactorsOut,
    FactorWrap,
    RecoveryCodesOut,
    RenameIn,
    TotpEnrollmentOut,
)
from twostep.web.deps import SignedIn, client_of, ctx_of

router = APIRouter()


def factor_json(view: FactorView) -> dict[str, object]:
    """A factor object (FactorOut): the fields of its type only, passkeys add two (unset ones stay out)."""
    out: dict[str, object] = {
        "id": view.id,
        "type": view.type,
        "name": view.name,
        "created_at": view.created_at,
        "last_used_at": view.last_used_at,
    }
    if view.type == FactorKind.PASSKEY:
        out["authenticator"] = view.authenticator
        out["synced"] = bool(view.synced)
    return out


def added_json(added: enrolment.Added) -> dict[str, object]:
    body: dict[str, object] = {"factor": factor_json(added.factor)}
    if added.recovery_codes is not None:
        body["recovery_codes"] = added.recovery_codes
    return body


@router.get("/factors", response_model=FactorsOut, response_model_exclude_unset=True)
def get_factors(request: Request, session: SignedIn) -> dict[str, object]:
    view = factors.overview(ctx_of(request), session)
    return {
        "two_factor_enabled": view.two_factor_enabled,
        "factors": [factor_json(f) for f in view.factors],
        "recovery_codes_remaining": view.recovery_codes_remaining,
    }


@router.post("/factors/totp", status_code=201, response_model=TotpEnrollmentOut)
def post_totp(request: Request, session: SignedIn, body: Empty | None = None) -> dict[str, object]:
    enrollment = enrolment.begin_totp(ctx_of(request), session)
    return {
        "enrollment_id": enrollment.enrollment_id,
        "secret": enrollment.secret,
        "otpauth_uri": enrollment.otpauth_uri,
        "qr_svg": enrollment.qr_svg,
        "expires_at": enrollment.expires_at,
    }


@router.post(
    "/factors/totp/{enrollment_id}/confirm",
    status_code=201,
    response_model=FactorAddedOut,
    response_model_exclude_unset=True,
)
def post_totp_confirm(
    enrollment_id: str, body: ConfirmTotpIn, request: Request, session: SignedIn
) -> dict[str, object]:
    added = enrolment.confirm_totp(
        ctx_of(request),
        session,
        enrollment_id=enrollment_id,
        name=body.name,
        code=body.code,
        client=client_of(request),
    )
    return added_json(added)


@router.patch("/factors/{factor_id}", response_model=FactorWrap, response_model_exclude_unset=True)
def patch_factor(factor_id: str, body: RenameIn, request: Request, session: SignedIn) -> dict[str, object]:
    view = factors.rename(
        ctx_of(request), session, factor_id=factor_id, name=body.name, client=client_of(request)
    )
    return {"factor": factor_json(view)}


@router.delete("/factors/{factor_id}", status_code=204, response_class=Response)
def delete_factor(factor_id: str, request: Request, session: SignedIn) -> None:
    factors.remove(ctx_of(request), session, factor_id=factor_id, client=client_of(request))


@router.post("/recovery-codes", status_code=201, response_model=RecoveryCodesOut)
def post_recovery_codes(request: Request, session: SignedIn, body: Empty | None = None) -> dict[str, object]:
    codes = factors.regenerate_recovery_codes(ctx_of(request), session, client=client_of(request))
    return {"recovery_codes": codes}


@router.delete("/two-factor", status_code=204, response_class=Response)
def delete_two_factor(request: Request, session: SignedIn) -> None:
    factors.disable(ctx_of(request), session, client=client_of(request))
