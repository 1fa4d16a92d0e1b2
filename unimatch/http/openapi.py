"""`GET /api/v1/openapi.json`: the machine-readable contract (OpenAPI 3.1).

The document is plain data built here, once per process. Every route the app
registers must appear in it and nothing else may (tests/test_openapi.py
checks both ways), so a new endpoint is documented in the same change that
adds it. WebSocket frames are described in docs/websocket.md; the two
WebSocket routes appear here as upgrades.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
from aiohttp import web

from unimatch.storage.moderation import ACTIONS, REASONS
from unimatch.storage.notifications import KINDS

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"
API = "/api/v1"

routes = web.RouteTableDef()

Schema = dict[str, Any]


# -- small builders ----------------------------------------------------------


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    if "$ref" in schema:
        return {"oneOf": [schema, {"type": "null"}]}
    kind = schema.get("type", "string")
    return {**schema, "type": [kind, "null"]}


def _obj(required: list[str] | None = None, extra: bool = False, **properties: Schema) -> Schema:
    return _object(required, properties, extra=extra)


def _object(
    required: list[str] | None, properties: dict[str, Schema], *, extra: bool = False
) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if not extra:
        schema["additionalProperties"] = False
    return schema


def _array(items: Schema, **limits: Any) -> Schema:
    return {"type": "array", "items": items, **limits}


UUID: Schema = {"type": "string", "format": "uuid"}
DATETIME: Schema = {"type": "string", "format": "date-time"}
DATE: Schema = {"type": "string", "format": "date"}
EMAIL: Schema = {"type": "string", "format": "email", "maxLength": 254}
GENDER: Schema = {"type": "string", "enum": ["woman", "man", "nonbinary"]}


def _json(schema: Schema, description: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"content": {"application/json": {"schema": schema}}}
    if description:
        body["description"] = description
    return body


def _ok(schema: Schema | None, description: str) -> dict[str, Any]:
    if schema is None:
        return {"description": description}
    return {"description": description, **_json(schema)}


def _error(code: str) -> dict[str, Any]:
    return {"$ref": f"#/components/responses/{code}"}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": UUID}


def _query(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


def _op(
    summary: str,
    tag: str,
    operation_id: str,
    responses: dict[str, Any],
    *,
    body: Schema | None = None,
    body_required: bool = True,
    parameters: list[dict[str, Any]] | None = None,
    description: str | None = None,
    secured: bool = True,
    errors: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One operation. Secured operations get the bearer scheme and 401; every
    operation gets the shared error responses it names plus 500 and 503."""
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "responses": dict(responses),
    }
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": body_required, **_json(body)}
    codes = list(errors)
    if secured:
        operation["security"] = [{"bearerAuth": []}]
        codes.append("401")
    for code in (*codes, "500", "503"):
        operation["responses"].setdefault(code, _error(code))
    return operation


# -- components -----------------------------------------------------------------


