"""Requests in, through the models of `unimatch.schemas`; JSON out.

`await parse_body(request, Model)` reads a JSON body within
`JSON_BODY_MAX_BYTES` (413 from `Content-Length` before reading, or as soon as
a chunked body passes it), refuses form encodings (415) and validates it
strictly; `parse_query(request, Model)` validates the query string. Either
raises `ValidationFailed` with every field's problems at once, in the
contract's `detail`: `{"field": ["message", ...]}`. A malformed UUID in a path
is a resource that does not exist (404).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from unimatch.domain.errors import NotFound, PayloadTooLarge, UnsupportedMedia, ValidationFailed
from unimatch.schemas.base import detail_of
from unimatch.schemas.limits import JSON_BODY_MAX_BYTES

M = TypeVar("M", bound=BaseModel)

# Encodings that are certainly not JSON; anything else is parsed as JSON (a
# client that forgets the header still gets a precise 400).
FORM_TYPES = frozenset({"multipart/form-data", "application/x-www-form-urlencoded"})
_NOT_AN_OBJECT = {"body": ["a JSON object is required"]}


def _too_large() -> PayloadTooLarge:
    return PayloadTooLarge(
        f"a JSON body may be at most {JSON_BODY_MAX_BYTES // 1024} KiB",
        code="payload_too_large",
    )


async def read_body(request: web.Request, limit: int = JSON_BODY_MAX_BYTES) -> bytes:
    """The raw body, at most `limit` bytes, or 413 without reading past it."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large()
    data = bytearray()
    while chunk := await request.content.read(limit + 1 - len(data)):
        data += chunk
        if len(data) > limit:
            raise _too_large()
    return bytes(data)


async def parse_body(request: web.Request, model: type[M]) -> M:
    """The body validated as `model`: 413, 415, 400 `invalid_json` or 400
    `validation_failed`."""
    if request.content_type in FORM_TYPES:
        raise UnsupportedMedia(
            "send a JSON object with Content-Type: application/json",
            code="unsupported_media_type",
        )
    raw = await read_body(request)
    if not raw.strip():
        raise ValidationFailed(_NOT_AN_OBJECT, code="invalid_json")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise _body_error(exc, model) from None


def _body_error(exc: ValidationError, model: type[BaseModel]) -> ValidationFailed:
    for error in exc.errors(include_url=False):
        if error["type"] == "json_invalid":
            return ValidationFailed({"body": ["malformed JSON"]}, code="invalid_json")
        if not error["loc"] and error["type"] in ("model_type", "dict_type"):
            return ValidationFailed(_NOT_AN_OBJECT, code="invalid_json")
    return ValidationFailed(detail_of(exc, model=model))


def parse_query(request: web.Request, model: type[M]) -> M:
    """The query string validated as `model` (the first value of a repeated key)."""
    data = {key: request.query.getone(key) for key in request.query.keys()}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(detail_of(exc, model=model)) from None


def path_uuid(request: web.Request, name: str) -> uuid.UUID:
    """A UUID from the URL; a malformed one is simply not found."""
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise NotFound(f"no such {name.removesuffix('_id')}") from None


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, default=_default),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _default(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
