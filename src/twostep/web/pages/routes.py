"""Server-rendered pages for account holders (Jinja2), calling the same services as the API."""

from __future__ import annotations

from fastapi import APIRouter

from twostep.web.pages import account, language, protect, settings, signin, verify

router = APIRouter(include_in_schema=False)
router.include_router(signin.router)
router.include_router(verify.router)
router.include_router(settings.router)
router.include_router(account.router)
router.include_router(protect.router)
router.include_router(language.router)