def _schemas() -> dict[str, Schema]:
    campus = _obj(["id", "name"], extra=True, id=UUID, name={"type": "string"},
                  city={"type": "string"})
    interest = _obj(["id", "name"], extra=True, id=UUID, name={"type": "string"},
                    category={"type": "string"})
    photo = _obj(["photo_id", "url"], extra=True, photo_id=UUID,
                 url={"type": "string", "description": "path under /media/"},
                 width={"type": "integer"}, height={"type": "integer"})
    profile_body = {
        "display_name": {"type": "string", "minLength": 1, "maxLength": 50},
        "bio": _nullable({"type": "string", "maxLength": 500}),
        "gender": _nullable(GENDER),
        "interested_in": _array(GENDER),
        "campus": _nullable(_ref("Campus")),
        "year_of_study": _nullable({"type": "integer", "minimum": 1, "maximum": 7}),
        "interests": _array(_ref("Interest")),
        "photos": _array(_ref("Photo")),
    }
    card = _obj(
        ["user_id", "display_name"], extra=True,
        user_id=UUID,
        display_name={"type": "string"},
        campus=_nullable(_ref("Campus")),
        year_of_study=_nullable({"type": "integer"}),
        bio=_nullable({"type": "string"}),
        interests=_array(_ref("Interest")),
        photos=_array(_ref("Photo")),
    )
    notification = _obj(
        ["id", "kind", "payload", "is_read", "created_at"],
        id=UUID,
        kind={"type": "string", "description": "one of " + ", ".join(KINDS)},
        payload={"type": "object", "description": "what happened, by kind"},
        is_read={"type": "boolean"},
        created_at=DATETIME,
    )
    webhook = _obj(
        ["webhook_id", "url", "events", "is_active", "created_at"],
        webhook_id=UUID,
        url={"type": "string", "format": "uri"},
        events=_array(_ref("WebhookEventName")),
        is_active={"type": "boolean"},
        created_at=DATETIME,
    )
    report_user = {
        "user_id": UUID, "display_name": {"type": "string"}, "email": EMAIL,
    }
    suspension = _obj(
        ["suspension_id", "user_id", "reason", "until", "is_ban", "created_at"],
        suspension_id=UUID,
        user_id=UUID,
        reason={"type": "string"},
        until=_nullable({**DATETIME, "description": "null: a ban"}),
        is_ban={"type": "boolean"},
        report_id=_nullable(UUID),
        created_by=_nullable(UUID),
        created_at=DATETIME,
    )
    return {
        "Error": _obj(
            ["error", "status_code", "detail"],
            error={"type": "string", "description": "stable machine code, e.g. "
                   "validation_failed, unauthorized, token_expired, invalid_token, "
                   "suspended, unverified, profile_incomplete, forbidden, not_found, "
                   "conflict, rate_limited, database_unavailable"},
            status_code={"type": "integer"},
            detail={"description": "a message; for validation_failed an object mapping "
                    "each field to its messages",
                    "oneOf": [{"type": "string"}, {"type": "object"}, {"type": "null"}]},
        ),
        "ValidationDetail": {
            "type": "object",
            "additionalProperties": _array({"type": "string"}),
            "examples": [{"email": ["domain not allowed"]}],
        },
        "User": _obj(
            ["user_id", "email", "is_verified"], extra=True,
            user_id=UUID, email=EMAIL, display_name={"type": "string"},
            role={"type": "string", "enum": ["user", "moderator"]},
            is_verified={"type": "boolean"}, created_at=DATETIME,
        ),
        "Tokens": _obj(["access", "refresh"], access={"type": "string"},
                       refresh={"type": "string"}),
        "Session": _obj(["access", "refresh", "user"], access={"type": "string"},
                        refresh={"type": "string"}, user=_ref("User")),
        "Campus": campus,
        "Interest": interest,
        "Photo": photo,
        "Catalogue": _obj(["results"], results=_array({"type": "object"})),
        "Profile": _obj(None, extra=True, birthdate=_nullable(DATE),
                        is_visible={"type": "boolean"}, **profile_body),
        "Me": _obj(
            ["user", "profile", "profile_complete", "missing"],
            user=_ref("User"), profile=_ref("Profile"),
            profile_complete={"type": "boolean"},
            missing=_array({"type": "string"}, description="fields still needed"),
        ),
        "ProfilePatch": _obj(
            None,
            display_name={"type": "string", "minLength": 1, "maxLength": 50},
            bio={"type": "string", "maxLength": 500},
            birthdate={**DATE, "description": "YYYY-MM-DD; users must be 18+"},
            gender=GENDER,
            interested_in=_array(GENDER, minItems=1, uniqueItems=True),
            campus={**UUID, "description": "an id from GET /campuses"},
            year_of_study={"type": "integer", "minimum": 1, "maximum": 7},
            interests=_array(UUID, minItems=3, maxItems=10, uniqueItems=True,
                             description="ids from GET /interests"),
        ),
        "PublicProfile": _obj(["user_id"], extra=True, user_id=UUID,
                              age=_nullable({"type": "integer"}), **profile_body),
        "Card": card,
        "FeedItem": {"allOf": [_ref("Card"), _obj(["score"], extra=True,
                                                  score={"type": "integer"})]},
        "Feed": _obj(["results", "cached"], results=_array(_ref("FeedItem")),
                     cached={"type": "boolean"}),
        "SwipeResult": _obj(["matched", "match_id"], matched={"type": "boolean"},
                            match_id=_nullable(UUID)),
        "LastMessage": _obj(["message_id", "seq", "sender_id", "body", "created_at"],
                            message_id=UUID, seq={"type": "integer"}, sender_id=UUID,
                            body={"type": "string"}, created_at=DATETIME),
        "MatchListItem": _obj(
            ["match_id", "user", "last_message", "unread_count", "created_at"],
            match_id=UUID, user=_ref("Card"), last_message=_nullable(_ref("LastMessage")),
            unread_count={"type": "integer"}, created_at=DATETIME,
        ),
        "Message": _obj(
            ["message_id", "seq", "sender_id", "body", "client_msg_id", "created_at",
             "delivered_at", "read_at"],
            message_id=UUID, seq={"type": "integer", "minimum": 1}, sender_id=UUID,
            body={"type": "string"}, client_msg_id={"type": "string"}, created_at=DATETIME,
            delivered_at=_nullable(DATETIME), read_at=_nullable(DATETIME),
        ),
        "MessageAck": _obj(["message_id", "seq", "created_at"], message_id=UUID,
                           seq={"type": "integer"}, created_at=DATETIME),
        "Notification": notification,
        "NotificationPage": _obj(
            ["notifications"], notifications=_array(_ref("Notification")),
            next_before=_nullable({**UUID, "description": "cursor of the next page"}),
        ),
        "WebhookEventName": {"type": "string", "enum": list(KINDS)},
        "Webhook": webhook,
        "WebhookCreated": {"allOf": [_ref("Webhook"), _obj(
            ["secret"], extra=True,
            secret={"type": "string", "description": "shown once: the HMAC key"},
        )]},
        "WebhookDelivery": _obj(
            ["delivery_id", "event", "status", "attempts", "created_at"],
            delivery_id=UUID, event=_ref("WebhookEventName"),
            status={"type": "string", "enum": ["pending", "delivered", "failed"]},
            attempts={"type": "integer"}, response_code=_nullable({"type": "integer"}),
            last_error=_nullable({"type": "string"}), created_at=DATETIME,
            delivered_at=_nullable(DATETIME),
        ),
        "WebhookEvent": _obj(
            ["delivery_id", "event", "user_id", "notification"],
            delivery_id=UUID, event=_ref("WebhookEventName"), user_id=UUID,
            notification=_ref("Notification"),
        ),
        "ReportCreated": _obj(["report_id"], extra=True, report_id=UUID,
                              created_at=DATETIME),
        "Report": _obj(
            ["report_id", "reason", "details", "status", "created_at", "reporter",
             "reported_user"],
            report_id=UUID,
            reason={"type": "string", "enum": list(REASONS)},
            details={"type": "string"},
            status={"type": "string", "enum": ["open", "resolved"]},
            resolution=_nullable({"type": "string", "enum": list(ACTIONS)}),
            created_at=DATETIME,
            resolved_at=_nullable(DATETIME),
            resolved_by=_nullable(UUID),
            reporter=_object(["user_id"], report_user),
            reported_user=_object(["user_id", "is_suspended", "open_reports"], {
                **report_user,
                "role": {"type": "string"}, "is_suspended": {"type": "boolean"},
                "open_reports": {"type": "integer"}, "total_reports": {"type": "integer"},
            }),
        ),
        "ReportPage": _obj(["reports"], reports=_array(_ref("Report")),
                           next_after=_nullable(UUID)),
        "Suspension": suspension,
        "Resolution": _obj(
            ["report", "resolved_report_ids", "suspension"],
            report=_ref("Report"), resolved_report_ids=_array(UUID),
            suspension=_nullable(_ref("Suspension")),
        ),
    }


