"""JWT access and refresh tokens (HS256).

Access tokens live 15 minutes and carry exactly `sub`, `type`, `exp`, `iat`,
`jti`. Refresh tokens add `fam`, the family they rotate within. Decoding pins
the algorithm, so `alg: none` and any other algorithm are refused, as are
expired tokens, bad signatures and the wrong `type`.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import jwt

from unimatch.domain.config import Config
from unimatch.domain.errors import Unauthorized

ALGORITHM = "HS256"
ACCESS = "access"
REFRESH = "refresh"

# Access tokens whose signature was checked, so a client's next requests skip
# the HMAC and the parse (a third of a millisecond each): stateless tokens
# stay valid until `exp`, which is checked on every use all the same.
VERIFIED_CACHE_SIZE = 4096


@dataclass(frozen=True)
class TokenClaims:
    user_id: uuid.UUID
    type: str
    jti: uuid.UUID
    issued_at: int
    expires_at: int
    family_id: uuid.UUID | None = None


def issue_access(config: Config, user_id: uuid.UUID) -> str:
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "type": ACCESS,
        "iat": now,
        "exp": now + config.access_ttl,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, config.jwt_secret, algorithm=ALGORITHM)


def issue_refresh(
    config: Config, user_id: uuid.UUID, family_id: uuid.UUID, jti: uuid.UUID
) -> tuple[str, int]:
    """A refresh token and its expiry (epoch seconds)."""
    now = int(time.time())
    expires = now + config.refresh_ttl
    claims = {
        "sub": str(user_id),
        "type": REFRESH,
        "iat": now,
        "exp": expires,
        "jti": str(jti),
        "fam": str(family_id),
    }
    return jwt.encode(claims, config.jwt_secret, algorithm=ALGORITHM), expires


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
            config.jwt_secret,
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
        family = uuid.UUID(claims["fam"]) if expected_type == REFRESH else None
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
