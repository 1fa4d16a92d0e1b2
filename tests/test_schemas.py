"""The schema package on its own: frame validation, the chat body rule both
transports share, and the word lists storage keeps in step with."""

from __future__ import annotations

import uuid

import pytest

from unimatch.domain.errors import ValidationFailed
from unimatch.schemas import frames, limits, vocabulary
from unimatch.schemas.text import clean_chat_body
from unimatch.storage import notifications

MATCH = str(uuid.uuid4())


def test_each_client_frame_validates_into_its_model() -> None:
    send = frames.validate_client_frame(
        {"type": "send", "match_id": MATCH, "client_msg_id": "c1", "body": " cafe\u0301 "})
    assert isinstance(send, frames.SendFrame) and send.body == "caf\u00e9"
    read = frames.validate_client_frame({"type": "read", "match_id": MATCH, "seq": 7})
    assert isinstance(read, frames.ReceiptFrame) and (read.type, read.seq) == ("read", 7)
    sync = frames.parse_client_frame(b'{"type": "sync", "cursors": {"%s": 3}}' % MATCH.encode())
    assert isinstance(sync, frames.SyncFrame) and sync.cursors == {uuid.UUID(MATCH): 3}
    assert isinstance(frames.parse_client_frame('{"type": "ping"}'), frames.PingFrame)


@pytest.mark.parametrize(("frame", "code", "field"), [
    ({"type": "nope"}, "invalid_frame", "type"),
    ({"type": "read", "match_id": MATCH, "seq": True}, "invalid_frame", "seq"),
    ({"type": "read", "match_id": MATCH, "seq": limits.SEQ_MAX + 1}, "invalid_frame", "seq"),
    ({"type": "typing", "match_id": "x", "state": True}, "invalid_frame", "match_id"),
    ({"type": "sync", "cursors": {"not-an-id": 1}}, "invalid_frame", "cursors"),
    ({"type": "send", "match_id": MATCH, "client_msg_id": "c", "body": "a\u202eb"},
     "validation_failed", "body"),
    ({"type": "send", "match_id": MATCH, "client_msg_id": "", "body": "hi"},
     "validation_failed", "client_msg_id"),
])
def test_bad_client_frames_name_the_field(frame: dict, code: str, field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        frames.validate_client_frame(frame)
    assert caught.value.code == code and field in caught.value.detail, caught.value.detail


def test_oversized_and_malformed_frames_are_refused() -> None:
    for raw in (b"x" * (limits.WS_FRAME_MAX_BYTES + 1), b"{nope", b"[1]"):
        with pytest.raises(ValidationFailed) as caught:
            frames.parse_client_frame(raw)
        assert caught.value.code == "invalid_frame" and "frame" in caught.value.detail


@pytest.mark.parametrize(("body", "message"), [
    (5, "must be a string"), ("  ", "may not be empty"), ("a\x00", "control characters"),
    ("a\u2067b", "bidirectional"), ("x" * 2001, "at most 2000 characters"),
])
def test_the_chat_body_rule(body: object, message: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        clean_chat_body(body)
    assert message in caught.value.detail["body"][0]
    assert clean_chat_body(" line one\n\tline two ") == "line one\n\tline two"


def test_storage_offers_the_contracts_notification_kinds() -> None:
    assert notifications.KINDS == vocabulary.NOTIFICATION_KINDS
