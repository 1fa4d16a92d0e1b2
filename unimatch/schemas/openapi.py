"""The OpenAPI 3.1 document, built from the route table (`schemas.api`) and
the models it names. Pure data: `http/openapi.py` serves it.

Request models are described as pydantic validates them, response models as
they serialise; every model lands once in `components.schemas`, with the
error body, the WebSocket frames and the webhook event beside them.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from unimatch.schemas import frames
from unimatch.schemas.api import OPERATIONS, TAGS, Operation, Reply
from unimatch.schemas.notifications import WebhookEvent
from unimatch.schemas.ops import Error

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"
_REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"{([^}]+)}")

ERROR_RESPONSES: dict[int, str] = {
    400: "Invalid input: `validation_failed` (detail maps each field to its messages) or "
         "`invalid_json`",
    401: "Missing, expired (`token_expired`) or invalid (`invalid_token`) token",
    403: "Not allowed: `suspended`, `unverified`, `profile_incomplete` or `forbidden`",
    404: "No such resource (or hidden from the caller)",
    409: "Conflicts with the current state",
    410: "Gone (expired)",
    413: "Body too large (`payload_too_large`): JSON bodies are at most 64 KiB",
    415: "Unsupported media type",
    429: "Rate limited; `Retry-After` says when to try again",
    500: "Unexpected error (no details are exposed)",
    503: "A dependency (database, cache, actor system) is unavailable right now",
}


def _errors_of(op: Operation) -> list[int]:
    codes = set(op.errors) | {500, 503}
    if op.secured:
        codes.add(401)
    if op.body is not None:
        codes |= {400, 413, 415}
    if op.query is not None or _PATH_PARAM.search(op.path):
        codes.add(400)
    return sorted(codes)


def _schemas() -> tuple[dict[tuple[Any, JsonSchemaMode], Any], dict[str, Any]]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Error, "serialization"),
                                                            (WebhookEvent, "serialization")]
    for op in OPERATIONS:
        if op.body is not None:
            wanted.append((op.body, "validation"))
        wanted += [(reply.model, "serialization") for reply in op.replies if reply.model]
    wanted += [(model, "validation") for model in frames.CLIENT_FRAMES]
    wanted += [(model, "serialization") for model in frames.SERVER_FRAMES]
    unique = list(dict.fromkeys(wanted))
    refs, top = models_json_schema(unique, ref_template=_REF)
    return refs, top.get("$defs", {})


def _json(schema: Any) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(mode="validation")
    parameters = []
    for name, info in model.model_fields.items():
        prop = dict(schema["properties"][name])
        # A query value is never JSON null: absent is how it is left out.
        options = prop.pop("anyOf", None)
        if options:
            concrete = [o for o in options if o.get("type") != "null"]
            prop = {**concrete[0], **prop} if len(concrete) == 1 else {"anyOf": concrete, **prop}
        prop.pop("title", None)
        description = prop.pop("description", None)
        if prop.get("default") is None:
            prop.pop("default", None)
        parameter: dict[str, Any] = {"name": name, "in": "query",
                                     "required": info.is_required(), "schema": prop}
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def _path_parameters(op: Operation) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True,
         "schema": op.path_schemas.get(name, {"type": "string", "format": "uuid"})}
        for name in _PATH_PARAM.findall(op.path)
    ]


def _reply(reply: Reply, refs: dict[Any, Any]) -> dict[str, Any]:
    response: dict[str, Any] = {"description": reply.description}
    if reply.model is not None:
        response.update(_json(refs[(reply.model, "serialization")]))
    elif reply.content is not None:
        response["content"] = reply.content
    if reply.links:
        response["links"] = reply.links
    return response


def _operation(op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
    }
    if op.description:
        operation["description"] = op.description
    parameters = [*_path_parameters(op), *(_query_parameters(op.query) if op.query else []),
                  *op.extra_parameters]
    if parameters:
        operation["parameters"] = parameters
    if op.body is not None:
        operation["requestBody"] = {"required": True,
                                    **_json(refs[(op.body, "validation")])}
    elif op.body_content is not None:
        operation["requestBody"] = {"required": True, "content": op.body_content}
    responses = {str(reply.status): _reply(reply, refs) for reply in op.replies}
    for code in _errors_of(op):
        responses.setdefault(str(code), {"$ref": f"#/components/responses/{code}"})
    operation["responses"] = responses
    if op.secured:
        operation["security"] = [{"bearerAuth": []}]
    return operation


def _responses(refs: dict[Any, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for code, description in ERROR_RESPONSES.items():
        response: dict[str, Any] = {"description": description,
                                    **_json(refs[(Error, "serialization")])}
        if code == 429:
            response["headers"] = {"Retry-After": {
                "description": "seconds to wait", "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }}
        result[str(code)] = response
    return result


def _webhooks(refs: dict[Any, Any]) -> dict[str, Any]:
    """OpenAPI 3.1 `webhooks`: what a registered receiver is sent."""
    headers = [
        {"name": "X-UniMatch-Signature", "in": "header", "required": True,
         "description": 't=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>", keyed with the '
                        "secret>",
         "schema": {"type": "string"}},
        {"name": "X-UniMatch-Event", "in": "header", "required": True,
         "schema": {"type": "string"}},
        {"name": "X-UniMatch-Delivery", "in": "header", "required": True,
         "description": "the delivery id, the same on every retry",
         "schema": {"type": "string", "format": "uuid"}},
    ]
    return {"notification": {"post": {
        "operationId": "receive_notification",
        "summary": "A notification of a subscribed kind",
        "tags": ["webhooks"],
        "parameters": headers,
        "requestBody": {"required": True, **_json(refs[(WebhookEvent, "serialization")])},
        "responses": {"200": {"description": "Any 2xx within 10 s acknowledges the "
                                             "delivery; anything else is retried with "
                                             "exponential backoff"}},
    }}}


def build(*, include_planned: bool = False) -> dict[str, Any]:
    """The document; `include_planned` adds the operations declared before
    their handlers are served."""
    refs, schemas = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        if op.planned and not include_planned:
            continue
        paths.setdefault(op.path, {})[op.method] = _operation(op, refs)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "UniMatch API",
            "version": API_VERSION,
            "summary": "Dating for university students in Kenya",
            "description": "Every non-2xx response has the body `{\"error\": <machine code>, "
                           "\"status_code\": <int>, \"detail\": ...}`; 429 responses carry "
                           "`Retry-After`. WebSocket frames: docs/websocket.md and the "
                           "`*Frame` schemas below.",
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": name} for name in TAGS],
        "paths": paths,
        "webhooks": _webhooks(refs),
        "components": {
            "schemas": schemas,
            "responses": _responses(refs),
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "An access token from /auth/login, /auth/otp/verify or "
                               "/auth/refresh (15 minutes)",
            }},
        },
    }


@functools.cache
def document() -> dict[str, Any]:
    """The served document (built once per process)."""
    return build()

