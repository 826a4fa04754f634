"""The operator's endpoints: GET /healthz, GET /readyz, GET /metrics (docs/api.md, "Operations").

Outside /api/v1, not in the OpenAPI document; none changes state, none is rate limited.
"""

from __future__ import annotations

import asyncio
import threading
from ipaddress import ip_address

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from twostep.core.errors import NotFound, Unavailable
from twostep.services import health, outbox
from twostep.services.outbox import Backlog
from twostep.web import metrics
from twostep.web.deps import ctx_of, state
from twostep.web.errors import error_body

router = APIRouter(include_in_schema=False)

# Readiness waits this long for the database: a hung database fails the probe instead of hanging it.
READY_TIMEOUT = 2.0
# At most one readiness check at a time in a worker: a check that has not finished (a hung database) makes
# the next probe fail at once instead of piling up threads.
_checking = threading.Lock()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _not_ready(reason: str, message: str) -> JSONResponse:
    # For load balancers and operators: the message stays English (services.health), not in the catalogues.
    return JSONResponse(
        error_body("not_ready", message, reason=reason),
        status_code=503,
        headers={"Retry-After": "5"},
    )


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    ctx = ctx_of(request)
    if not _checking.acquire(blocking=False):
        return _not_ready("database", "The previous readiness check is still waiting for the database.")

    def check() -> health.NotReady | None:
        try:
            return health.readiness(ctx)
        finally:
            _checking.release()

    try:
        result = await asyncio.wait_for(asyncio.to_thread(check), READY_TIMEOUT)
    except TimeoutError:
        return _not_ready("database", f"The database did not answer within {READY_TIMEOUT:g} seconds.")
    if result is not None:
        return _not_ready(result.reason, result.message)
    return JSONResponse({"status": "ready"})


def _backlog_or_none(request: Request) -> Backlog | None:
    try:
        return outbox.backlog(ctx_of(request))
    except Unavailable:
        return None


@router.get("/metrics")
async def metrics_endpoint(request: Request) -> Response:
    # The socket's peer, never X-Forwarded-For: a proxy in front must not open the metrics to the world.
    peer = request.client.host if request.client else ""
    try:
        allowed = any(ip_address(peer) in net for net in state(request).metrics_from)
    except ValueError:
        allowed = False
    if not allowed:
        raise NotFound()
    body = await asyncio.to_thread(metrics.exposition, lambda: _backlog_or_none(request))
    return Response(body, media_type=metrics.CONTENT_TYPE)
