"""Accounts: users, email OTP codes and refresh-token families.

Guarantees:

- **One live code per user.** Issuing a code locks the user row, invalidates
  the live code and inserts the new one; the partial unique index
  `email_otps_live_key` makes a second live code impossible. The mail job is
  enqueued on the same transaction, so the code and its mail commit together.
- **Codes are stored hashed**: HMAC-SHA256 keyed by a key derived from the
  JWT secret (`tokens.otp_key`) over the code's row id and the code, so equal
  codes of two users hash differently.
- **A pending registration keeps its first password.** Registering an
  unverified email again only mails a new code (within the resend limit and
  the daily cap): nobody can replace the password of someone else's pending
  signup and then have the owner's code verify it. Whoever owns the inbox
  can always end up with their own password, by `POST /auth/password/forgot`
  (a reset also verifies a pending account, since the code proves the inbox).
- **Codes answer alike whether or not anything is pending.** A wrong code,
  an unknown email, an already verified account: the same 400
  `invalid_code` with `attempts_left` (counted by the caller for emails with
  no live code, see `NoLiveCode`). A right code that has expired is 410.
- **Rotation is race-free.** Using a refresh token is one
  `UPDATE ... WHERE used_at IS NULL RETURNING`: of two concurrent refreshes
  with the same token exactly one gets a row. The other, like any reuse
  within `REFRESH_REUSE_GRACE_SECONDS`, gets the very pair the winner got
  (it is issued again from its stored jtis); a reuse after the grace
  revokes the whole family.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from unimatch.domain import tokens
from unimatch.domain.config import Config
from unimatch.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Gone,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)
from unimatch.schemas import limits
from unimatch.storage.jobs import enqueue_email
from unimatch.storage.pg import Database
from unimatch.storage.users import ACTIVE_SUSPENSION

OTP_TTL_SECONDS = 600
OTP_MAX_ATTEMPTS = 5
OTP_RESEND_SECONDS = 60
OTP_DIGITS = limits.OTP_DIGITS
VERIFY = "verify"
RESET = "reset"

_ACCOUNT_COLUMNS = f"""
    u.id, u.email, u.display_name, u.role, u.is_verified, u.password_hash, u.created_at,
    {ACTIVE_SUSPENSION.format(user="u.id")} AS is_suspended"""

ACCOUNT_BY_EMAIL = f"SELECT {_ACCOUNT_COLUMNS} FROM users u WHERE lower(u.email) = lower($1)"

ACCOUNT_BY_EMAIL_FOR_UPDATE = ACCOUNT_BY_EMAIL + " FOR UPDATE OF u"

ACCOUNT_BY_ID = f"SELECT {_ACCOUNT_COLUMNS} FROM users u WHERE u.id = $1"

INSERT_USER = f"""
INSERT INTO users AS u (email, password_hash, display_name) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING
RETURNING {_ACCOUNT_COLUMNS}"""

UPDATE_PASSWORD_HASH = "UPDATE users SET password_hash = $2 WHERE id = $1"

# A reset proves the inbox, so it verifies a pending account too.
RESET_PASSWORD = """
UPDATE users SET password_hash = $2, is_verified = true,
    verified_at = coalesce(verified_at, now()), updated_at = now()
WHERE id = $1"""

CHANGE_PASSWORD = "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1"

# Codes mailed to the user in the last 24 hours, and when the oldest of them
# leaves that window.
CODES_TODAY = """
SELECT count(*) AS codes,
       coalesce(extract(epoch FROM min(created_at) + interval '1 day' - now()), 0)::float8
           AS frees_in
