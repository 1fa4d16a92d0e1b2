"""Accounts: users, email OTP codes and refresh-token families.

Guarantees:

- **One live code per user.** Issuing a code locks the user row, invalidates
  the live code and inserts the new one; the partial unique index
  `email_otps_live_key` makes a second live code impossible. The mail job is
  enqueued on the same transaction, so the code and its mail commit together.
- **Codes are stored hashed**: HMAC-SHA256 keyed by the JWT secret over the
  code's row id and the code, so equal codes of two users hash differently.
- **Rotation is race-free.** Using a refresh token is one
  `UPDATE ... WHERE used_at IS NULL RETURNING`: of two concurrent refreshes
  with the same token exactly one gets a row; the other sees a used token,
  which is reuse, and revokes the whole family.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from unimatch import tokens
from unimatch.config import Config
from unimatch.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Gone,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)
from unimatch.scheduler.mail import enqueue_email
from unimatch.schemas import limits
from unimatch.storage.pg import Database
from unimatch.storage.users import ACTIVE_SUSPENSION

OTP_TTL_SECONDS = 600
OTP_MAX_ATTEMPTS = 5
OTP_RESEND_SECONDS = 60
OTP_DIGITS = limits.OTP_DIGITS

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

# A pending (never verified) registration taken over by a new one; its age,
# which the hourly cleanup of unverified accounts goes by, starts again.
REPLACE_PENDING = f"""
UPDATE users AS u SET password_hash = $2, display_name = $3, created_at = now(),
    updated_at = now()
WHERE u.id = $1 AND NOT u.is_verified
RETURNING {_ACCOUNT_COLUMNS}"""

UPDATE_PASSWORD_HASH = "UPDATE users SET password_hash = $2 WHERE id = $1"

# Seconds until the user may have another code (0: now), by the database clock.
RESEND_WAIT = """
SELECT greatest(0, $2 - extract(epoch FROM now() - created_at))::float8
FROM email_otps WHERE user_id = $1
ORDER BY created_at DESC LIMIT 1"""

INVALIDATE_LIVE_OTP = """
UPDATE email_otps SET invalidated_at = now()
WHERE user_id = $1 AND consumed_at IS NULL AND invalidated_at IS NULL"""

INSERT_OTP = """
INSERT INTO email_otps (id, user_id, code_hash, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4))"""

LIVE_OTP_FOR_UPDATE = """
SELECT id, code_hash, attempts, expires_at <= now() AS expired,
       greatest(1, $2 - extract(epoch FROM now() - created_at))::float8 AS resend_wait
FROM email_otps
WHERE user_id = $1 AND consumed_at IS NULL AND invalidated_at IS NULL
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
INSERT INTO refresh_tokens (jti, family_id, expires_at) VALUES ($1, $2, to_timestamp($3))"""

# The single winner of a rotation gets the row; everyone else gets none.
USE_REFRESH_TOKEN = f"""
UPDATE refresh_tokens AS t SET used_at = now()
FROM refresh_token_families AS f
WHERE t.jti = $1 AND t.family_id = $2 AND f.id = t.family_id AND f.user_id = $3
  AND t.used_at IS NULL AND f.revoked_at IS NULL AND t.expires_at > now()
