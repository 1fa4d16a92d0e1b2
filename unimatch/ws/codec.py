"""WebSocket frames: parse and validate what clients send, build what we send.

Every frame is a JSON object with a `type`. `parse` returns a small typed
record per client frame, or raises `ValidationFailed` (code
`invalid_frame`) naming what is wrong, which the endpoint turns into an
`error` frame without closing the socket.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from unimatch.domain.errors import ValidationFailed
from unimatch.domain.messages import check_client_msg_id, clean_body

MAX_FRAME_BYTES = 16 * 1024
MAX_CURSORS = 500


@dataclass(frozen=True)
class Auth:
    token: str


@dataclass(frozen=True)
class Send:
    match_id: uuid.UUID
    client_msg_id: str
    body: str


@dataclass(frozen=True)
class Receipt:
    status: str  # "delivered" | "read"
    match_id: uuid.UUID
    seq: int


@dataclass(frozen=True)
class Typing:
    match_id: uuid.UUID
    state: bool


@dataclass(frozen=True)
class Sync:
    cursors: dict[uuid.UUID, int]


@dataclass(frozen=True)
class Ping:
    pass


ClientFrame = Auth | Send | Receipt | Typing | Sync | Ping


def _invalid(field: str, message: str, code: str = "invalid_frame") -> ValidationFailed:
    return ValidationFailed({field: [message]}, code=code)


def _match_id(data: dict[str, Any]) -> uuid.UUID:
    value = data.get("match_id")
    try:
        if not isinstance(value, str):
            raise ValueError
        return uuid.UUID(value)
    except ValueError:
        raise _invalid("match_id", "must be a UUID") from None


def _seq(value: Any, field: str = "seq") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise _invalid(field, "must be a non-negative integer")
    return value


def parse(raw: str | bytes) -> ClientFrame:
    if len(raw) > MAX_FRAME_BYTES:
        raise _invalid("frame", f"at most {MAX_FRAME_BYTES} bytes")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _invalid("frame", "malformed JSON") from None
    if not isinstance(data, dict):
        raise _invalid("frame", "must be a JSON object")
    try:
        return _parse_object(data)
    except ValidationFailed as exc:
        # Name the request the error answers, so the client can match it.
        exc.context = {  # type: ignore[attr-defined]
            k: data[k] for k in ("client_msg_id", "match_id") if isinstance(data.get(k), str)
        }
        raise


def context_of(error: Exception) -> dict[str, Any]:
    return getattr(error, "context", {})


def _parse_object(data: dict[str, Any]) -> ClientFrame:
    kind = data.get("type")
    if kind == "send":
        match_id = _match_id(data)
        try:
            client_msg_id = check_client_msg_id(data.get("client_msg_id"))
            body = clean_body(data.get("body"))
        except ValidationFailed as exc:
            raise ValidationFailed(exc.detail, code="validation_failed") from None
        return Send(match_id, client_msg_id, body)
    if kind in ("delivered", "read"):
        return Receipt(kind, _match_id(data), _seq(data.get("seq")))
    if kind == "typing":
        state = data.get("state")
        if not isinstance(state, bool):
            raise _invalid("state", "must be true or false")
        return Typing(_match_id(data), state)
    if kind == "sync":
        cursors = data.get("cursors")
        if not isinstance(cursors, dict) or len(cursors) > MAX_CURSORS:
            raise _invalid("cursors", f"must be an object of at most {MAX_CURSORS} match ids")
        parsed: dict[uuid.UUID, int] = {}
        for key, value in cursors.items():
            try:
                match_id = uuid.UUID(key)
            except ValueError:
                raise _invalid("cursors", f"{key!r} is not a match id") from None
            parsed[match_id] = _seq(value, "cursors")
        return Sync(parsed)
    if kind == "ping":
        return Ping()
    if kind == "auth":
        token = data.get("token")
        if not isinstance(token, str) or not token:
            raise _invalid("token", "must be a non-empty string")
        return Auth(token)
    raise _invalid("type", f"unknown frame type {kind!r}")


def encode(frame: dict[str, Any]) -> bytes:
    return orjson.dumps(frame)


def error_frame(code: str, detail: Any, **context: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": code, "detail": detail}
    frame.update({k: v for k, v in context.items() if v is not None})
    return frame


PONG = encode({"type": "pong"})
SYNCED = encode({"type": "synced"})
