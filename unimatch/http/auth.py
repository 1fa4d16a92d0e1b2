"""Signup, email verification, sessions and passwords: `/api/v1/auth/...`
and `POST /api/v1/me/password`.

Rate limits, all through the one Redis limiter; every per-IP limit counts by
`client_address` (the trusted-proxy rules, IPv6 by /64). Each of these limits
guards credentials, so while Redis is down it is kept by this process alone
instead of failing open (`Limit.local_fallback`):

- register, OTP resend, password forgot: `LIMIT_REGISTER_PER_HOUR` an hour
  per IP each; one code per 60 s and `LIMIT_CODES_PER_DAY` codes a day per
  account (kept by the codes themselves, see `storage.accounts`);
- code checks (OTP verify, password reset): `LIMIT_OTP_VERIFY_PER_IP` and
  `LIMIT_OTP_VERIFY_PER_ACCOUNT` in 15 minutes, and 5 attempts per code;
  an email with no live code counts its attempts here, in Redis, so its
  answers match a real code's;
- login (and `/me/password`): `LIMIT_LOGIN_FAILURES` per (account, IP),
  `LIMIT_LOGIN_PER_ACCOUNT` per account and `LIMIT_LOGIN_PER_IP` per IP, in
  15 minutes. An attempt is reserved in all three, atomically, *before* the
  password is checked, so a burst of parallel guesses gets no more checks
  than the limit; a success clears the pair and gives the other two back.

Password hashing goes through the app's bounded `PasswordWork` pool: past
it, 503 `overloaded` with Retry-After (and the reserved attempts are given
back, since nothing was checked).
"""

from __future__ import annotations

import logging
import math
import re
import uuid

from aiohttp import web

from unimatch.domain import tokens
from unimatch.domain.closes import CLOSE_UNAUTHORIZED
from unimatch.domain.config import Config
from unimatch.domain.errors import (
    DomainError,
    Forbidden,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)
from unimatch.domain.passwords import (
    password_problems,
)
from unimatch.domain.workpool import Overloaded
from unimatch.http.client_address import client_limit_key
from unimatch.http.keys import CONFIG, DB, DIRECTORY, LIMITER, PASSWORDS
from unimatch.http.permissions import IsAuthenticated, bearer_token, principal_of, requires
from unimatch.http.validation import json_response, parse_body
from unimatch.schemas import auth as schema
from unimatch.storage import accounts
from unimatch.storage.ratelimit import Limit, RateLimiter

log = logging.getLogger("unimatch.auth")

routes = web.RouteTableDef()

LOGIN_WINDOW_SECONDS = 15 * 60
CODE_CHECK_WINDOW_SECONDS = 15 * 60
_LOCAL_PART = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DOMAIN_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


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
    return Limit(max(config.limit_register_per_hour, 1), 3600, local_fallback=True)


async def _limit_network(request: web.Request, action: str, refusal: str) -> None:
    """The hourly cap on mail-sending requests (registrations, codes, reset
    codes) from one client network; `refusal` is the 429's message."""
    await request.app[LIMITER].require(
        f"{action}:{client_limit_key(request)}",
        _register_limit(request.app[CONFIG]),
        refusal,
    )


def _login_limit(config: Config) -> Limit:
    return Limit(max(config.limit_login_failures, 1), LOGIN_WINDOW_SECONDS, local_fallback=True)


def _window(burst: int, seconds: float) -> Limit:
    return Limit(max(burst, 1), seconds, local_fallback=True)


Reservation = list[tuple[str, Limit]]


async def _reserve(limiter: RateLimiter, wanted: Reservation, detail: str) -> Reservation:
    """Spend one attempt in every limit of `wanted`, or none: when one is
    exhausted, those already spent are given back and 429
    `too_many_attempts` is raised."""
    taken: Reservation = []
    for key, limit in wanted:
        decision = await limiter.hit(key, limit)
        if not decision.allowed:
            for done_key, done_limit in taken:
                await limiter.release(done_key, done_limit)
            raise RateLimited(
                detail, retry_after=max(1, math.ceil(decision.retry_after)),
                code="too_many_attempts",
            )
        taken.append((key, limit))
    return taken


async def _release(limiter: RateLimiter, taken: Reservation) -> None:
    for key, limit in taken:
        await limiter.release(key, limit)