RETURNING {ACTIVE_SUSPENSION.format(user="f.user_id")} AS is_suspended"""

REFRESH_TOKEN_STATE = """
SELECT t.used_at, t.expires_at <= now() AS expired, f.revoked_at
FROM refresh_tokens t JOIN refresh_token_families f ON f.id = t.family_id
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
    never verified is a pending registration: the new one replaces its
    password and display name and gets a fresh code (the old one dies), within
    the resend limit. Only the inbox owner can finish a registration, so a
    stranger who signed up with someone else's address cannot keep its owner
    out, and the owner's own password is the one that counts.
    """
    email = normalise_email(email)
    async with db.transaction() as conn:
        existing = await conn.fetchrow(ACCOUNT_BY_EMAIL_FOR_UPDATE, email)
        if existing is not None and existing["is_verified"]:
            raise Conflict({"email": ["an account with this email exists"]}, code="email_taken")
        if existing is None:
            row = await conn.fetchrow(INSERT_USER, email, password_hash, display_name)
        else:
            row = await conn.fetchrow(REPLACE_PENDING, existing["id"], password_hash, display_name)
        if row is None:
            # Lost a race with a concurrent registration of the same address.
            raise Conflict({"email": ["an account with this email exists"]}, code="email_taken")
        account = Account.from_record(row)
        await issue_otp(conn, config, account)
    return account


# -- one-time codes -------------------------------------------------------------


def _code_hash(config: Config, otp_id: uuid.UUID, code: str) -> str:
    message = f"{otp_id}:{code}".encode()
    return hmac.new(config.jwt_secret.encode(), message, hashlib.sha256).hexdigest()


def _otp_mail(account: Account, code: str) -> tuple[str, str]:
    subject = "Your UniMatch verification code"
    text = (
        f"Hi {account.display_name},\n\n"
        f"Your UniMatch verification code is {code}\n\n"
        f"It expires in {OTP_TTL_SECONDS // 60} minutes. If you did not sign up for "
        "UniMatch, ignore this email: nothing happens without the code.\n"
    )
    return subject, text


async def issue_otp(conn: asyncpg.Connection, config: Config, account: Account) -> None:
    """Invalidate the live code, store a new one and enqueue its mail, on the
    caller's transaction (which must hold the user row locked). Raises
    `RateLimited` when the last code is younger than the resend interval."""
    wait = await conn.fetchval(RESEND_WAIT, account.id, float(OTP_RESEND_SECONDS))
    if wait:
        raise RateLimited(
            "a code was sent recently: wait before asking for another",
            retry_after=max(1.0, wait),
        )
    code = f"{secrets.randbelow(10**OTP_DIGITS):0{OTP_DIGITS}d}"
    otp_id = uuid.uuid4()
    await conn.execute(INVALIDATE_LIVE_OTP, account.id)
    await conn.execute(
        INSERT_OTP, otp_id, account.id, _code_hash(config, otp_id, code), float(OTP_TTL_SECONDS)
    )
    subject, text = _otp_mail(account, code)
    await enqueue_email(conn, account.email, subject, text, dedupe_key=f"otp:{otp_id}")


async def resend_otp(db: Database, config: Config, email: str) -> bool:
    """A fresh code for a pending account. False (and nothing sent) when no
    account is pending under `email`, which the caller does not reveal."""
    async with db.transaction() as conn:
        row = await conn.fetchrow(ACCOUNT_BY_EMAIL_FOR_UPDATE, normalise_email(email))
        if row is None or row["is_verified"]:
            return False
        await issue_otp(conn, config, Account.from_record(row))
    return True


async def verify_otp(
    db: Database, config: Config, email: str, code: str
) -> tuple[Account, TokenPair]:
    """Check `code` against the live code of the account pending under `email`.

    Right: the code is consumed, the user verified and a session started.
    Wrong: the attempt is counted (committed) and 400 `invalid_code` says how
    many are left. Expired: 410 `code_expired`. After `OTP_MAX_ATTEMPTS` wrong
    ones: 429 `too_many_attempts`, Retry-After being when a new code may be
    requested. Unknown email or no live code: 400 `invalid_code`.
    """
    error: DomainError | None = None
    async with db.transaction() as conn:
        row = await conn.fetchrow(ACCOUNT_BY_EMAIL_FOR_UPDATE, normalise_email(email))
        if row is not None and row["is_verified"]:
            raise Conflict("this account is already verified: log in", code="already_verified")
        otp = None if row is None else await conn.fetchrow(
            LIVE_OTP_FOR_UPDATE, row["id"], float(OTP_RESEND_SECONDS)
        )
        if row is None or otp is None:
            error = ValidationFailed(
                {"code": ["no code is pending for this email: request a new one"]},
                code="invalid_code",
            )
        elif otp["expired"]:
            error = Gone("this code has expired: request a new one", code="code_expired")
        elif otp["attempts"] >= OTP_MAX_ATTEMPTS:
            error = RateLimited(
                "too many wrong codes: request a new one",
                retry_after=otp["resend_wait"],
                code="too_many_attempts",
            )
        elif not hmac.compare_digest(otp["code_hash"], _code_hash(config, otp["id"], code)):
            attempts = await conn.fetchval(COUNT_FAILED_ATTEMPT, otp["id"])
            error = ValidationFailed(
                {"code": ["incorrect code"], "attempts_left": OTP_MAX_ATTEMPTS - attempts},
                code="invalid_code",
            )
        else:
            await conn.execute(CONSUME_OTP, otp["id"])
            account = Account.from_record(await conn.fetchrow(MARK_VERIFIED, row["id"]))
            pair = await start_session(conn, config, account.id)
    # Raised after the commit: a wrong attempt must be counted.
    if error is not None:
        raise error
    return account, pair


# -- refresh-token families ---------------------------------------------------


async def _issue_in_family(
    conn: asyncpg.Connection, config: Config, user_id: uuid.UUID, family_id: uuid.UUID
) -> TokenPair:
    jti = uuid.uuid4()
    refresh, expires = tokens.issue_refresh(config, user_id, family_id, jti)
    await conn.execute(INSERT_REFRESH_TOKEN, jti, family_id, float(expires))
    return TokenPair(tokens.issue_access(config, user_id), refresh)


async def start_session(conn: asyncpg.Connection, config: Config, user_id: uuid.UUID) -> TokenPair:
    """A new refresh-token family and its first tokens, on the caller's transaction."""
    family_id = uuid.uuid4()
    await conn.execute(INSERT_FAMILY, family_id, user_id)
    return await _issue_in_family(conn, config, user_id, family_id)


async def rotate_refresh(db: Database, config: Config, refresh: str) -> TokenPair:
    """Spend `refresh` and return the next pair of its family.

    401 `token_reused` when the token was already spent (its family is revoked
    on the spot: someone holds a copy), `token_revoked` when its family was
    revoked (logout, reuse, suspension), `token_expired`, `invalid_token`.
    403 `suspended` for a suspended user (the family is revoked too).
    """
    claims = tokens.decode(config, refresh, tokens.REFRESH)
    assert claims.family_id is not None
    error: DomainError | None = None
    async with db.transaction() as conn:
        used = await conn.fetchrow(
            USE_REFRESH_TOKEN, claims.jti, claims.family_id, claims.user_id
        )
        if used is not None and used["is_suspended"]:
            await conn.execute(REVOKE_FAMILY, claims.family_id, "suspended")
            error = Forbidden("account suspended", code="suspended")
        elif used is not None:
            pair = await _issue_in_family(conn, config, claims.user_id, claims.family_id)
        else:
            state = await conn.fetchrow(
                REFRESH_TOKEN_STATE, claims.jti, claims.family_id, claims.user_id
            )
            if state is None:
                error = Unauthorized("unknown refresh token", code="invalid_token")
            elif state["used_at"] is not None:
                await conn.execute(REVOKE_FAMILY, claims.family_id, "reuse")
                error = Unauthorized(
                    "refresh token already used: every session of this login is revoked",
                    code="token_reused",
                )
            elif state["revoked_at"] is not None:
                error = Unauthorized("session revoked: log in again", code="token_revoked")
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