_ERROR_RESPONSES = {
    "400": "Invalid input (`validation_failed`, detail maps fields to messages; "
           "`invalid_json`)",
    "401": "Missing, expired (`token_expired`) or invalid (`invalid_token`) token",
    "403": "Not allowed: `suspended`, `unverified`, `profile_incomplete` or `forbidden`",
    "404": "No such resource (or hidden from the caller)",
    "409": "Conflicts with the current state",
    "410": "Gone (expired)",
    "413": "Body too large",
    "415": "Unsupported media type",
    "429": "Rate limited; `Retry-After` says when to try again",
    "500": "Unexpected error (no details are exposed)",
    "503": "A dependency (database, cache, actor system) is unavailable right now, or "
           "the server is too busy (`overloaded`); `Retry-After` when it knows when to retry",
}


def _responses() -> dict[str, Any]:
    result: dict[str, Any] = {}
    for code, description in _ERROR_RESPONSES.items():
        response: dict[str, Any] = {"description": description, **_json(_ref("Error"))}
        if code == "429":
            response["headers"] = {"Retry-After": {
                "description": "seconds to wait", "schema": {"type": "integer", "minimum": 1},
            }}
        result[code] = response
    return result


# -- paths ------------------------------------------------------------------------

_NO_CONTENT = {"204": {"description": "Done"}}


