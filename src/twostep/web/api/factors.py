"""Second factors, recovery codes and two-step verification on/off (docs/api.md "Second factors")."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from twostep.services import enrolment, factors
from twostep.services.factors import FactorView
from twostep.web.api.auth import iso
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
    out: dict[str, object] = {
        "id": view.id,
        "type": view.type,
        "name": view.name,
        "created_at": iso(view.created_at),
        "last_used_at": iso(view.last_used_at),
    }
    if view.type == "passkey":
        out["authenticator"] = view.authenticator
        out["synced"] = bool(view.synced)
    return out


def added_response(added: enrolment.Added) -> JSONResponse:
    body: dict[str, object] = {"factor": factor_json(added.factor)}
    if added.recovery_codes is not None:
        body["recovery_codes"] = added.recovery_codes
    return JSONResponse(body, status_code=201)


@router.get("/factors", response_model=FactorsOut)
def get_factors(request: Request, session: SignedIn) -> JSONResponse:
    # Returned as built: a factor object has the fields of its type only (passkeys add two).
    view = factors.overview(ctx_of(request), session)
    return JSONResponse(
        {
            "two_factor_enabled": view.two_factor_enabled,
            "factors": [factor_json(f) for f in view.factors],
            "recovery_codes_remaining": view.recovery_codes_remaining,
        }
    )


@router.post("/factors/totp", status_code=201, response_model=TotpEnrollmentOut)
def post_totp(request: Request, session: SignedIn, body: Empty | None = None) -> JSONResponse:
    enrollment = enrolment.begin_totp(ctx_of(request), session)
    return JSONResponse(
        {
            "enrollment_id": enrollment.enrollment_id,
            "secret": enrollment.secret,
            "otpauth_uri": enrollment.otpauth_uri,
            "qr_svg": enrollment.qr_svg,
            "expires_at": iso(enrollment.expires_at),
        },
        status_code=201,
    )


@router.post("/factors/totp/{enrollment_id}/confirm", status_code=201, response_model=FactorAddedOut)
def post_totp_confirm(
    enrollment_id: str,
    body: ConfirmTotpIn,
    request: Request,
    session: SignedIn,
) -> JSONResponse:
    added = enrolment.confirm_totp(
        ctx_of(request),
        session,
        enrollment_id=enrollment_id,
        name=body.name,
        code=body.code,
        client=client_of(request),
    )
    return added_response(added)


@router.patch("/factors/{factor_id}", response_model=FactorWrap)
def patch_factor(factor_id: str, body: RenameIn, request: Request, session: SignedIn) -> JSONResponse:
    view = factors.rename(
        ctx_of(request), session, factor_id=factor_id, name=body.name, client=client_of(request)
    )
    return JSONResponse({"factor": factor_json(view)})


@router.delete("/factors/{factor_id}", status_code=204, response_class=Response)
def delete_factor(factor_id: str, request: Request, session: SignedIn) -> Response:
    factors.remove(ctx_of(request), session, factor_id=factor_id, client=client_of(request))
    return Response(status_code=204)


@router.post("/recovery-codes", status_code=201, response_model=RecoveryCodesOut)
def post_recovery_codes(request: Request, session: SignedIn, body: Empty | None = None) -> JSONResponse:
    codes = factors.regenerate_recovery_codes(ctx_of(request), session, client=client_of(request))
    return JSONResponse({"recovery_codes": codes}, status_code=201)


@router.delete("/two-factor", status_code=204, response_class=Response)
def delete_two_factor(request: Request, session: SignedIn) -> Response:
    factors.disable(ctx_of(request), session, client=client_of(request))
    return Response(status_code=204)
