"""The ASGI application: routers, guards, error handlers (built by twostep.app from Settings)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from twostep import __version__
from twostep.web import errors
from twostep.web.api import account, auth, factors, passkeys
from twostep.web.deps import WebState
from twostep.web.pages import routes as pages
from twostep.web.security import API_PREFIX, GuardMiddleware

STATIC_DIR = __file__.rsplit("/", 1)[0] + "/static"


def build_app(
    web_state: WebState,
    *,
    extra_routers: list[APIRouter] | None = None,
    background: Callable[[], AsyncIterator[None]] | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if background is None:
            yield
            return
        async for _ in background():
            yield

    app = FastAPI(
        title="twostep",
        version=__version__,
        description="Two-step verification for web accounts: the JSON API of docs/api.md.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.web = web_state
    api = APIRouter(prefix=API_PREFIX)
    api.include_router(auth.router, tags=["sign-in"])
    api.include_router(factors.router, tags=["second factors"])
    api.include_router(passkeys.router)
    api.include_router(account.router)
    for router in extra_routers or []:
        api.include_router(router)
    app.include_router(api)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    errors.install(app)
    _document_errors(app)
    app.add_middleware(GuardMiddleware, origin=web_state.ctx.origin)
    return app


_ERROR_STATUSES = {
    "401": "Not signed in, no pending sign-in, or a credential, code or passkey refused",
    "403": "Verify access required, or a cross-site request",
    "404": "Not found",
    "409": "A conflict: name or username taken, two-step verification not on",
    "413": "Body over 64 KiB",
    "415": "Not JSON",
    "422": "Invalid request or weak password",
    "429": "Too many attempts; see Retry-After",
    "503": "Busy: too many password checks at once in this worker; see Retry-After",
}


def _document_errors(app: FastAPI) -> None:
    """Every operation documents the error shape {"error", "message"} instead of FastAPI's default 422."""

    def openapi() -> dict[str, object]:
        if app.openapi_schema:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        components["Error"] = {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": {"type": "string"},
                "message": {"type": "string"},
                "retry_after": {"type": "integer"},
                "clock_skew_seconds": {"type": "integer"},
            },
        }
        ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                responses = operation.setdefault("responses", {})
                for status, description in _ERROR_STATUSES.items():
                    responses[status] = {"description": description, **ref}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