def _login_reservation(config: Config, email: str, ip: str) -> Reservation:
    return [
        (f"login_failures:{email}:{ip}", _login_limit(config)),
        (f"login_account:{email}", _window(config.limit_login_per_account, LOGIN_WINDOW_SECONDS)),
        (f"login_ip:{ip}", _window(config.limit_login_per_ip, LOGIN_WINDOW_SECONDS)),
    ]


def _code_check_reservation(config: Config, email: str, ip: str) -> Reservation:
    return [
        (f"code_check_ip:{ip}",
         _window(config.limit_otp_verify_per_ip, CODE_CHECK_WINDOW_SECONDS)),
        (f"code_check_account:{email}",
         _window(config.limit_otp_verify_per_account, CODE_CHECK_WINDOW_SECONDS)),
    ]


async def _answer_no_live_code(limiter: RateLimiter, purpose: str, email: str) -> None:
    """Raise for an email with no live code what a live code would answer
    to a wrong guess: attempts counting down from 5, then 429."""
    decision = await limiter.hit(
        f"code_phantom:{purpose}:{email}",
        Limit(accounts.OTP_MAX_ATTEMPTS, accounts.OTP_TTL_SECONDS, local_fallback=True),
    )
    if not decision.allowed:
        raise accounts.too_many_wrong_codes(
            min(float(accounts.OTP_RESEND_SECONDS), decision.retry_after)
        )
    raise accounts.wrong_code(decision.remaining)