def _auth_paths() -> dict[str, Any]:
    credentials = _obj(["email", "password"], email=EMAIL, password={"type": "string"})
    refresh = _obj(["refresh"], refresh={"type": "string"})
    return {
        f"{API}/auth/register": {"post": _op(
            "Register with a campus email", "auth", "register",
            {"201": _ok(_obj(["user_id", "email", "is_verified"], user_id=UUID, email=EMAIL,
                             is_verified={"const": False}),
                        "Registered; a 6-digit code is mailed")},
            body=_obj(["email", "password", "display_name"], email=EMAIL,
                      password={"type": "string", "minLength": 10},
                      display_name={"type": "string", "minLength": 1, "maxLength": 50}),
            description="400 for a domain outside ALLOWED_EMAIL_DOMAINS or a weak "
                        "password; 409 for a verified email; 429 per IP. Registering an "
                        "email still pending verification again changes nothing of it (not "
                        "its password) and mails a new code, within the resend limit (429).",
            secured=False, errors=("400", "409", "429"),
        )},
        f"{API}/auth/otp/verify": {"post": _op(
            "Verify the emailed code", "auth", "verify_otp",
            {"200": _ok(_ref("Session"), "Verified; a session starts")},
            body=_obj(["email", "code"], email=EMAIL,
                      code={"type": "string", "pattern": "^[0-9]{6}$"}),
            description="Wrong code, unknown email or an account already verified: the "
                        "same 400 `invalid_code` (detail tells attempts left). A right code "
                        "that expired 410; 429 `too_many_attempts` after 5 wrong codes or "
                        "past the per-address and per-account limits.",
            secured=False, errors=("400", "410", "429"),
        )},
        f"{API}/auth/otp/resend": {"post": _op(
            "Send a new code", "auth", "resend_otp",
            {"202": _ok(_obj(["detail"], detail={"type": "string"}), "Accepted")},
            body=_obj(["email"], email=EMAIL),
            description="One resend per 60 s.", secured=False, errors=("400", "429"),
        )},
        f"{API}/auth/login": {"post": _op(
            "Log in", "auth", "login",
            {"200": _ok(_ref("Session"), "A new session")},
            body=credentials,
            description="401 bad credentials; 403 `unverified` or `suspended`; 429 after "
                        "repeated failures per account and IP.",
            secured=False, errors=("400", "401", "403", "429"),
        )},
        f"{API}/auth/refresh": {"post": _op(
            "Rotate a refresh token", "auth", "refresh",
            {"200": _ok(_ref("Tokens"), "A new pair")},
            body=refresh,
            description="Presenting an already-used refresh token revokes its whole "
                        "family (401 `token_reused`), except within a grace of a few seconds "
                        "while its successor is unused: then the same new pair is returned "
                        "again (a retry, a second tab). A suspended user's families are "
                        "revoked.",
            secured=False, errors=("400", "401"),
        )},
        f"{API}/auth/logout": {"post": _op(
            "Log out (revoke the refresh token's family)", "auth", "logout",
            _NO_CONTENT, body=refresh, secured=False, errors=("400", "401"),
        )},
        f"{API}/me/password": {"post": _op(
            "Change the password", "auth", "change_password",
            {"204": {"description": "Changed; every other session of the account ended"}},
            body=_obj(["current", "new"], current={"type": "string"},
                      new={"type": "string", "minLength": 10}),
            description="400 `invalid_credentials` (detail.current) for a wrong current "
                        "password, `validation_failed` for a weak new one; 429 as for login.",
            errors=("400", "429"),
        )},
        f"{API}/auth/password/forgot": {"post": _op(
            "Ask for a password reset code", "auth", "forgot_password",
            {"202": _ok(_obj(["detail"], detail={"type": "string"}),
                        "Accepted, whether or not the email has an account")},
            body=_obj(["email"], email=EMAIL),
            description="A 6-digit code is mailed when the email has an account (one code "
                        "per 60 s and a daily cap per account, silently); 429 per IP.",
            secured=False, errors=("400", "429"),
        )},
        f"{API}/auth/password/reset": {"post": _op(
            "Reset the password with the emailed code", "auth", "reset_password",
            {"204": {"description": "Reset; every session of the account ended"}},
            body=_obj(["email", "code", "new"], email=EMAIL,
                      code={"type": "string", "pattern": "^[0-9]{6}$"},
                      new={"type": "string", "minLength": 10}),
            description="Code errors as for /auth/otp/verify (one 400 `invalid_code` for a "
                        "wrong code and an unknown email). A pending account is verified "
                        "by its reset.",
            secured=False, errors=("400", "410", "429"),
        )},
    }