FROM email_otps WHERE user_id = $1 AND created_at > now() - interval '1 day'"""

# Seconds until the user may have another code (0: now), by the database clock.
RESEND_WAIT = """
SELECT greatest(0, $2 - extract(epoch FROM now() - created_at))::float8
FROM email_otps WHERE user_id = $1
ORDER BY created_at DESC LIMIT 1"""

INVALIDATE_LIVE_OTP = """
UPDATE email_otps SET invalidated_at = now()
WHERE user_id = $1 AND consumed_at IS NULL AND invalidated_at IS NULL"""

INSERT_OTP = """
INSERT INTO email_otps (id, user_id, code_hash, expires_at, purpose)
VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5)"""

LIVE_OTP_FOR_UPDATE = """
SELECT id, code_hash, attempts, expires_at <= now() AS expired,
       greatest(1, $2 - extract(epoch FROM now() - created_at))::float8 AS resend_wait
FROM email_otps
WHERE user_id = $1 AND purpose = $3 AND consumed_at IS NULL AND invalidated_at IS NULL
FOR UPDATE"""

COUNT_FAILED_ATTEMPT = """
UPDATE email_otps SET attempts = attempts + 1 WHERE id = $1 RETURNING attempts"""

CONSUME_OTP = "UPDATE email_otps SET consumed_at = now() WHERE id = $1"

MARK_VERIFIED = f"""
UPDATE users AS u SET is_verified = true, verified_at = now(), updated_at = now()
WHERE u.id = $1
RETURNING {_ACCOUNT_COLUMNS}"""

INSERT_FAMILY = "INSERT INTO refresh_token_families (id, user_id) VALUES ($1, $2)"

INSERT_REFRESH_TOKEN = """
INSERT INTO refresh_tokens (jti, family_id, expires_at, access_jti, issued_epoch)
VALUES ($1, $2, to_timestamp($3), $4, $5)"""

# The single winner of a rotation gets the row; everyone else gets none. It
# names the token it is rotated into ($4) in the same statement.
USE_REFRESH_TOKEN = f"""
UPDATE refresh_tokens AS t SET used_at = now(), successor_jti = $4
FROM refresh_token_families AS f
WHERE t.jti = $1 AND t.family_id = $2 AND f.id = t.family_id AND f.user_id = $3
  AND t.used_at IS NULL AND f.revoked_at IS NULL AND t.expires_at > now()
RETURNING {ACTIVE_SUSPENSION.format(user="f.user_id")} AS is_suspended"""

# A token that did not rotate: why not, and (when it was used within the
# grace, $4 seconds) the unused pair it was rotated into.
REFRESH_TOKEN_STATE = """
SELECT t.used_at, t.expires_at <= now() AS expired, f.revoked_at,
       coalesce(t.used_at > now() - make_interval(secs => $4), false) AS in_grace,
       s.jti AS successor_jti, s.access_jti, s.issued_epoch, s.used_at AS successor_used
