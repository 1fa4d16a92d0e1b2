"""The REST shell without the actor system: error format, request ids,
metrics by route template, readiness of PostgreSQL and Redis."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Annotated

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import Field

from unimatch.domain.config import Config
from unimatch.domain.errors import Conflict, RateLimited
from unimatch.http.app import create_app
from unimatch.http.validation import parse_body
from unimatch.schemas.base import Body


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _boom(request: web.Request) -> web.Response:
    raise RuntimeError("secret internal detail")


class _Person(Body):
    name: Annotated[str, Field(min_length=1, max_length=5)]
    age: Annotated[int, Field(ge=18)]


async def _echo(request: web.Request) -> web.Response:
    person = await parse_body(request, _Person)
    return web.json_response({"name": person.name, "age": person.age})


async def _conflict(request: web.Request) -> web.Response:
    raise Conflict("already there")


async def _limited(request: web.Request) -> web.Response:
    raise RateLimited("slow down", retry_after=7.2)


def _app(config: Config) -> web.Application:
    app = create_app(config)
    app.router.add_get("/test/boom", _boom)
    app.router.add_post("/test/echo", _echo)
    app.router.add_get("/test/conflict", _conflict)
    app.router.add_get("/test/limited/{thing}", _limited)
    return app


@pytest.fixture
async def client(aiohttp_client, config: Config) -> AsyncIterator[TestClient]:
    yield await aiohttp_client(_app(config))


async def _error(response, status: int, code: str) -> dict:
    assert response.status == status
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["error"] == code
    assert body["status_code"] == status
    return body


async def test_unknown_path_is_json_404(client: TestClient) -> None:
    await _error(await client.get("/api/v1/nope"), 404, "not_found")


async def test_wrong_method_is_json_405_with_allow(client: TestClient) -> None:
    response = await client.delete("/healthz")
    await _error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


async def test_bad_json_is_400(client: TestClient) -> None:
    response = await client.post("/test/echo", data=b"{not json",
                                 headers={"Content-Type": "application/json"})
    body = await _error(response, 400, "invalid_json")
    assert body["detail"] == {"body": ["malformed JSON"]}
    response = await client.post("/test/echo", json=[1, 2])
    await _error(response, 400, "invalid_json")


async def test_validation_lists_every_field(client: TestClient) -> None:
    response = await client.post("/test/echo", json={"name": "toolongname", "age": 12})
    body = await _error(response, 400, "validation_failed")
    assert set(body["detail"]) == {"name", "age"}
    response = await client.post("/test/echo", json={"name": "Amina", "age": 21})
    assert response.status == 200
    assert await response.json() == {"name": "Amina", "age": 21}


async def test_unexpected_error_is_500_without_stack(client: TestClient) -> None:
    response = await client.get("/test/boom")
    body = await _error(response, 500, "internal_error")
    text = str(body)
    assert "secret internal detail" not in text
    assert "Traceback" not in text


async def test_domain_errors_map_to_status(client: TestClient) -> None:
    await _error(await client.get("/test/conflict"), 409, "conflict")
    response = await client.get("/test/limited/x")
    await _error(response, 429, "rate_limited")
    assert response.headers["Retry-After"] == "7"


async def test_request_id_is_echoed_or_minted(client: TestClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-Id": "abcdef123456"})
    assert response.headers["X-Request-Id"] == "abcdef123456"
    response = await client.get("/healthz", headers={"X-Request-Id": "bad id!"})
    minted = response.headers["X-Request-Id"]
    assert minted != "bad id!" and len(minted) == 32
    response = await client.get("/nowhere")
    assert response.headers["X-Request-Id"]


async def test_metrics_use_route_templates(client: TestClient) -> None:
    await client.get("/test/limited/user-1234")
    await client.get("/test/limited/user-5678")
    response = await client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    assert 'route="/test/limited/{thing}"' in text
    assert "user-1234" not in text
    assert 'status="429"' in text


async def test_ready_when_postgres_and_redis_answer(client: TestClient) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    body = await response.json()
    assert body["checks"] == {"postgres": "ok", "redis": "ok"}
    assert (await client.get("/healthz")).status == 200


async def test_readyz_names_redis_when_unreachable(aiohttp_client, config: Config) -> None:
    broken = config.with_(redis_url=f"redis://127.0.0.1:{_closed_port()}/0")
    client = await aiohttp_client(_app(broken))
    body = await _error(await client.get("/readyz"), 503, "not_ready")
    assert body["detail"]["failed"] == ["redis"]
    assert (await client.get("/healthz")).status == 200


async def test_readyz_names_postgres_when_unreachable(aiohttp_client, config: Config) -> None:
    broken = config.with_(database_url=f"postgresql://postgres@127.0.0.1:{_closed_port()}/x",
                          pg_retries=1)
    client = await aiohttp_client(_app(broken))
    body = await _error(await client.get("/readyz"), 503, "not_ready")
    assert body["detail"]["failed"] == ["postgres"]