def _profile_paths() -> dict[str, Any]:
    return {
        f"{API}/me": {"get": _op(
            "The caller's account and profile", "profile", "get_me",
            {"200": _ok(_ref("Me"), "The user, the profile, completeness")},
            errors=("403",),
        )},
        f"{API}/me/profile": {"patch": _op(
            "Update any subset of the profile", "profile", "update_profile",
            {"200": _ok(_ref("Me"), "The updated profile")},
            body=_ref("ProfilePatch"), errors=("400", "403"),
        )},
        f"{API}/me/photos": {"post": {
            **_op("Upload a photo", "profile", "upload_photo",
                  {"201": _ok(_ref("Photo"), "Stored, re-encoded, metadata stripped")},
                  description="JPEG, PNG or WebP, checked by content; at most 5 MB and "
                              "6 photos (409 `too_many_photos`).",
                  errors=("400", "403", "409", "413", "415")),
            "requestBody": {"required": True, "content": {"multipart/form-data": {
                "schema": _obj(["photo"], photo={"type": "string",
                                                 "contentMediaType": "image/*"}),
            }}},
        }},
        f"{API}/me/photos/{{photo_id}}": {"delete": _op(
            "Delete a photo", "profile", "delete_photo", _NO_CONTENT,
            parameters=[_path_param("photo_id", "the photo")], errors=("403", "404"),
        )},
        f"{API}/users/{{user_id}}": {"get": _op(
            "A public profile", "profile", "get_user",
            {"200": _ok(_ref("PublicProfile"), "The profile")},
            parameters=[_path_param("user_id", "the user")],
            description="404 when hidden, blocked either way, or suspended.",
            errors=("403", "404"),
        )},
        f"{API}/interests": {"get": _op(
            "The interests catalogue", "profile", "list_interests",
            {"200": _ok(_obj(["results"], results=_array(_ref("Interest"))), "Interests")},
            secured=False,
        )},
        f"{API}/campuses": {"get": _op(
            "The campuses catalogue (Kenyan universities)", "profile", "list_campuses",
            {"200": _ok(_obj(["results"], results=_array(_ref("Campus"))), "Campuses")},
            secured=False,
        )},
        "/media/{name}": {"get": _op(
            "A stored photo file", "profile", "get_media",
            {"200": {"description": "The image, with long cache headers", "content": {
                media: {"schema": {"type": "string", "contentMediaType": media}}
                for media in ("image/jpeg", "image/png", "image/webp")
            }}},
            parameters=[{"name": "name", "in": "path", "required": True,
                         "schema": {"type": "string"}}],
            secured=False, errors=("404",),
        )},
    }


def _discover_paths() -> dict[str, Any]:
    incomplete = "Needs a verified user with a complete profile (403 `profile_incomplete`)."
    match_id = [_path_param("match_id", "the match")]
    return {
        f"{API}/discover": {"get": _op(
            "The scored discover feed", "discover", "discover",
            {"200": _ok(_ref("Feed"), "Candidates, best first")},
            parameters=[_query("limit", {"type": "integer", "minimum": 1, "maximum": 50,
                                         "default": 20}, "page size")],
            description=incomplete + " Scoring: same campus +100, same year +50, +25 per "
                        "shared interest, active in the last 24 h +20, complete profile +10.",
            errors=("400", "403"),
        )},
        f"{API}/swipes": {"post": _op(
            "Like or pass", "discover", "swipe",
            {"201": _ok(_ref("SwipeResult"), "Recorded; `matched` when mutual")},
            body=_obj(["target_id", "action"], target_id=UUID,
                      action={"type": "string", "enum": ["like", "pass"]}),
            description=incomplete + " 409 for a repeated swipe; 429 past the daily likes.",
            errors=("400", "403", "404", "409", "429"),
        )},
        f"{API}/matches": {"get": _op(
            "The caller's active matches", "discover", "list_matches",
            {"200": _ok(_array(_ref("MatchListItem")), "Matches, latest activity first")},
            errors=("403",),
        )},
        f"{API}/matches/{{match_id}}": {"delete": _op(
            "Unmatch: the chat closes for both", "discover", "unmatch", _NO_CONTENT,
            parameters=match_id, errors=("403", "404"),
        )},
        f"{API}/blocks": {"post": _op(
            "Block a user: hidden both ways, any match ended", "discover", "block",
            {"201": _ok(_obj(["blocked_id"], extra=True, blocked_id=UUID), "Blocked")},
            body=_obj(["user_id"], user_id=UUID), errors=("400", "403", "404"),
        )},
        f"{API}/blocks/{{user_id}}": {"delete": _op(
            "Lift a block (an ended match stays ended)", "discover", "unblock", _NO_CONTENT,
            parameters=[_path_param("user_id", "the blocked user")], errors=("403", "404"),
        )},
        f"{API}/matches/{{match_id}}/messages": {
            "get": _op(
                "Chat history (HTTP fallback)", "chat", "list_messages",
                {"200": _ok(_obj(["messages"], messages=_array(_ref("Message"))),
                            "Messages ordered by seq")},
                parameters=[
                    *match_id,
                    _query("after_seq", {"type": "integer", "minimum": 0},
                           "the oldest page after this seq"),
                    _query("before_seq", {"type": "integer", "minimum": 1},
                           "the newest page before this seq"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 200,
                                     "default": 50}, "page size"),
                ],
                errors=("400", "403", "404"),
            ),
            "post": _op(
                "Send a message (HTTP fallback)", "chat", "post_message",
                {"201": _ok(_ref("MessageAck"), "Committed; a repeated client_msg_id "
                                                "answers the original message")},
                parameters=match_id,
                body=_obj(["client_msg_id", "body"],
                          client_msg_id={"type": "string", "minLength": 1, "maxLength": 100},
                          body={"type": "string", "minLength": 1, "maxLength": 2000}),
                errors=("400", "403", "404", "429"),
            ),
        },
        f"{API}/matches/{{match_id}}/read": {"post": _op(
            "Mark the other user's messages read up to seq", "chat", "mark_messages_read",
            _NO_CONTENT, parameters=match_id,
            body=_obj(["seq"], seq={"type": "integer", "minimum": 0}),
            errors=("400", "403", "404"),
        )},
    }