@routes.post("/auth/register")
async def register(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    await _limit_network(
        request, "register", "too many registrations from this network: try again later"
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
        password_hash=await request.app[PASSWORDS].hash(password),
        display_name=display_name,
    )
    return json_response(
        {"user_id": account.id, "email": account.email, "is_verified": False}, status=201
    )


@routes.post("/auth/otp/verify")
async def verify_otp(request: web.Request) -> web.Response:
    config, limiter = request.app[CONFIG], request.app[LIMITER]
    body = await parse_body(request, schema.OtpVerify)
    email, code = accounts.normalise_email(body.email), body.code
    await _reserve(
        limiter, _code_check_reservation(config, email, client_limit_key(request)),
        "too many code attempts: try again later",
    )
    try:
        account, pair = await accounts.verify_otp(request.app[DB], config, email, code)
    except accounts.NoLiveCode:
        await _answer_no_live_code(limiter, accounts.VERIFY, email)
        raise
    return json_response({**pair.as_dict(), "user": account.public()})


@routes.post("/auth/otp/resend")
async def resend_otp(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    await _limit_network(
        request, "otp_resend", "too many code requests from this network: try again later"
    )
    email = (await parse_body(request, schema.EmailOnly)).email
    # Whether anything was pending is not told: 202 either way.
    await accounts.resend_otp(request.app[DB], config, email)
    return json_response(
        {"detail": "if a registration is pending for this email, a new code is on its way"},
        status=202,
    )


@routes.post("/auth/login")
async def login(request: web.Request) -> web.Response:
    config, db, limiter = request.app[CONFIG], request.app[DB], request.app[LIMITER]
    work = request.app[PASSWORDS]
    body = await parse_body(request, schema.Login)
    email, password = accounts.normalise_email(body.email), body.password

    reserved = await _reserve(
        limiter, _login_reservation(config, email, client_limit_key(request)),
        "too many failed logins: try again later",
    )
    try:
        account = await accounts.find_account(db, email)
        if account is None:
            await work.spend_verification()
            matches, new_hash = False, None
        else:
            matches, new_hash = await work.verify(account.password_hash, password)
    except Overloaded:
        await _release(limiter, reserved)
        raise
    if account is None or not matches:
        # The reserved attempts stay spent: they were failures.
        raise Unauthorized("wrong email or password", code="invalid_credentials")

    pair_key, _ = reserved[0]
    await limiter.reset(pair_key)
    await _release(limiter, reserved[1:])
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
    token = (await parse_body(request, schema.RefreshToken)).refresh
    try:
        pair = await accounts.rotate_refresh(request.app[DB], request.app[CONFIG], token)
    except Unauthorized as exc:
        if exc.code == "token_reused":  # the family was revoked on the spot
            await _close_session_sockets(request.app, token, "session revoked")
        raise
    return json_response(pair.as_dict())


@routes.post("/auth/logout")
async def logout(request: web.Request) -> web.Response:
    token = (await parse_body(request, schema.RefreshToken)).refresh
    await accounts.logout(request.app[DB], request.app[CONFIG], token)
    await _close_session_sockets(request.app, token, "logged out")
    return web.Response(status=204)


async def _close_session_sockets(app: web.Application, refresh: str, reason: str) -> None:
    """The sockets of the session a refresh token belongs to close 4001
    (best effort: an access token that lapses closes its socket anyway)."""
    try:
        claims = tokens.decode(app[CONFIG], refresh, tokens.REFRESH)
    except DomainError:
        return
    await _disconnect(app, claims.user_id, reason, family=claims.family_id)


async def _disconnect(
    app: web.Application, user_id: uuid.UUID, reason: str, *,
    family: uuid.UUID | None = None, keep_family: uuid.UUID | None = None,
) -> None:
    directory = app[DIRECTORY]
    if directory is None:
        return
    try:
        await directory.call(
            "user", str(user_id), "disconnect", CLOSE_UNAUTHORIZED, reason,
            str(family) if family else None, str(keep_family) if keep_family else None,
        )
    except Exception as exc:
        log.warning("could not close the sockets of %s: %r", user_id, exc)


# -- passwords ------------------------------------------------------------------


@routes.post("/me/password")
@requires(IsAuthenticated)
async def change_password(request: web.Request) -> web.Response:
    """204: the password is changed and every other session ends (their
    refresh tokens are revoked; their access tokens lapse within 15 min)."""
    config, db, limiter = request.app[CONFIG], request.app[DB], request.app[LIMITER]
    work = request.app[PASSWORDS]
    user_id = principal_of(request).user_id
    account = await accounts.load_account(db, user_id)
    if account is None:
        raise Unauthorized("account no longer exists", code="invalid_token")
    body = await parse_body(request, schema.PasswordChange)
    current, new = body.current, body.new
    problems = password_problems(new, email=account.email, display_name=account.display_name)
    if problems:
        raise ValidationFailed({"new": problems})

    # The current password is guessed no faster here than at login.
    reserved = await _reserve(
        limiter, _login_reservation(config, account.email, client_limit_key(request)),
        "too many failed attempts: try again later",
    )
    try:
        matches, _ = await work.verify(account.password_hash, current)
        if not matches:
            raise ValidationFailed(
                {"current": ["incorrect password"]}, code="invalid_credentials"
            )
        new_hash = await work.hash(new)
    except Overloaded:
        await _release(limiter, reserved)
        raise
    await limiter.reset(reserved[0][0])
    await _release(limiter, reserved[1:])
    family = tokens.decode(config, bearer_token(request), tokens.ACCESS).family_id
    await accounts.change_password(db, user_id, new_hash, keep_family=family)
    await _disconnect(request.app, user_id, "password changed", keep_family=family)
    return web.Response(status=204)


@routes.post("/auth/password/forgot")
async def forgot_password(request: web.Request) -> web.Response:
    """202 whether or not the email has an account: a reset code is mailed
    when it does (within one code per 60 s and the daily cap)."""
    config = request.app[CONFIG]
    await _limit_network(
        request, "password_forgot", "too many reset requests from this network: try again later"
    )
    email = (await parse_body(request, schema.PasswordForgot)).email
    await accounts.request_password_reset(request.app[DB], config, email)
    return json_response(
        {"detail": "if an account exists for this email, a reset code is on its way"},
        status=202,
    )


@routes.post("/auth/password/reset")
async def reset_password(request: web.Request) -> web.Response:
    """204: the password is set, a pending account is verified, and every
    session of the account ends. Code errors as `/auth/otp/verify`."""
    config, limiter = request.app[CONFIG], request.app[LIMITER]
    body = await parse_body(request, schema.PasswordReset)
    email, code, new = accounts.normalise_email(body.email), body.code, body.new
    problems = password_problems(new, email=email)
    if problems:
        raise ValidationFailed({"new": problems})
    await _reserve(
        limiter, _code_check_reservation(config, email, client_limit_key(request)),
        "too many code attempts: try again later",
    )
    new_hash = await request.app[PASSWORDS].hash(new)
    try:
        await accounts.reset_password(request.app[DB], config, email, code, new_hash)
    except accounts.NoLiveCode:
        await _answer_no_live_code(limiter, accounts.RESET, email)
        raise
    # The account's lockout ends with its old password, and so does every
    # session and socket.
    await limiter.reset(f"login_account:{email}")
    account = await accounts.find_account(request.app[DB], email)
    if account is not None:
        await _disconnect(request.app, account.id, "password reset")
    return web.Response(status=204)
