"""The ASGI application: routers, guards, error handlers (built by twostep.app from Settings)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.staticfiles import StaticFiles

from twostep import __version__
from twostep.web import errors, metrics, ops
from twostep.web import oidc as oidc_routes
from twostep.web.api import account, auth, factors, fast_login, passkeys, protect
from twostep.web.deps import WebState
from twostep.web.language import LocaleMiddleware
from twostep.web.observe import ObserveMiddleware
from twostep.web.pages import routes as pages
from twostep.web.security import (
    API_PREFIX,
    GuardMiddleware,
    Receive,
    Scope,
    Send,
    client_address,
    security_headers,
)

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

    app = TwostepAPI(
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
    # Forward authentication first: the hottest route (every request to every protected application) is
    # matched before the others.
    api.include_router(protect.router)
    api.include_router(auth.router, tags=["sign-in"])
    api.include_router(factors.router, tags=["second factors"])
    api.include_router(passkeys.router)
    api.include_router(account.router)
    for router in extra_routers or []:
        api.include_router(router)
    # OpenID Connect's endpoints before the API's and the pages': FastAPI tries the routes in order, and the
    # token and userinfo endpoints are called by applications for every sign-in (O1, O2 in bench/README.md).
    app.include_router(oidc_routes.router)
    app.include_router(api)
    app.include_router(pages.router)
    app.include_router(ops.router)
    app.include_router(oidc_routes.pages)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    errors.install(app)
    form_action = web_state.next_hosts.form_action_sources()
    app.fast_path = protect.AllowedFastPath(
        web_state,
        security=security_headers(form_action),
        record=metrics.request_done,
        default_language=LocaleMiddleware.language_or_source(web_state.ctx.default_language),
    )
    app.fast_posts = {
        step.path: fast_login.SignInStepFastPath(
            web_state,
            step,
            security=security_headers(form_action),
            record=metrics.request_done,
            default_language=LocaleMiddleware.language_or_source(web_state.ctx.default_language),
        )
        for step in (fast_login.TOTP, fast_login.PASSKEY)
    }
    app.add_middleware(GuardMiddleware, origin=web_state.ctx.origin, form_action=form_action)
    # Outside the guard: even a request it refuses gets its message in the reader's language (issue 19).
    app.add_middleware(LocaleMiddleware, default_language=web_state.ctx.default_language)

    def client_of_scope(scope: Scope) -> str:
        return client_address(Request(scope), web_state.trusted_proxies)

    # Added last, so outermost: it times and logs every response, the guards' refusals too.
    app.add_middleware(
        ObserveMiddleware, trusted_proxies=web_state.trusted_proxies, client_address=client_of_scope
    )
    return app


class TwostepAPI(FastAPI):
    """The application; its OpenAPI document gives every operation the error shape {"error", "message"} and
    the statuses of web/errors.py, instead of FastAPI's default 422. Forward authentication's allowed
    answer is given before the middleware stack (``protect.AllowedFastPath``)."""

    fast_path: Callable[[Scope, Send], Awaitable[bool]] | None = None
    # The second sign-in steps before FastAPI, by path (issue 16): None when answered, else the body to read.
    fast_posts: dict[str, Callable[[Scope, Receive, Send], Awaitable[Receive | None]]] = {}  # noqa: RUF012

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path == protect.FORWARD_AUTH_PATH:
                if (
                    self.fast_path is not None
                    and scope["method"] in ("GET", "HEAD")
                    and await self.fast_path(scope, send)
                ):
                    return
            elif scope["method"] == "POST" and (fast := self.fast_posts.get(path)) is not None:
                declined = await fast(scope, receive, send)
                if declined is None:
                    return
                receive = declined
        await super().__call__(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema:
            return self.openapi_schema
        schema = super().openapi()
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
                for status, description in errors.STATUS_DOCS.items():
                    responses[str(status)] = {"description": description, **ref}
        self.openapi_schema = schema
        return schema