def _notification_paths() -> dict[str, Any]:
    webhook_id = [_path_param("webhook_id", "the webhook")]
    return {
        f"{API}/notifications": {"get": _op(
            "The caller's notifications, newest first", "notifications",
            "list_notifications",
            {"200": _ok(_ref("NotificationPage"), "A page")},
            parameters=[
                _query("unread", {"type": "boolean", "default": False}, "only unread ones"),
                _query("before", UUID, "the page after this notification (`next_before`)"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 100,
                                 "default": 50}, "page size"),
            ],
            errors=("400", "403"),
        )},
        f"{API}/notifications/read": {"post": _op(
            "Mark notifications read", "notifications", "mark_notifications_read",
            _NO_CONTENT,
            body={"oneOf": [
                _obj(["ids"], ids=_array(UUID, minItems=1, maxItems=500, uniqueItems=True)),
                _obj(["all"], all={"const": True}),
            ]},
            description="Every id must be the caller's, else 400 and nothing changes.",
            errors=("400", "403"),
        )},
        f"{API}/webhooks": {
            "post": _op(
                "Register a webhook", "webhooks", "create_webhook",
                {"201": _ok(_ref("WebhookCreated"), "Registered; the secret is shown once")},
                body=_obj(["url", "events"],
                          url={"type": "string", "format": "uri", "maxLength": 2000,
                               "description": "https (http only with WEBHOOK_ALLOW_HTTP), "
                                              "port 80 or 443 (WEBHOOK_PORTS), no "
                                              "credentials; private and loopback addresses "
                                              "(also inside NAT64 or 6to4 ones) and numeric "
                                              "hosts other than a dotted IPv4 address are "
                                              "refused unless WEBHOOK_ALLOW_PRIVATE"},
                          events=_array(_ref("WebhookEventName"), minItems=1,
                                        uniqueItems=True)),
                description="Each notification of a subscribed kind is POSTed as a "
                            "`WebhookEvent` (see `webhooks` in this document) signed with "
                            "`X-UniMatch-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "
                            "\"<t>.<raw body>\" keyed with the secret>` (refuse a t far from "
                            "your clock: docs/webhooks.md), with `X-UniMatch-Event` and "
                            "`X-UniMatch-Delivery` (deduplicate on it: delivery is at least "
                            "once). Non-2xx answers and timeouts (10 s) are retried with "
                            "exponential backoff. At most 10 webhooks per user (409 "
                            "`too_many_webhooks`).",
                errors=("400", "403", "409"),
            ),
            "get": _op(
                "The caller's webhooks", "webhooks", "list_webhooks",
                {"200": _ok(_obj(["webhooks"], webhooks=_array(_ref("Webhook"))), "Webhooks")},
                errors=("403",),
            ),
        },
        f"{API}/webhooks/{{webhook_id}}": {"delete": _op(
            "Delete a webhook (pending deliveries are dropped)", "webhooks", "delete_webhook",
            _NO_CONTENT, parameters=webhook_id, errors=("403", "404"),
        )},
        f"{API}/webhooks/{{webhook_id}}/deliveries": {"get": _op(
            "Recent deliveries of a webhook", "webhooks", "list_webhook_deliveries",
            {"200": _ok(_obj(["deliveries"], deliveries=_array(_ref("WebhookDelivery"))),
                        "Newest first")},
            parameters=[*webhook_id, _query("limit", {"type": "integer", "minimum": 1,
                                                      "maximum": 100, "default": 20},
                                            "how many")],
            errors=("400", "403", "404"),
        )},
    }


