"""The OpenAPI document is valid, served, and describes exactly the routes the
app registers: adding a route without documenting it fails here."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from unimatch.domain.config import Config
from unimatch.http.app import create_app
from unimatch.http.openapi import document

METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


def _app_routes(app: web.Application) -> set[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        routes.add((route.method.lower(), route.resource.canonical))
    return routes


def _documented() -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in document()["paths"].items()
        for method in item
        if method in METHODS
    }


@pytest.fixture
async def client(aiohttp_client, config: Config) -> AsyncIterator[TestClient]:
    yield await aiohttp_client(create_app(config))


def test_document_is_valid_openapi_3_1():
    spec = document()
    assert spec["openapi"].startswith("3.1")
    validate(spec)
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        **spec["components"]["securitySchemes"]["bearerAuth"],
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
    }
    error = spec["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"error", "status_code", "detail"}
    assert "Retry-After" in spec["components"]["responses"]["429"]["headers"]


def test_every_route_is_documented_and_every_documented_route_exists(config):
    registered = _app_routes(create_app(config))
    documented = _documented()
    assert registered - documented == set(), "routes missing from the OpenAPI document"
    assert documented - registered == set(), "documented operations with no route"


def test_every_operation_lists_its_errors_in_the_contract_format():
    spec = document()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert any(code.startswith("2") or code == "101" for code in responses), (
                method, path)
            for code in ("500", "503"):
                assert responses[code] == {"$ref": f"#/components/responses/{code}"}
            if operation.get("security"):
                assert "401" in responses, (method, path)


async def test_served_document_matches(client: TestClient):
    response = await client.get("/api/v1/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == document()


async def test_secured_operations_refuse_requests_without_a_token(client: TestClient):
    """What the document marks as needing a bearer token answers 401 without
    one, in the contract's error format."""
    spec = document()
    checked = 0
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if not operation.get("security"):
                continue
            concrete = path.replace("{", "").replace("}", "")
            for name in ("match_id", "user_id", "photo_id", "webhook_id", "report_id"):
                concrete = concrete.replace(name, "00000000-0000-4000-8000-000000000000")
            response = await client.request(method.upper(), concrete, json={})
            assert response.status == 401, (method, path, response.status)
            body = await response.json()
            assert body["status_code"] == 401 and body["error"] == "unauthorized"
            checked += 1
    assert checked > 20
