"""The rules of a chat message's fields, checked once, at the edge (the
WebSocket codec and the HTTP handler); the match's actor trusts them."""

from __future__ import annotations

import unicodedata
from typing import Any

from unimatch.domain.errors import ValidationFailed

MAX_BODY = 2000
MAX_CLIENT_MSG_ID = 100
_ALLOWED_CONTROLS = {"\n", "\t"}


def clean_body(body: Any) -> str:
    """The body as stored: trimmed, 1-2,000 characters, no control
    characters but newline and tab. Raises `ValidationFailed`."""
    if not isinstance(body, str):
        raise ValidationFailed({"body": ["must be a string"]})
    body = body.strip()
    if not body:
        raise ValidationFailed({"body": ["may not be empty"]})
    if len(body) > MAX_BODY:
        raise ValidationFailed({"body": [f"at most {MAX_BODY} characters"]})
    if not body.isprintable():
        for ch in body:
            if ch not in _ALLOWED_CONTROLS and unicodedata.category(ch) == "Cc":
                raise ValidationFailed({"body": ["control characters are not allowed"]})
    return body


def check_client_msg_id(client_msg_id: Any) -> str:
    if not isinstance(client_msg_id, str) or not 1 <= len(client_msg_id) <= MAX_CLIENT_MSG_ID:
        raise ValidationFailed(
            {"client_msg_id": [f"must be a string of 1 to {MAX_CLIENT_MSG_ID} characters"]}
        )
    return client_msg_id
