"""The OpenAPI document is generated from the models of `unimatch.schemas`,
valid, served, and describes exactly the routes the app registers: adding a
route without declaring it in `schemas.api` fails here."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from unimatch.domain.config import Config
from unimatch.http.app import create_app
from unimatch.http.openapi import document
from unimatch.schemas import api, limits
from unimatch.schemas.chat import SendMessage
from unimatch.schemas.profile import ProfilePatch

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


def test_document_is_generated_from_the_models():
    """Bodies are the models' own JSON schemas, limits included: the document
    cannot drift from what the handlers validate."""
    spec = document()
    schemas = spec["components"]["schemas"]
    patch = ProfilePatch.model_json_schema(ref_template="#/components/schemas/{model}")
    assert schemas["ProfilePatch"]["properties"] == patch["properties"]
    assert schemas["ProfilePatch"]["additionalProperties"] is False
    body = schemas["SendMessage"]["properties"]["body"]
    assert body["maxLength"] == limits.CHAT_BODY_MAX == 2000
    assert SendMessage.model_fields["body"].is_required()
    operation = spec["paths"]["/api/v1/matches/{match_id}/messages"]["get"]
    bounds = {p["name"]: p["schema"] for p in operation["parameters"] if p["in"] == "query"}
    assert bounds["after_seq"]["maximum"] == limits.SEQ_MAX == 2**31 - 1
    assert bounds["limit"] == {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}
    for op in api.OPERATIONS:
        if op.body is not None and not op.planned:
            request = spec["paths"][op.path][op.method]["requestBody"]
            ref = request["content"]["application/json"]["schema"]["$ref"]
            assert ref == f"#/components/schemas/{op.body.__name__}"
            assert {"400", "413", "415"} <= set(spec["paths"][op.path][op.method]["responses"])


def test_every_websocket_frame_is_described():
    schemas = document()["components"]["schemas"]
    for name in ("SendFrame", "ReceiptFrame", "TypingFrame", "SyncFrame", "PingFrame",
                 "AuthFrame", "ReadyFrame", "AckFrame", "MessageFrame", "ReceiptOutFrame",
                 "TypingOutFrame", "PresenceFrame", "MatchFrame", "UnmatchFrame",
                 "NotificationFrame", "SyncedFrame", "PongFrame", "ErrorFrame"):
        assert schemas[name]["properties"]["type"], name


def test_password_operations_are_served_from_their_models():
    spec = document()
    validate(spec)
    for path in ("/api/v1/me/password", "/api/v1/auth/password/forgot",
                 "/api/v1/auth/password/reset"):
        assert "post" in spec["paths"][path], path
    reset = spec["paths"]["/api/v1/auth/password/reset"]["post"]["requestBody"]
    assert reset["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PasswordReset"}
    assert set(spec["components"]["schemas"]["PasswordReset"]["required"]) == {
        "email", "code", "new"}