def _moderation_paths() -> dict[str, Any]:
    moderators = "Moderators only (403 `forbidden` otherwise)."
    report_id = [_path_param("report_id", "the report")]
    user_id = [_path_param("user_id", "the user")]
    return {
        f"{API}/reports": {"post": _op(
            "Report a user", "moderation", "create_report",
            {"201": _ok(_ref("ReportCreated"), "Filed")},
            body=_obj(["reported_user_id", "reason"], reported_user_id=UUID,
                      reason={"type": "string", "enum": list(REASONS)},
                      details={"type": "string", "maxLength": 2000, "default": ""}),
            description="Not oneself (400); unknown user 404; at most 20 reports an hour "
                        "per reporter (429).",
            errors=("400", "403", "404", "429"),
        )},
        f"{API}/moderation/reports": {"get": _op(
            "The report queue, oldest first", "moderation", "list_reports",
            {"200": _ok(_ref("ReportPage"), "A page")},
            parameters=[
                _query("status", {"type": "string", "enum": ["open", "resolved", "all"],
                                  "default": "open"}, "which reports"),
                _query("reported_user_id", UUID, "only reports against this user"),
                _query("after", UUID, "the page after this report (`next_after`)"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 100,
                                 "default": 50}, "page size"),
            ],
            description=moderators, errors=("400", "403"),
        )},
        f"{API}/moderation/reports/{{report_id}}": {"get": _op(
            "One report", "moderation", "get_report",
            {"200": _ok(_ref("Report"), "The report")},
            parameters=report_id, description=moderators, errors=("403", "404"),
        )},
        f"{API}/moderation/reports/{{report_id}}/resolve": {"post": _op(
            "Resolve a report", "moderation", "resolve_report",
            {"200": _ok(_ref("Resolution"), "Resolved")},
            parameters=report_id,
            body=_obj(["action"], action={"type": "string", "enum": list(ACTIONS)},
                      until=_nullable({**DATETIME, "description": "required for suspend, "
                                                                  "in the future"})),
            description=moderators + " dismiss and warn resolve only this report (warn "
                        "notifies the reported user); suspend and ban suspend the user and "
                        "resolve every open report against them with the same outcome. "
                        "Reporters get a `report_resolved` notification. 409 "
                        "`already_resolved`; 403 for a report against a moderator (suspend, "
                        "ban) or against oneself.",
            errors=("400", "403", "404", "409"),
        )},
        f"{API}/moderation/users/{{user_id}}/suspend": {"post": _op(
            "Suspend (until a time) or ban (no until) a user", "moderation", "suspend_user",
            {"201": _ok(_ref("Suspension"), "Suspended"),
             "200": _ok(_ref("Suspension"), "Replaced the suspension in force")},
            parameters=user_id,
            body=_obj(["reason"], reason={"type": "string", "minLength": 1, "maxLength": 500},
                      until=_nullable(DATETIME)),
            description=moderators + " In one transaction: the suspension, every refresh-"
                        "token family revoked, every active match ended (`unmatch` to the "
                        "partners). Then every WebSocket of the user closes with 4003. A "
                        "suspended user gets 403 `suspended` on every request and is hidden "
                        "everywhere. 403 for a moderator or oneself.",
            errors=("400", "403", "404"),
        )},
        f"{API}/moderation/users/{{user_id}}/unsuspend": {"post": _op(
            "Lift a suspension", "moderation", "unsuspend_user", _NO_CONTENT,
            parameters=user_id,
            description=moderators + " 409 `not_suspended`. Ended matches stay ended.",
            errors=("403", "404", "409"),
        )},
    }


def _realtime_paths() -> dict[str, Any]:
    upgrade = {"101": {"description": "Switching Protocols: the WebSocket of "
                                      "docs/websocket.md. Close codes: 4001 unauthorized, "
                                      "4003 forbidden or suspended, 4008 rate limited or "
                                      "too slow to read."}}
    token = _query("token", {"type": "string"},
                   "the access token (or send `{\"type\": \"auth\", \"token\"}` first)")
    return {
        "/ws": {"get": _op(
            "WebSocket carrying every match of the user", "realtime", "websocket",
            upgrade, parameters=[token], secured=False, errors=("400",),
        )},
        "/ws/chat/{match_id}/": {"get": _op(
            "WebSocket scoped to one match", "realtime", "websocket_match", upgrade,
            parameters=[_path_param("match_id", "the match"), token], secured=False,
            errors=("400",),
        )},
    }


