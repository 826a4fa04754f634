"""The reference: a bare Starlette app under the same uvicorn, answering ``{}`` to a POST.

Run by bench.servers as ``uvicorn bench.ref_app:app`` with the options ``twostep serve`` uses.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def answer(request: Request) -> JSONResponse:
    await request.body()  # read the body, as the real endpoints do
    return JSONResponse({})


app = Starlette(routes=[Route("/{path:path}", answer, methods=["POST"])])