FROM refresh_tokens t
JOIN refresh_token_families f ON f.id = t.family_id
LEFT JOIN refresh_tokens s ON s.jti = t.successor_jti
WHERE t.jti = $1 AND t.family_id = $2 AND f.user_id = $3"""

REVOKE_FAMILY = """
UPDATE refresh_token_families SET revoked_at = now(), revoked_reason = $2
WHERE id = $1 AND revoked_at IS NULL"""

# Logout names the family by one of its tokens (used or not).
REVOKE_FAMILY_OF_TOKEN = """
UPDATE refresh_token_families AS f SET revoked_at = now(), revoked_reason = 'logout'
WHERE f.id = $2 AND f.user_id = $3 AND f.revoked_at IS NULL
  AND EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.jti = $1 AND t.family_id = f.id)"""

REVOKE_USER_FAMILIES = """
UPDATE refresh_token_families SET revoked_at = now(), revoked_reason = $2
WHERE user_id = $1 AND revoked_at IS NULL"""

# Every session of the user but the one ($3, may be null) making the change.
REVOKE_OTHER_FAMILIES = """
UPDATE refresh_token_families SET revoked_at = now(), revoked_reason = $2
WHERE user_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $3"""


@dataclass(frozen=True)
class Account:
    id: uuid.UUID
    email: str
    display_name: str
    role: str
    is_verified: bool
    is_suspended: bool
    password_hash: str
    created_at: dt.datetime

    @classmethod
    def from_record(cls, row: asyncpg.Record) -> Account:
        return cls(
            id=row["id"],
            email=row["email"],
            display_name=row["display_name"],
            role=row["role"],
            is_verified=row["is_verified"],
            is_suspended=row["is_suspended"],
            password_hash=row["password_hash"],
            created_at=row["created_at"],
        )

    def public(self) -> dict[str, Any]:
        """The `user` object of auth responses (never the hash)."""
        return {
            "user_id": str(self.id),
            "email": self.email,
            "display_name": self.display_name,
            "role": self.role,
            "is_verified": self.is_verified,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class TokenPair:
    access: str
    refresh: str

    def as_dict(self) -> dict[str, str]:
        return {"access": self.access, "refresh": self.refresh}


def normalise_email(email: str) -> str:
    return email.strip().lower()


# -- accounts -----------------------------------------------------------------


async def find_account(db: Database, email: str) -> Account | None:
    row = await db.fetchrow(ACCOUNT_BY_EMAIL, normalise_email(email))
    return None if row is None else Account.from_record(row)


async def update_password_hash(db: Database, user_id: uuid.UUID, password_hash: str) -> None:
    await db.execute(UPDATE_PASSWORD_HASH, user_id, password_hash)


async def register(
    db: Database, config: Config, *, email: str, password_hash: str, display_name: str
) -> Account:
    """Create the account and send its first code, in one transaction.

    A verified email is taken (409 `email_taken`). An email whose account was
    never verified is a pending registration: registering it again changes
    nothing of it (not its password, not its name, not its age) and mails a
    fresh code, within the resend limit and the daily cap (429 otherwise);
    the answer is the same as for a first registration. So a stranger who
    registers a pending address again cannot have the owner's next code
    verify the account with the stranger's password.
    """
    email = normalise_email(email)
    async with db.transaction() as conn:
        existing = await conn.fetchrow(ACCOUNT_BY_EMAIL_FOR_UPDATE, email)
        if existing is None:
            row = await conn.fetchrow(INSERT_USER, email, password_hash, display_name)
            if row is not None:
                account = Account.from_record(row)
                await issue_otp(conn, config, account, VERIFY)
                return account
            # A concurrent registration of the same address won the insert
            # (and has committed): this one is a registration again.
            existing = await conn.fetchrow(ACCOUNT_BY_EMAIL_FOR_UPDATE, email)
        if existing is None or existing["is_verified"]:
            raise Conflict({"email": ["an account with this email exists"]}, code="email_taken")
        account = Account.from_record(existing)
        await issue_otp(conn, config, account, VERIFY, again=True)
    return account


# -- one-time codes -------------------------------------------------------------


class NoLiveCode(ValidationFailed):
    """No code of the asked purpose is live for that email (or no account
    is there, or it is verified already). The HTTP layer answers it exactly as
    a wrong code, counting the attempts itself, so nobody learns which."""

    code = "invalid_code"


def wrong_code(attempts_left: int) -> ValidationFailed:
    return ValidationFailed(
        {"code": ["incorrect code"], "attempts_left": max(attempts_left, 0)},
        code="invalid_code",
    )


def too_many_wrong_codes(retry_after: float) -> RateLimited:
    return RateLimited(
        "too many wrong codes: request a new one",
        retry_after=max(1.0, retry_after),
        code="too_many_attempts",
    )


def _code_hash(config: Config, otp_id: uuid.UUID, code: str) -> str:
    message = f"{otp_id}:{code}".encode()
    return hmac.new(tokens.otp_key(config), message, hashlib.sha256).hexdigest()


def _otp_mail(account: Account, code: str, purpose: str, again: bool) -> tuple[str, str]:
    minutes = OTP_TTL_SECONDS // 60
    if purpose == RESET:
        subject = "Your UniMatch password reset code"
        text = (
            f"Hi {account.display_name},\n\n"
            f"Your UniMatch password reset code is {code}\n\n"
            f"It expires in {minutes} minutes. Resetting your password logs you out "
            "everywhere. If you did not ask for this, ignore this email: nothing "
            "changes without the code.\n"
        )
        return subject, text
    subject = "Your UniMatch verification code"
    text = (
        f"Hi {account.display_name},\n\n"
        f"Your UniMatch verification code is {code}\n\n"
        f"It expires in {minutes} minutes. If you did not sign up for "
        "UniMatch, ignore this email: nothing happens without the code.\n"
    )
    if again:
        text += (
            "\nThis address was registered before and not yet verified. The account "
            "keeps the password chosen at that first registration. If that was not "
            "you, verify with this code and then choose your own password with "
            "\"Forgot password\", which also logs out anyone else.\n"
        )
    return subject, text


async def issue_otp(
    conn: asyncpg.Connection, config: Config, account: Account, purpose: str = VERIFY,
    *, again: bool = False,
) -> None:
    """Invalidate the live code, store a new one of `purpose` and enqueue its
    mail, on the caller's transaction (which must hold the user row locked).
    Raises `RateLimited` when the last code is younger than the resend
    interval or the account had `limit_codes_per_day` codes in 24 hours."""
    wait = await conn.fetchval(RESEND_WAIT, account.id, float(OTP_RESEND_SECONDS))
    if wait:
        raise RateLimited(
            "a code was sent recently: wait before asking for another",
            retry_after=max(1.0, wait),
        )
    today = await conn.fetchrow(CODES_TODAY, account.id)
    if today["codes"] >= max(config.limit_codes_per_day, 1):
        raise RateLimited(
            "too many codes for this account today: try again later",
            retry_after=max(1.0, today["frees_in"]),
        )
    code = f"{secrets.randbelow(10**OTP_DIGITS):0{OTP_DIGITS}d}"
    otp_id = uuid.uuid4()
    await conn.execute(INVALIDATE_LIVE_OTP, account.id)
    await conn.execute(
        INSERT_OTP, otp_id, account.id, _code_hash(config, otp_id, code),
        float(OTP_TTL_SECONDS), purpose,
    )
    subject, text = _otp_mail(account, code, purpose, again)
    await enqueue_email(conn, account.email, subject, text, dedupe_key=f"otp:{otp_id}")


async def resend_otp(db: Database, config: Config, email: str) -> bool:
    """A fresh code for a pending account. False (and nothing sent) when no
    account is pending under `email`, which the caller does not reveal."""
    async with db.transaction() as conn:
        row = await conn.fetchrow(ACCOUNT_BY_EMAIL_FOR_UPDATE, normalise_email(email))
        if row is None or row["is_verified"]:
            return False
        await issue_otp(conn, config, Account.from_record(row), VERIFY)
    return True


async def _spend_code(
    conn: asyncpg.Connection, config: Config, user_id: uuid.UUID, purpose: str, code: str
) -> DomainError | None:
    """Check `code` against the user's live code of `purpose`: None when it
    is right (and now consumed), else the error to raise once the counted
    attempt has committed. The code is compared before its expiry is looked
    at, so only someone holding the right code learns that it expired."""
    otp = await conn.fetchrow(LIVE_OTP_FOR_UPDATE, user_id, float(OTP_RESEND_SECONDS), purpose)
    if otp is None:
        return NoLiveCode({"code": ["incorrect code"]})
    if otp["attempts"] >= OTP_MAX_ATTEMPTS:
        return too_many_wrong_codes(otp["resend_wait"])
    if not hmac.compare_digest(otp["code_hash"], _code_hash(config, otp["id"], code)):
        attempts = await conn.fetchval(COUNT_FAILED_ATTEMPT, otp["id"])
        return wrong_code(OTP_MAX_ATTEMPTS - attempts)
    if otp["expired"]:
        return Gone("this code has expired: request a new one", code="code_expired")
    await conn.execute(CONSUME_OTP, otp["id"])
    return None


async def verify_otp(
    db: Database, config: Config, email: str, code: str
) -> tuple[Account, TokenPair]:
    """Check `code` against the live code of the account pending under `email`.

    Right: the code is consumed, the user verified and a session started.
    Wrong: the attempt is counted (committed) and 400 `invalid_code` says how
    many are left. Right but expired: 410 `code_expired`. After
    `OTP_MAX_ATTEMPTS` wrong ones: 429 `too_many_attempts`, Retry-After being
    when a new code may be requested. Unknown email, verified account or no
    live code: `NoLiveCode`, which the caller answers as a wrong code.
    """
    error: DomainError | None = None
    async with db.transaction() as conn:
        row = await conn.fetchrow(ACCOUNT_BY_EMAIL_FOR_UPDATE, normalise_email(email))
        if row is None or row["is_verified"]:
            error = NoLiveCode({"code": ["incorrect code"]})
        else:
            error = await _spend_code(conn, config, row["id"], VERIFY, code)
        if error is None:
            account = Account.from_record(await conn.fetchrow(MARK_VERIFIED, row["id"]))
            pair = await start_session(conn, config, account.id)
    # Raised after the commit: a wrong attempt must be counted.
    if error is not None:
        raise error
    return account, pair


# -- passwords ------------------------------------------------------------------


async def request_password_reset(db: Database, config: Config, email: str) -> bool:
    """Mail a reset code to the account under `email`, pending or verified.
    False when nothing was sent: no such account, or its resend wait or daily
    cap not passed. The caller answers alike either way."""
    try:
        async with db.transaction() as conn:
            row = await conn.fetchrow(ACCOUNT_BY_EMAIL_FOR_UPDATE, normalise_email(email))
            if row is None:
                return False
            await issue_otp(conn, config, Account.from_record(row), RESET)
    except RateLimited:
        return False
    return True


async def reset_password(
    db: Database, config: Config, email: str, code: str, password_hash: str
) -> uuid.UUID:
    """Spend the reset `code` of `email`'s account and set its password. A
    pending account becomes verified (the code proves the inbox), and every
    session of the account ends. Errors as `verify_otp`."""
    error: DomainError | None = None
    async with db.transaction() as conn:
        row = await conn.fetchrow(ACCOUNT_BY_EMAIL_FOR_UPDATE, normalise_email(email))
        if row is None:
            error = NoLiveCode({"code": ["incorrect code"]})
        else:
            error = await _spend_code(conn, config, row["id"], RESET, code)
        if error is None:
            await conn.execute(RESET_PASSWORD, row["id"], password_hash)
            await conn.execute(REVOKE_USER_FAMILIES, row["id"], "password_reset")
    if error is not None:
        raise error
    return row["id"]


async def change_password(
    db: Database, user_id: uuid.UUID, password_hash: str, keep_family: uuid.UUID | None
) -> int:
    """Set the password and end every session of the user but `keep_family`
    (the one making the change). Returns how many sessions ended."""
    async with db.transaction() as conn:
        await conn.execute(CHANGE_PASSWORD, user_id, password_hash)
        status = await conn.execute(
            REVOKE_OTHER_FAMILIES, user_id, "password_change", keep_family
        )
    return int(status.rpartition(" ")[2])


# -- refresh-token families ---------------------------------------------------


def _pair(
    config: Config, user_id: uuid.UUID, family_id: uuid.UUID, jti: uuid.UUID,
    access_jti: uuid.UUID, issued_at: int,
) -> tuple[TokenPair, int]:
    refresh, expires = tokens.issue_refresh(config, user_id, family_id, jti, issued_at=issued_at)
    access = tokens.issue_access(
        config, user_id, family_id, jti=access_jti, issued_at=issued_at
    )
    return TokenPair(access, refresh), expires


async def _issue_in_family(
    conn: asyncpg.Connection, config: Config, user_id: uuid.UUID, family_id: uuid.UUID,
    jti: uuid.UUID | None = None,
) -> TokenPair:
    jti = jti or uuid.uuid4()
    access_jti = uuid.uuid4()
    issued_at = int(time.time())
    pair, expires = _pair(config, user_id, family_id, jti, access_jti, issued_at)
    await conn.execute(
        INSERT_REFRESH_TOKEN, jti, family_id, float(expires), access_jti, issued_at
    )
    return pair


async def start_session(conn: asyncpg.Connection, config: Config, user_id: uuid.UUID) -> TokenPair:
    """A new refresh-token family and its first tokens, on the caller's transaction."""
    family_id = uuid.uuid4()
    await conn.execute(INSERT_FAMILY, family_id, user_id)
    return await _issue_in_family(conn, config, user_id, family_id)


