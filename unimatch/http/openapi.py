"""`GET /api/v1/openapi.json`: the machine-readable contract (OpenAPI 3.1),
generated from the models and route table of `unimatch.schemas` (see
`schemas.openapi`). tests/test_openapi.py checks that the app registers
exactly the routes the document describes."""

from __future__ import annotations

import functools

import orjson
from aiohttp import web

from unimatch.schemas.openapi import document

__all__ = ["document", "routes"]

routes = web.RouteTableDef()


@functools.cache
def _encoded() -> bytes:
    return orjson.dumps(document())


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(
        body=_encoded(),
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"},
    )
