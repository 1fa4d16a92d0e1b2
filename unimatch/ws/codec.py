"""WebSocket frames: parse and validate what clients send, build what we send.

Every frame is a JSON object with a `type`. `parse` returns a small typed
record per client frame, or raises `ValidationFailed` (code
`invalid_frame`) naming what is wrong, which the endpoint turns into an
`error` frame without closing the socket.
"""

from __future__ import annotations

from typing import Any

import orjson

from unimatch.domain.errors import ValidationFailed
from unimatch.schemas import frames
from unimatch.schemas.limits import WS_FRAME_MAX_BYTES

# The frames a client sends, declared once in unimatch.schemas.frames.
Auth = frames.AuthFrame
Send = frames.SendFrame
Receipt = frames.ReceiptFrame
Typing = frames.TypingFrame
Sync = frames.SyncFrame
Ping = frames.PingFrame
ClientFrame = frames.ClientFrame

MAX_FRAME_BYTES = WS_FRAME_MAX_BYTES


def parse(raw: str | bytes) -> ClientFrame:
    """A client's frame as its model, or `ValidationFailed` (code
    `invalid_frame`, or `validation_failed` for a send's body or id) that
    names the request it answers where the frame said (its `context`)."""
    try:
        return frames.parse_client_frame(raw)
    except ValidationFailed as exc:
        exc.context = _context(raw)  # type: ignore[attr-defined]
        raise


def _context(raw: str | bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: data[k] for k in ("client_msg_id", "match_id") if isinstance(data.get(k), str)}


def context_of(error: Exception) -> dict[str, Any]:
    return getattr(error, "context", {})


def encode(frame: dict[str, Any]) -> bytes:
    return orjson.dumps(frame)


def error_frame(code: str, detail: Any, **context: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": code, "detail": detail}
    frame.update({k: v for k, v in context.items() if v is not None})
    return frame


PONG = encode({"type": "pong"})
SYNCED = encode({"type": "synced"})