async def rotate_refresh(db: Database, config: Config, refresh: str) -> TokenPair:
    """Spend `refresh` and return the next pair of its family.

    A token already used less than `refresh_reuse_grace` seconds ago, whose
    successor is still unused, returns that same successor pair again: two
    tabs refreshing at once, or a client retrying after a lost response.
    401 `token_reused` when the token was spent earlier than that, or its
    successor was used (its family is revoked on the spot: someone holds a
    copy), `token_revoked` when its family was revoked (logout, reuse,
    suspension, password change), `token_expired`, `invalid_token`.
    403 `suspended` for a suspended user (the family is revoked too).
    """
    claims = tokens.decode(config, refresh, tokens.REFRESH)
    assert claims.family_id is not None
    error: DomainError | None = None
    successor = uuid.uuid4()
    async with db.transaction() as conn:
        used = await conn.fetchrow(
            USE_REFRESH_TOKEN, claims.jti, claims.family_id, claims.user_id, successor
        )
        if used is not None and used["is_suspended"]:
            await conn.execute(REVOKE_FAMILY, claims.family_id, "suspended")
            error = Forbidden("account suspended", code="suspended")
        elif used is not None:
            pair = await _issue_in_family(
                conn, config, claims.user_id, claims.family_id, successor
            )
        else:
            state = await conn.fetchrow(
                REFRESH_TOKEN_STATE, claims.jti, claims.family_id, claims.user_id,
                float(config.refresh_reuse_grace),
            )
            if state is None:
                error = Unauthorized("unknown refresh token", code="invalid_token")
            elif state["revoked_at"] is not None:
                error = Unauthorized("session revoked: log in again", code="token_revoked")
            elif (
                state["used_at"] is not None and state["in_grace"]
                and state["successor_jti"] is not None and state["successor_used"] is None
                and state["access_jti"] is not None
            ):
                pair, _ = _pair(
                    config, claims.user_id, claims.family_id, state["successor_jti"],
                    state["access_jti"], int(state["issued_epoch"]),
                )
            elif state["used_at"] is not None:
                await conn.execute(REVOKE_FAMILY, claims.family_id, "reuse")
                error = Unauthorized(
                    "refresh token already used: every session of this login is revoked",
                    code="token_reused",
                )
            else:
                error = Unauthorized("token expired", code="token_expired")
    if error is not None:
        raise error
    return pair


async def logout(db: Database, config: Config, refresh: str) -> None:
    """Revoke the family of `refresh`. Idempotent."""
    claims = tokens.decode(config, refresh, tokens.REFRESH)
    await db.execute(REVOKE_FAMILY_OF_TOKEN, claims.jti, claims.family_id, claims.user_id)


async def revoke_user_families(
    conn: asyncpg.Connection, user_id: uuid.UUID, reason: str
) -> int:
    """Revoke every live refresh-token family of the user (suspension, ban):
    no refresh succeeds afterwards. On the caller's transaction. Returns how
    many families were revoked. Access tokens already issued stay valid until
    they expire (15 min), but every request re-checks suspension."""
    status = await conn.execute(REVOKE_USER_FAMILIES, user_id, reason)
    return int(status.rpartition(" ")[2])


async def load_account(db: Database, user_id: uuid.UUID) -> Account | None:
    row = await db.fetchrow(ACCOUNT_BY_ID, user_id)
    return None if row is None else Account.from_record(row)


async def start_login_session(db: Database, config: Config, user_id: uuid.UUID) -> TokenPair:
    async with db.transaction() as conn:
        return await start_session(conn, config, user_id)
