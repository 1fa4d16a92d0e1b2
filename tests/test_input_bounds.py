"""Attacks on the inputs, against the running platform: oversized bodies,
out-of-range numbers, control and bidirectional characters in what people
type. Each must answer 400 (413, 415) in the contract's error format, never
a 500, and text that is accepted is stored normalised."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.factories import make_user
from unimatch.domain.pairs import pair_id
from unimatch.schemas import limits

HUGE = 100000000000000000000


async def _error(response, status: int, code: str) -> dict:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["error"] == code and body["status_code"] == status, body
    assert "detail" in body
    return body


async def _matched(http, db, config):
    a = await make_user(db, config)
    b = await make_user(db, config)
    for x, y in ((a, b), (b, a)):
        async with http.post("/api/v1/swipes", headers=x.auth,
                             json={"target_id": str(y.id), "action": "like"}) as resp:
            assert resp.status == 201, await resp.text()
    return a, b, pair_id(a.id, b.id)


async def test_a_json_body_past_64_kib_is_413_before_it_is_read(http) -> None:
    padding = "x" * (limits.JSON_BODY_MAX_BYTES + 1)
    body = ('{"email": "a@uonbi.ac.ke", "password": "' + padding + '"}').encode()
    async with http.post("/api/v1/auth/login", data=body,
                         headers={"Content-Type": "application/json"}) as resp:
        found = await _error(resp, 413, "payload_too_large")
        assert "64 KiB" in found["detail"]


async def test_a_chunked_json_body_is_cut_off_at_64_kib(http, db, config) -> None:
    user = await make_user(db, config)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"bio": "'
        for _ in range(64):  # 1 MiB in all, with no Content-Length
            yield b"y" * 16384
        yield b'"}'

    async with http.patch("/api/v1/me/profile", data=chunks(),
                          headers={**user.auth, "Content-Type": "application/json"}) as resp:
        await _error(resp, 413, "payload_too_large")


async def test_a_form_body_on_a_json_route_is_415(http) -> None:
    async with http.post("/api/v1/auth/login",
                         data={"email": "a@uonbi.ac.ke", "password": "x"}) as resp:
        await _error(resp, 415, "unsupported_media_type")


@pytest.mark.parametrize("query", [
    f"after_seq={HUGE}", f"before_seq={HUGE}", "after_seq=-1", "before_seq=0",
    f"after_seq={limits.SEQ_MAX + 1}", f"limit={HUGE}", "limit=0", "after_seq=1e3",
])
async def test_out_of_range_history_numbers_are_400(http, db, config, query: str) -> None:
    a, _, match_id = await _matched(http, db, config)
    async with http.get(f"/api/v1/matches/{match_id}/messages?{query}",
                        headers=a.auth) as resp:
        found = await _error(resp, 400, "validation_failed")
        assert list(found["detail"]) == [query.partition("=")[0]]
    async with http.get(f"/api/v1/matches/{match_id}/messages?after_seq={limits.SEQ_MAX}",
                        headers=a.auth) as resp:
        assert resp.status == 200 and (await resp.json())["messages"] == []


@pytest.mark.parametrize("seq", [HUGE, -1, 2**63, "5", True, 1.5])
async def test_out_of_range_read_seq_is_400(http, db, config, seq) -> None:
    a, _, match_id = await _matched(http, db, config)
    async with http.post(f"/api/v1/matches/{match_id}/read", headers=a.auth,
                         json={"seq": seq}) as resp:
        found = await _error(resp, 400, "validation_failed")
        assert list(found["detail"]) == ["seq"]


@pytest.mark.parametrize("path", ["/api/v1/discover", "/api/v1/notifications"])
async def test_out_of_range_page_limits_are_400(http, db, config, path: str) -> None:
    user = await make_user(db, config)
    async with http.get(f"{path}?limit={HUGE}", headers=user.auth) as resp:
        found = await _error(resp, 400, "validation_failed")
        assert list(found["detail"]) == ["limit"]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("display_name", "Wanjiku\x00", "control characters"),
    ("display_name", "Wan\x07jiku", "control characters"),
    ("display_name", "Wanjiku\nKamau", "line breaks"),
    ("display_name", "evil\u202egnp.exe", "bidirectional"),
    ("display_name", "\u2066Wanjiku\u2069", "bidirectional"),
    ("bio", "Hello\x00there", "control characters"),
    ("bio", "Hello \u202dthere", "bidirectional"),
    ("bio", "x" * (limits.BIO_MAX + 1), f"at most {limits.BIO_MAX}"),
    ("display_name", "x" * (limits.DISPLAY_NAME_MAX + 1), f"at most {limits.DISPLAY_NAME_MAX}"),
])
async def test_profile_text_refuses_control_and_bidi_characters(
    http, db, config, field: str, value: str, message: str
) -> None:
    user = await make_user(db, config)
    async with http.patch("/api/v1/me/profile", headers=user.auth, json={field: value}) as resp:
        found = await _error(resp, 400, "validation_failed")
        assert list(found["detail"]) == [field]
        assert message in found["detail"][field][0], found
    async with http.get("/api/v1/me", headers=user.auth) as resp:
        assert (await resp.json())["profile"][field] != value


async def test_profile_text_is_stored_normalised(http, db, config) -> None:
    """Names are NFKC (full-width letters become plain ones), prose NFC (a
    letter and its combining accent become one code point)."""
    user = await make_user(db, config)
    async with http.patch("/api/v1/me/profile", headers=user.auth, json={
        "display_name": "  \uff37\uff41\uff4e\uff4a\uff49\uff4b\uff55  ",
        "bio": "Cafe\u0301 lover\nand\treader",
    }) as resp:
        assert resp.status == 200, await resp.text()
        profile = (await resp.json())["profile"]
    assert profile["display_name"] == "Wanjiku"
    assert profile["bio"] == "Caf\u00e9 lover\nand\treader"


@pytest.mark.parametrize(("body", "message"), [
    ("hi\x00", "control characters"),
    ("pay \u202eredro", "bidirectional"),
    ("   ", "may not be empty"),
    ("x" * (limits.CHAT_BODY_MAX + 1), f"at most {limits.CHAT_BODY_MAX}"),
])
async def test_chat_bodies_refuse_control_and_bidi_characters(
    http, db, config, body: str, message: str
) -> None:
    a, _, match_id = await _matched(http, db, config)
    async with http.post(f"/api/v1/matches/{match_id}/messages", headers=a.auth,
                         json={"client_msg_id": "attack-1", "body": body}) as resp:
        found = await _error(resp, 400, "validation_failed")
        assert list(found["detail"]) == ["body"] and message in found["detail"]["body"][0]
    async with http.get(f"/api/v1/matches/{match_id}/messages", headers=a.auth) as resp:
        assert (await resp.json())["messages"] == []


async def test_chat_bodies_are_stored_nfc(http, db, config) -> None:
    a, b, match_id = await _matched(http, db, config)
    async with http.post(f"/api/v1/matches/{match_id}/messages", headers=a.auth,
                         json={"client_msg_id": "nfc-1", "body": "Karibu cafe\u0301"}) as resp:
        assert resp.status == 201, await resp.text()
    async with http.get(f"/api/v1/matches/{match_id}/messages", headers=b.auth) as resp:
        [message] = (await resp.json())["messages"]
    assert message["body"] == "Karibu caf\u00e9"