def _operations_paths() -> dict[str, Any]:
    return {
        "/healthz": {"get": _op(
            "Liveness", "operations", "healthz",
            {"200": _ok(_obj(["status"], status={"const": "ok"}), "The process serves")},
            secured=False,
        )},
        "/readyz": {"get": _op(
            "Readiness of PostgreSQL, Redis and the actor system", "operations", "readyz",
            {"200": _ok(_obj(["status", "checks"], status={"const": "ready"},
                             checks={"type": "object",
                                     "additionalProperties": {"type": "string"}}),
                        "Every dependency answers")},
            description="503 `not_ready` with `detail.failed` naming each dependency that "
                        "did not answer.",
            secured=False,
        )},
        "/metrics": {"get": _op(
            "Prometheus metrics", "operations", "metrics",
            {"200": {"description": "Prometheus text format",
                     "content": {"text/plain": {"schema": {"type": "string"}}}}},
            description="Served only to TCP peers in METRICS_ALLOW (default loopback), "
                        "judged by the connection, not X-Forwarded-For; others get 404.",
            secured=False, errors=("404",),
        )},
        "/{path}": {"get": _op(
            "The web client: its pages and assets (unimatch.http.static)", "web", "web_client",
            {"200": {"description": "A page (text/html, with its Content-Security-Policy) "
                                    "or a static asset",
                     "content": {"text/html": {"schema": {"type": "string"}}}}},
            parameters=[{"name": "path", "in": "path", "required": True,
                         "description": "a page or asset of the web client",
                         "schema": {"type": "string"}}],
            description="Registered after every other route: a path the platform "
                        "serves never reaches it. 404 with the client's not-found page.",
            secured=False, errors=("404",),
        )},
        f"{API}/openapi.json": {"get": _op(
            "This document", "operations", "openapi",
            {"200": _ok({"type": "object"}, "OpenAPI 3.1")}, secured=False,
        )},
    }


def _webhooks() -> dict[str, Any]:
    """OpenAPI 3.1 `webhooks`: what a registered receiver is sent."""
    headers = [
        {"name": "X-UniMatch-Signature", "in": "header", "required": True,
         "description": "t=<unix time of the attempt>,v1=<hex HMAC-SHA256 of "
                        "\"<t>.<raw body>\", keyed with the secret>; refuse a t more than "
                        "5 minutes from your clock (replays)",
         "schema": {"type": "string", "pattern": "^t=[0-9]+,v1=[0-9a-f]{64}$"}},
        {"name": "X-UniMatch-Event", "in": "header", "required": True,
         "schema": _ref("WebhookEventName")},
        {"name": "X-UniMatch-Delivery", "in": "header", "required": True,
         "description": "the delivery id, the same on every retry", "schema": UUID},
    ]
    return {"notification": {"post": {
        "operationId": "receive_notification",
        "summary": "A notification of a subscribed kind",
        "tags": ["webhooks"],
        "parameters": headers,
        "requestBody": {"required": True, **_json(_ref("WebhookEvent"))},
        "responses": {
            "200": {"description": "Any 2xx within 10 s acknowledges the delivery; anything "
                                   "else is retried with exponential backoff"},
        },
    }}}


@functools.cache
def document() -> dict[str, Any]:
    """The whole contract as an OpenAPI 3.1 document."""
    paths: dict[str, Any] = {}
    for part in (_auth_paths, _profile_paths, _discover_paths, _notification_paths,
                 _moderation_paths, _realtime_paths, _operations_paths):
        paths.update(part())
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "UniMatch API",
            "version": API_VERSION,
            "summary": "Dating for university students in Kenya",
            "description": "Every non-2xx response has the body "
                           "`{\"error\": <machine code>, \"status_code\": <int>, "
                           "\"detail\": ...}`; 429 responses carry `Retry-After`. "
                           "WebSocket frames: docs/websocket.md.",
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": name} for name in (
            "auth", "profile", "discover", "chat", "notifications", "webhooks",
            "moderation", "realtime", "operations",
        )],
        "paths": paths,
        "webhooks": _webhooks(),
        "components": {
            "schemas": _schemas(),
            "responses": _responses(),
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "An access token from /auth/login, /auth/otp/verify or "
                               "/auth/refresh (15 minutes)",
            }},
        },
    }


@functools.cache
def _encoded() -> bytes:
    return orjson.dumps(document())


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(
        body=_encoded(),
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"},
    )
