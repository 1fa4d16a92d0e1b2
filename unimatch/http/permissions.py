"""Per-route permissions: IsAuthenticated, IsVerified, IsProfileComplete,
IsModerator. A handler declares what it needs with `@requires(...)` (or
awaits `authorize(request, ...)` itself, to overlap it with its own reads);
the principal it gets is on `request[PRINCIPAL]`.

401 `unauthorized` / `token_expired` / `invalid_token` for a missing or bad
token; 403 `suspended`, `unverified`, `profile_incomplete` or `forbidden`.
"""

from __future__ import annotations

import enum
import functools
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from unimatch.domain import tokens
from unimatch.domain.errors import Forbidden, Unauthorized
from unimatch.domain.logs import bind_user
from unimatch.http.keys import CONFIG, DB
from unimatch.storage.users import Principal, load_principal

PRINCIPAL = web.RequestKey("principal", Principal)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Permission(enum.Enum):
    IS_AUTHENTICATED = "authenticated"
    IS_VERIFIED = "verified"
    IS_PROFILE_COMPLETE = "profile_complete"
    IS_MODERATOR = "moderator"


IsAuthenticated = Permission.IS_AUTHENTICATED
IsVerified = Permission.IS_VERIFIED
IsProfileComplete = Permission.IS_PROFILE_COMPLETE
IsModerator = Permission.IS_MODERATOR


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("authentication required")
    return token.strip()


def check(principal: Principal, needs: tuple[Permission, ...]) -> None:
    """Raise the contract's 403 for the first permission not held."""
    if principal.is_suspended:
        raise Forbidden("account suspended", code="suspended")
    if (IsVerified in needs or IsProfileComplete in needs) and not principal.is_verified:
        raise Forbidden("verify your email first", code="unverified")
    if IsProfileComplete in needs and not principal.profile_complete:
        raise Forbidden("complete your profile first", code="profile_incomplete")
    if IsModerator in needs and not principal.is_moderator:
        raise Forbidden("moderators only")


async def authenticate(request: web.Request) -> Principal:
    claims = tokens.decode(request.app[CONFIG], bearer_token(request), tokens.ACCESS)
    principal = await load_principal(request.app[DB], claims.user_id)
    if principal is None:
        raise Unauthorized("account no longer exists", code="invalid_token")
    return principal


async def authorize(request: web.Request, *needs: Permission) -> Principal:
    """Authenticate, check `needs`, and keep the principal on the request."""
    principal = await authenticate(request)
    check(principal, needs)
    request[PRINCIPAL] = principal
    bind_user(principal.user_id)  # on every line logged for the rest of the request
    return principal


def token_user(request: web.Request) -> uuid.UUID:
    """The user a valid access token names, before any database check: for
    a handler that starts its own reads while `authorize` runs."""
    return tokens.decode(request.app[CONFIG], bearer_token(request), tokens.ACCESS).user_id


def requires(*needs: Permission) -> Callable[[Handler], Handler]:
    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            await authorize(request, *needs)
            return await handler(request)

        return guarded

    return decorate


def principal_of(request: web.Request) -> Principal:
    return request[PRINCIPAL]
