"""Signup, email verification and sessions: `/api/v1/auth/...`.

Rate limits (all through the one Redis limiter):
- register: `LIMIT_REGISTER_PER_HOUR` requests an hour per client IP;
- OTP resend: one code per 60 s per account (kept by the codes themselves,
  see `storage.accounts`), plus the register budget per IP so one address
  cannot mail-bomb many inboxes;
- OTP verify: 5 attempts per code (counted on the code's row);
- login: `LIMIT_LOGIN_FAILURES` failures in 15 minutes per (account, IP)
  lock that pair out with 429 + Retry-After. The lock is checked before the
  password is, only failures count, and a success clears it.
"""

from __future__ import annotations

import ipaddress
import math
import re

from aiohttp import web

from unimatch.config import Config
from unimatch.errors import Forbidden, RateLimited, Unauthorized, ValidationFailed
from unimatch.http.keys import CONFIG, DB, LIMITER
from unimatch.http.validation import json_response, parse_body
from unimatch.passwords import hash_password, password_problems, spend_verification, verify_password
from unimatch.schemas import auth as schema
from unimatch.storage import accounts
from unimatch.storage.ratelimit import Limit

routes = web.RouteTableDef()

LOGIN_WINDOW_SECONDS = 15 * 60
_LOCAL_PART = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DOMAIN_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def client_ip(request: web.Request) -> str:
    """The client's address. Behind the nginx of `ops/` (a loopback peer) it is
    the last `X-Forwarded-For` entry: nginx appends the address it saw, while
    any entry before it came from the client and could be forged."""
    peer = request.remote or ""
    try:
        trusted = ipaddress.ip_address(peer).is_loopback
    except ValueError:
        trusted = False
    if trusted:
        hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",")]
        hops = [hop for hop in hops if hop]
        if hops:
            try:
                return str(ipaddress.ip_address(hops[-1]))
            except ValueError:
                pass
    return peer or "unknown"


def email_problems(email: str, allowed_domains: tuple[str, ...]) -> list[str]:
    """Why `email` (already normalised) cannot sign up; empty when it can.

    A suffix `.ac.ke` (or `ac.ke`) admits `uon.ac.ke` and
    `students.uonbi.ac.ke` but not `ac.ke` itself (a label must come before
    it) nor `evil.ac.ke.com` (the domain must end with it).
    """
    local, at, domain = email.rpartition("@")
    labels = domain.split(".")
    if (
        not at
        or not local
        or len(local) > 64
        or len(email) > 254
        or not _LOCAL_PART.match(local)
        or len(labels) < 2
        or not all(_DOMAIN_LABEL.match(label) for label in labels)
    ):
        return ["not a valid email address"]
    for suffix in allowed_domains:
        bare = suffix.strip().lower().lstrip(".")
        if not bare:
            continue
        exact_allowed = not suffix.startswith(".")
        if domain.endswith("." + bare) or (exact_allowed and domain == bare):
            return []
    return ["domain not allowed: sign up with your university email"]


def _register_limit(config: Config) -> Limit:
    return Limit(max(config.limit_register_per_hour, 1), 3600)


def _login_limit(config: Config) -> Limit:
    return Limit(max(config.limit_login_failures, 1), LOGIN_WINDOW_SECONDS)


@routes.post("/auth/register")
async def register(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    await request.app[LIMITER].require(
        f"register:{client_ip(request)}",
        _register_limit(config),
        "too many registrations from this network: try again later",
    )
    body = await parse_body(request, schema.Register)
    email, password, display_name = (
        accounts.normalise_email(body.email), body.password, body.display_name
    )
    problems = {
        "email": email_problems(email, config.allowed_email_domains),
        "password": password_problems(password, email=email, display_name=display_name),
    }
    if any(problems.values()):
        raise ValidationFailed({field: found for field, found in problems.items() if found})
    account = await accounts.register(
        request.app[DB],
        config,
        email=email,
        password_hash=await hash_password(password),
        display_name=display_name,
    )
    return json_response(
        {"user_id": account.id, "email": account.email, "is_verified": False}, status=201
    )


@routes.post("/auth/otp/verify")
async def verify_otp(request: web.Request) -> web.Response:
    body = await parse_body(request, schema.OtpVerify)
    account, pair = await accounts.verify_otp(
        request.app[DB], request.app[CONFIG], body.email, body.code
    )
    return json_response({**pair.as_dict(), "user": account.public()})


@routes.post("/auth/otp/resend")
async def resend_otp(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    await request.app[LIMITER].require(
        f"otp_resend:{client_ip(request)}",
        _register_limit(config),
        "too many code requests from this network: try again later",
    )
    body = await parse_body(request, schema.EmailOnly)
    # Whether anything was pending is not told: 202 either way.
    await accounts.resend_otp(request.app[DB], config, body.email)
    return json_response(
        {"detail": "if a registration is pending for this email, a new code is on its way"},
        status=202,
    )


@routes.post("/auth/login")
async def login(request: web.Request) -> web.Response:
    config, db, limiter = request.app[CONFIG], request.app[DB], request.app[LIMITER]
    body = await parse_body(request, schema.Login)
    email, password = body.email, body.password

    key = f"login_failures:{accounts.normalise_email(email)}:{client_ip(request)}"
    limit = _login_limit(config)
    lock = await limiter.check(key, limit)
    if not lock.allowed:
        raise RateLimited(
            "too many failed logins: try again later",
            retry_after=max(1, math.ceil(lock.retry_after)),
            code="too_many_attempts",
        )

    account = await accounts.find_account(db, email)
    if account is None:
        await spend_verification()
        matches, new_hash = False, None
    else:
        matches, new_hash = await verify_password(account.password_hash, password)
    if account is None or not matches:
        await limiter.hit(key, limit)
        raise Unauthorized("wrong email or password", code="invalid_credentials")

    await limiter.reset(key)
    if new_hash is not None:
        await accounts.update_password_hash(db, account.id, new_hash)
    if account.is_suspended:
        raise Forbidden("account suspended", code="suspended")
    if not account.is_verified:
        raise Forbidden("verify your email first: check your inbox for the code",
                        code="unverified")
    pair = await accounts.start_login_session(db, config, account.id)
    return json_response({**pair.as_dict(), "user": account.public()})


@routes.post("/auth/refresh")
async def refresh(request: web.Request) -> web.Response:
    body = await parse_body(request, schema.RefreshToken)
    pair = await accounts.rotate_refresh(request.app[DB], request.app[CONFIG], body.refresh)
    return json_response(pair.as_dict())


@routes.post("/auth/logout")
async def logout(request: web.Request) -> web.Response:
    body = await parse_body(request, schema.RefreshToken)
    await accounts.logout(request.app[DB], request.app[CONFIG], body.refresh)
    return web.Response(status=204)
