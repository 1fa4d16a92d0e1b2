"""The route table of the contract: every operation, declared once, with
its models. `unimatch.schemas.openapi` builds the OpenAPI 3.1 document from
it; tests/test_openapi.py checks that the app registers exactly these
routes.

An operation names its request body, query and response models and the
error statuses it can answer besides the ones every operation shares: 401
for an operation that needs a bearer token; 400 for one with a body, a query
or path ids; 413 and 415 for one with a JSON body; 500 and 503 for all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from unimatch.schemas import auth, chat, discover, moderation, notifications, ops, profile
from unimatch.schemas import limits as L

API = "/api/v1"


@dataclass(frozen=True)
class Reply:
    """One response: a JSON body of `model`, or none, or `content` as given."""

    status: int
    description: str
    model: type[BaseModel] | None = None
    content: dict[str, Any] | None = None
    # OpenAPI links: name -> {"operationId", "parameters" / "requestBody"}.
    links: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    replies: tuple[Reply, ...]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    # A request body that is not JSON (a photo upload): its `content` as given.
    body_content: dict[str, Any] | None = None
    secured: bool = True
    errors: tuple[int, ...] = ()
    description: str = ""
    # Path parameters that are not UUIDs: name -> JSON schema.
    path_schemas: dict[str, Any] = field(default_factory=dict)
    extra_parameters: tuple[dict[str, Any], ...] = ()
    # Declared for the document before its handler lands; not yet served.
    planned: bool = False


DONE = Reply(204, "Done")
INCOMPLETE = "Needs a verified user with a complete profile (403 `profile_incomplete`)."
MODERATORS = "Moderators only (403 `forbidden` otherwise)."
_SESSION_LINKS = {
    "RefreshSession": {"operationId": "refresh",
                       "requestBody": {"refresh": "$response.body#/refresh"}},
    "EndSession": {"operationId": "logout",
                   "requestBody": {"refresh": "$response.body#/refresh"}},
}
_TOKEN = {"name": "token", "in": "query", "required": False,
          "description": 'the access token (or send `{"type": "auth", "token"}` first)',
          "schema": {"type": "string"}}
_UPGRADE = Reply(101, "Switching Protocols: the WebSocket of docs/websocket.md. Close codes: "
                      "4001 unauthorized, 4003 forbidden or suspended, 4008 rate limited or "
                      "too slow to read.")


def _images() -> dict[str, Any]:
    return {media: {"schema": {"type": "string", "contentMediaType": media}}
            for media in ("image/jpeg", "image/png", "image/webp")}


AUTH: tuple[Operation, ...] = (
    Operation(
        "post", f"{API}/auth/register", "register", "Register with a campus email", "auth",
        (Reply(201, "Registered; a 6-digit code is mailed", auth.Registered, links={
            "ResendCode": {"operationId": "resend_otp",
                           "requestBody": {"email": "$response.body#/email"}},
        }),),
        body=auth.Register, secured=False, errors=(409, 429),
        description="400 for a domain outside ALLOWED_EMAIL_DOMAINS or a weak password; 409 "
                    "for an email already verified; 429 per IP, or a resend within 60 s.",
    ),
    Operation(
        "post", f"{API}/auth/otp/verify", "verify_otp", "Verify the emailed code", "auth",
        (Reply(200, "Verified; a session starts", auth.Session, links=_SESSION_LINKS),),
        body=auth.OtpVerify, secured=False, errors=(410, 429),
        description="Wrong code 400 (detail tells attempts left), expired 410, too many "
                    "attempts 429.",
    ),
    Operation(
        "post", f"{API}/auth/otp/resend", "resend_otp", "Send a new code", "auth",
        (Reply(202, "Accepted", auth.Accepted),),
        body=auth.EmailOnly, secured=False, errors=(429,), description="One resend per 60 s.",
    ),
    Operation(
        "post", f"{API}/auth/login", "login", "Log in", "auth",
        (Reply(200, "A new session", auth.Session, links=_SESSION_LINKS),),
        body=auth.Login, secured=False, errors=(401, 403, 429, 503),
        description="401 bad credentials; 403 `unverified` or `suspended`; 429 after repeated "
                    "failures per account and IP.",
    ),
    Operation(
        "post", f"{API}/auth/refresh", "refresh", "Rotate a refresh token", "auth",
        (Reply(200, "A new pair", auth.Tokens, links=_SESSION_LINKS),),
        body=auth.RefreshToken, secured=False, errors=(401,),
        description="Presenting an already-used refresh token revokes its whole family (401), "
                    "except within a grace of a few seconds, when the same new pair is "
                    "returned again. A suspended user's families are revoked.",
    ),
    Operation(
        "post", f"{API}/auth/logout", "logout", "Log out (revoke the refresh token's family)",
        "auth", (DONE,), body=auth.RefreshToken, secured=False, errors=(401,),
    ),
    Operation(
        "post", f"{API}/me/password", "change_password", "Change the password", "auth",
        (Reply(204, "Changed; every other session ends"),),
        body=auth.PasswordChange, errors=(403, 429, 503),
        description="400 for a weak new password; 401 for a wrong current one.",
    ),
    Operation(
        "post", f"{API}/auth/password/forgot", "forgot_password", "Mail a reset code", "auth",
        (Reply(202, "Accepted: a code is mailed if the account exists", auth.Accepted),),
        body=auth.PasswordForgot, secured=False, errors=(429,),
    ),
    Operation(
        "post", f"{API}/auth/password/reset", "reset_password",
        "Set a new password with a mailed code", "auth",
        (Reply(204, "Reset; every session ends"),),
        body=auth.PasswordReset, secured=False, errors=(410, 429, 503),
        description="Wrong code or weak password 400, expired code 410, too many attempts 429.",
    ),
)

PROFILE: tuple[Operation, ...] = (
    Operation("get", f"{API}/me", "get_me", "The caller's account and profile", "profile",
              (Reply(200, "The user, the profile, completeness", profile.Me),), errors=(403,)),
    Operation(
        "patch", f"{API}/me/profile", "update_profile", "Update any subset of the profile",
        "profile", (Reply(200, "The updated profile", profile.Me),),
        body=profile.ProfilePatch, errors=(403,),
    ),
    Operation(
        "post", f"{API}/me/photos", "upload_photo", "Upload a photo", "profile",
        (Reply(201, "Stored, re-encoded, metadata stripped", profile.Photo, links={
            "DeletePhoto": {"operationId": "delete_photo",
                            "parameters": {"photo_id": "$response.body#/photo_id"}},
        }),),
        body_content={"multipart/form-data": {"schema": {
            "type": "object", "required": ["photo"], "additionalProperties": False,
            "properties": {"photo": {"type": "string", "contentMediaType": "image/*"}},
        }}},
        errors=(400, 403, 409, 413, 415, 429, 503),
        description="JPEG, PNG or WebP, checked by content; at most MAX_PHOTO_BYTES (5 MB) "
                    "and MAX_PHOTOS (6) photos (409 `too_many_photos`); at most "
                    "LIMIT_PHOTO_UPLOADS_PER_HOUR uploads an hour (429); 503 with "
                    "Retry-After while the decoding pool is full.",
    ),
    Operation("delete", f"{API}/me/photos/{{photo_id}}", "delete_photo", "Delete a photo",
              "profile", (DONE,), errors=(403, 404)),
    Operation(
        "get", f"{API}/users/{{user_id}}", "get_user", "A public profile", "profile",
        (Reply(200, "The profile", profile.PublicProfile),), errors=(403, 404),
        description="404 when hidden, blocked either way, or suspended.",
    ),
    Operation("get", f"{API}/interests", "list_interests", "The interests catalogue",
              "profile", (Reply(200, "Interests", profile.Interests),), secured=False),
    Operation("get", f"{API}/campuses", "list_campuses",
              "The campuses catalogue (Kenyan universities)", "profile",
              (Reply(200, "Campuses", profile.Campuses),), secured=False),
    Operation(
        "get", "/media/{name}", "get_media", "A stored photo file", "profile",
        (Reply(200, "The image, with long cache headers", content=_images()),),
        secured=False, errors=(404,), path_schemas={"name": {"type": "string"}},
    ),
)

DISCOVER: tuple[Operation, ...] = (
    Operation(
        "get", f"{API}/discover", "discover", "The scored discover feed", "discover",
        (Reply(200, "Candidates, best first", discover.Feed),),
        query=discover.DiscoverQuery, errors=(403,),
        description=INCOMPLETE + " Scoring: same campus +100, same year +50, +25 per shared "
                    "interest, active in the last 24 h +20, complete profile +10.",
    ),
    Operation(
        "post", f"{API}/swipes", "swipe", "Like or pass", "discover",
        (Reply(201, "Recorded; `matched` when mutual", discover.SwipeResult, links={
            "Unmatch": {"operationId": "unmatch",
                        "parameters": {"match_id": "$response.body#/match_id"}},
            "History": {"operationId": "list_messages",
                        "parameters": {"match_id": "$response.body#/match_id"}},
        }),),
        body=discover.Swipe, errors=(403, 404, 409, 429),
        description=INCOMPLETE + " 409 for a repeated swipe; 429 past the daily likes.",
    ),
    Operation("get", f"{API}/matches", "list_matches", "The caller's active matches",
              "discover", (Reply(200, "Matches, latest activity first", discover.MatchList),),
              errors=(403,), description=INCOMPLETE),
    Operation("delete", f"{API}/matches/{{match_id}}", "unmatch",
              "Unmatch: the chat closes for both", "discover", (DONE,), errors=(403, 404),
              description=INCOMPLETE),
    Operation(
        "post", f"{API}/blocks", "block", "Block a user: hidden both ways, any match ended",
        "discover", (Reply(201, "Blocked", discover.Blocked, links={
            "Unblock": {"operationId": "unblock",
                        "parameters": {"user_id": "$response.body#/blocked_id"}},
        }),),
        body=discover.Block, errors=(403, 404), description=INCOMPLETE,
    ),
    Operation("delete", f"{API}/blocks/{{user_id}}", "unblock",
              "Lift a block (an ended match stays ended)", "discover", (DONE,),
              errors=(403, 404), description=INCOMPLETE),
)

CHAT: tuple[Operation, ...] = (
    Operation(
        "get", f"{API}/matches/{{match_id}}/messages", "list_messages",
        "Chat history (HTTP fallback)", "chat",
        (Reply(200, "Messages ordered by seq", chat.Messages),),
        query=chat.HistoryQuery, errors=(403, 404),
        description=f"`after_seq` and `before_seq` are {L.SEQ_MIN} to {L.SEQ_MAX}; out of "
                    "range is 400.",
    ),
    Operation(
        "post", f"{API}/matches/{{match_id}}/messages", "post_message",
        "Send a message (HTTP fallback)", "chat",
        (Reply(201, "Committed; a repeated client_msg_id answers the original message",
               chat.MessageAck),),
        body=chat.SendMessage, errors=(403, 404, 409, 429),
        description="`body`: 1-2,000 characters after trimming, NFC-normalised; no control "
                    "characters but newline and tab, no bidirectional controls. 409 "
                    "`match_ended` once the match has ended.",
    ),
    Operation(
        "post", f"{API}/matches/{{match_id}}/read", "mark_messages_read",
        "Mark the other user's messages read up to seq", "chat", (DONE,),
        body=chat.MarkRead, errors=(403, 404, 409),
    ),
)

NOTIFICATIONS: tuple[Operation, ...] = (
    Operation(
        "get", f"{API}/notifications", "list_notifications",
        "The caller's notifications, newest first", "notifications",
        (Reply(200, "A page", notifications.NotificationPage),),
        query=notifications.NotificationsQuery, errors=(403,),
    ),
    Operation(
        "post", f"{API}/notifications/read", "mark_notifications_read",
        "Mark notifications read", "notifications", (DONE,),
        body=notifications.MarkNotificationsRead, errors=(403,),
        description="`{ids}` or `{all: true}`. Every id must be the caller's, else 400 and "
                    "nothing changes.",
    ),
    Operation(
        "post", f"{API}/webhooks", "create_webhook", "Register a webhook", "webhooks",
        (Reply(201, "Registered; the secret is shown once", notifications.WebhookCreated,
               links={
                   "Deliveries": {"operationId": "list_webhook_deliveries",
                                  "parameters": {"webhook_id": "$response.body#/webhook_id"}},
                   "DeleteWebhook": {"operationId": "delete_webhook",
                                     "parameters": {"webhook_id": "$response.body#/webhook_id"}},
               }),),
        body=notifications.CreateWebhook, errors=(403, 409),
        description="Each notification of a subscribed kind is POSTed as a `WebhookEvent` "
                    "(see `webhooks` in this document) signed in `X-UniMatch-Signature: "
                    "t=<unix time>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">`, with "
                    "`X-UniMatch-Event` and `X-UniMatch-Delivery` (deduplicate on it: "
                    "delivery is at least once). Non-2xx answers and timeouts are retried "
                    "with exponential backoff. At most 10 webhooks per user (409 "
                    "`too_many_webhooks`).",
    ),
    Operation("get", f"{API}/webhooks", "list_webhooks", "The caller's webhooks", "webhooks",
              (Reply(200, "Webhooks", notifications.Webhooks),), errors=(403,)),
    Operation("delete", f"{API}/webhooks/{{webhook_id}}", "delete_webhook",
              "Delete a webhook (pending deliveries are dropped)", "webhooks", (DONE,),
              errors=(403, 404)),
    Operation(
        "get", f"{API}/webhooks/{{webhook_id}}/deliveries", "list_webhook_deliveries",
        "Recent deliveries of a webhook", "webhooks",
        (Reply(200, "Newest first", notifications.WebhookDeliveries),),
        query=notifications.DeliveriesQuery, errors=(403, 404),
    ),
)

MODERATION: tuple[Operation, ...] = (
    Operation(
        "post", f"{API}/reports", "create_report", "Report a user", "moderation",
        (Reply(201, "Filed", moderation.ReportCreated, links={
            "GetReport": {"operationId": "get_report",
                          "parameters": {"report_id": "$response.body#/report_id"}},
        }),),
        body=moderation.CreateReport, errors=(403, 404, 429),
        description="Not oneself (400); unknown user 404; at most 20 reports an hour per "
                    "reporter (429).",
    ),
    Operation(
        "get", f"{API}/moderation/reports", "list_reports", "The report queue, oldest first",
        "moderation", (Reply(200, "A page", moderation.ReportPage),),
        query=moderation.ReportsQuery, errors=(403,), description=MODERATORS,
    ),
    Operation("get", f"{API}/moderation/reports/{{report_id}}", "get_report", "One report",
              "moderation", (Reply(200, "The report", moderation.Report),),
              errors=(403, 404), description=MODERATORS),
    Operation(
        "post", f"{API}/moderation/reports/{{report_id}}/resolve", "resolve_report",
        "Resolve a report", "moderation", (Reply(200, "Resolved", moderation.Resolution),),
        body=moderation.ResolveReport, errors=(403, 404, 409),
        description=MODERATORS + " dismiss and warn resolve only this report (warn notifies "
                    "the reported user); suspend and ban suspend the user and resolve every "
                    "open report against them with the same outcome. Reporters get a "
                    "`report_resolved` notification. 409 `already_resolved`; 403 for a report "
                    "against a moderator (suspend, ban) or against oneself.",
    ),
    Operation(
        "post", f"{API}/moderation/users/{{user_id}}/suspend", "suspend_user",
        "Suspend (until a time) or ban (no until) a user", "moderation",
        (Reply(201, "Suspended", moderation.Suspension),
         Reply(200, "Replaced the suspension in force", moderation.Suspension)),
        body=moderation.Suspend, errors=(403, 404),
        description=MODERATORS + " In one transaction: the suspension, every refresh-token "
                    "family revoked, every active match ended (`unmatch` to the partners). "
                    "Then every WebSocket of the user closes with 4003. A suspended user gets "
                    "403 `suspended` on every request and is hidden everywhere. 403 for a "
                    "moderator or oneself.",
    ),
    Operation(
        "post", f"{API}/moderation/users/{{user_id}}/unsuspend", "unsuspend_user",
        "Lift a suspension", "moderation", (DONE,), errors=(403, 404, 409),
        description=MODERATORS + " 409 `not_suspended`. Ended matches stay ended.",
    ),
)

REALTIME: tuple[Operation, ...] = (
    Operation("get", "/ws", "websocket", "WebSocket carrying every match of the user",
              "realtime", (_UPGRADE,), secured=False, errors=(400,),
              extra_parameters=(_TOKEN,)),
    Operation("get", "/ws/chat/{match_id}/", "websocket_match",
              "WebSocket scoped to one match", "realtime", (_UPGRADE,), secured=False,
              errors=(400,), extra_parameters=(_TOKEN,)),
)

OPS: tuple[Operation, ...] = (
    Operation("get", "/healthz", "healthz", "Liveness", "operations",
              (Reply(200, "The process serves", ops.Health),), secured=False),
    Operation(
        "get", "/readyz", "readyz", "Readiness of PostgreSQL, Redis and the actor system",
        "operations", (Reply(200, "Every dependency answers", ops.Ready),), secured=False,
        description="503 `not_ready` with `detail.failed` naming each dependency that did "
                    "not answer.",
    ),
    Operation("get", "/metrics", "metrics", "Prometheus metrics", "operations",
              (Reply(200, "Prometheus text format",
                     content={"text/plain": {"schema": {"type": "string"}}}),),
              secured=False),
    Operation("get", f"{API}/openapi.json", "openapi", "This document", "operations",
              (Reply(200, "OpenAPI 3.1", content={"application/json": {
                  "schema": {"type": "object"}}}),), secured=False),
    Operation(
        "get", "/{path}", "web_client", "The web client's pages and assets", "web",
        (Reply(200, "A page (HTML, with its Content-Security-Policy) or an asset",
               content={"text/html": {"schema": {"type": "string"}},
                        "application/octet-stream": {"schema": {"type": "string"}}}),),
        secured=False, errors=(404,),
        path_schemas={"path": {"type": "string"}},
        description="The static export of web/ (WEB_ROOT); the platform's own paths "
                    "(/api/v1, /ws, /healthz, /readyz, /metrics) never fall through to it.",
    ),
)

OPERATIONS: tuple[Operation, ...] = (
    *AUTH, *PROFILE, *DISCOVER, *CHAT, *NOTIFICATIONS, *MODERATION, *REALTIME, *OPS,
)
TAGS = ("auth", "profile", "discover", "chat", "notifications", "webhooks", "moderation",
        "realtime", "operations")
