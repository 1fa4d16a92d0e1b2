"""JWT access and refresh tokens (HS256).

Access tokens live 15 minutes and carry `sub`, `type`, `exp`, `iat`, `jti`
and `fam`, the session (refresh-token family) they were issued in. Refresh
tokens carry the same. Decoding pins the algorithm, so `alg: none` and any
other algorithm are refused, as are expired tokens, bad signatures and the
wrong `type`.

Keys: `JWT_SECRET` is never used as a key itself. HKDF-SHA256 (RFC 5869,
from `cryptography`) derives one key per purpose from it: `signing_key` for
tokens, `otp_key` for the HMAC of one-time codes. A leak of one derived key
(a code hash table, say) tells nothing about the other.

A token is a function of its claims and the key, so a pair issued once can be
issued again byte for byte from stored `jti`s and `iat` (the refresh grace in
`storage.accounts`).
"""

from __future__ import annotations

import functools
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from unimatch.domain.config import Config
from unimatch.domain.errors import Unauthorized

ALGORITHM = "HS256"
ACCESS = "access"
REFRESH = "refresh"

# Access tokens whose signature was checked, so a client's next requests skip
# the HMAC and the parse (a third of a millisecond each): stateless tokens
# stay valid until `exp`, which is checked on every use all the same.
VERIFIED_CACHE_SIZE = 4096


_SALT = b"unimatch key derivation v1"


@functools.lru_cache(maxsize=16)
def derive_key(secret: str, purpose: str) -> bytes:
    """A 32-byte key for `purpose`, derived from `secret` by HKDF-SHA256."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=_SALT, info=purpose.encode()
    ).derive(secret.encode())


def signing_key(config: Config) -> bytes:
    return derive_key(config.jwt_secret, "jwt-hs256")


def otp_key(config: Config) -> bytes:
    return derive_key(config.jwt_secret, "otp-hmac")


@dataclass(frozen=True)
class TokenClaims:
    user_id: uuid.UUID
    type: str
    jti: uuid.UUID
    issued_at: int
    expires_at: int
    family_id: uuid.UUID | None = None


def issue_access(
    config: Config,
    user_id: uuid.UUID,
    family_id: uuid.UUID | None = None,
    *,
    jti: uuid.UUID | None = None,
    issued_at: int | None = None,
) -> str:
    now = int(time.time()) if issued_at is None else issued_at
    claims = {
        "sub": str(user_id),
        "type": ACCESS,
        "iat": now,
        "exp": now + config.access_ttl,
        "jti": str(jti or uuid.uuid4()),
    }
    if family_id is not None:
        claims["fam"] = str(family_id)
    return jwt.encode(claims, signing_key(config), algorithm=ALGORITHM)


def issue_refresh(
    config: Config,
    user_id: uuid.UUID,
    family_id: uuid.UUID,
    jti: uuid.UUID,
    *,
    issued_at: int | None = None,
) -> tuple[str, int]:
    """A refresh token and its expiry (epoch seconds)."""
    now = int(time.time()) if issued_at is None else issued_at
    expires = now + config.refresh_ttl
    claims = {
        "sub": str(user_id),
        "type": REFRESH,
        "iat": now,
        "exp": expires,
        "jti": str(jti),
        "fam": str(family_id),
    }
    return jwt.encode(claims, signing_key(config), algorithm=ALGORITHM), expires


_verified: OrderedDict[tuple[str, str], TokenClaims] = OrderedDict()


def decode(config: Config, token: str, expected_type: str) -> TokenClaims:
    """The claims of a valid token of `expected_type`; else `Unauthorized`
    with `token_expired` or `invalid_token`."""
    if expected_type != ACCESS:
        return _decode(config, token, expected_type)
    key = (config.jwt_secret, token)
    claims = _verified.get(key)
    if claims is None:
        claims = _decode(config, token, expected_type)
        _verified[key] = claims
        if len(_verified) > VERIFIED_CACHE_SIZE:
            _verified.popitem(last=False)
    elif time.time() >= claims.expires_at:
        del _verified[key]
        raise Unauthorized("token expired", code="token_expired")
    return claims


def _decode(config: Config, token: str, expected_type: str) -> TokenClaims:
    try:
        claims = jwt.decode(
            token,
            signing_key(config),
            algorithms=[ALGORITHM],
            options={"require": ["sub", "type", "exp", "iat", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired", code="token_expired") from None
    except jwt.PyJWTError:
        raise Unauthorized("invalid token", code="invalid_token") from None
    if claims.get("type") != expected_type:
        raise Unauthorized(f"not an {expected_type} token", code="invalid_token")
    try:
        family = (
            uuid.UUID(claims["fam"])
            if expected_type == REFRESH or "fam" in claims else None
        )
        return TokenClaims(
            user_id=uuid.UUID(claims["sub"]),
            type=claims["type"],
            jti=uuid.UUID(claims["jti"]),
            issued_at=int(claims["iat"]),
            expires_at=int(claims["exp"]),
            family_id=family,
        )
    except (KeyError, ValueError, TypeError):
        raise Unauthorized("invalid token", code="invalid_token") from None
