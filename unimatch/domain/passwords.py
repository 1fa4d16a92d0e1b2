"""Password hashing (argon2id) and the password policy.

Hashing costs about 50 ms of CPU on purpose, so every function that hashes is
async and runs the work in a thread: the event loop keeps serving others.
The request handlers go through one `PasswordWork` per process, a bounded
pool (`PASSWORD_HASH_WORKERS` running, `PASSWORD_HASH_QUEUE` waiting): a
flood of logins costs at most that much argon2 work at a time, and requests
past it get 503 with Retry-After at once.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from unimatch.domain.metrics import PASSWORD_CHECKS
from unimatch.domain.workpool import BoundedPool

MIN_LENGTH = 10
# argon2 pre-hashes any length cheaply; the cap only keeps request bodies sane.
MAX_LENGTH = 256

_COMMON_PASSWORDS = Path(__file__).parent / "common_passwords.txt"

# argon2-cffi's defaults are the RFC 9106 "low memory" profile of argon2id.
_hasher = PasswordHasher()


@functools.cache
def common_passwords() -> frozenset[str]:
    """The refused passwords, lower-cased, one a line in the seed file."""
    lines = _COMMON_PASSWORDS.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip())


def password_problems(password: str, *, email: str = "", display_name: str = "") -> list[str]:
    """Why `password` is refused (empty when it is acceptable)."""
    problems: list[str] = []
    if len(password) < MIN_LENGTH:
        problems.append(f"at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        problems.append(f"at most {MAX_LENGTH} characters")
    folded = password.strip().lower()
    if folded in common_passwords():
        problems.append("too common: choose a password that is not on lists of common ones")
    personal = {email.partition("@")[0].strip().lower(), display_name.strip().lower()}
    personal.discard("")
    if folded in personal:
        problems.append("may not be your email name or display name")
    return problems


def hash_password_sync(password: str) -> str:
    PASSWORD_CHECKS.labels("hash").inc()
    return _hasher.hash(password)


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(hash_password_sync, password)


def _verify(password_hash: str, password: str) -> tuple[bool, str | None]:
    PASSWORD_CHECKS.labels("verify").inc()
    try:
        _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, None
    if _hasher.check_needs_rehash(password_hash):
        return True, _hasher.hash(password)
    return True, None


async def verify_password(password_hash: str, password: str) -> tuple[bool, str | None]:
    """(matches, a fresh hash when the stored one uses outdated parameters)."""
    return await asyncio.to_thread(_verify, password_hash, password)


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash("not the password of anyone: equalises login timing")


async def spend_verification() -> None:
    """Verify against a throwaway hash, so a login for an unknown email takes
    as long as one for a known email with a wrong password."""
    dummy = await asyncio.to_thread(_dummy_hash)
    await verify_password(dummy, "wrong password on purpose")


def _spend_sync() -> None:
    _verify(_dummy_hash(), "wrong password on purpose")


class PasswordWork:
    """Hashing and verifying through one bounded pool (see the module doc).
    Every method raises `workpool.Overloaded` when the pool is full."""

    def __init__(self, workers: int, queue: int) -> None:
        self.pool = BoundedPool("password", workers, queue)

    async def hash(self, password: str) -> str:
        return await self.pool.run(hash_password_sync, password)

    async def verify(self, password_hash: str, password: str) -> tuple[bool, str | None]:
        return await self.pool.run(_verify, password_hash, password)

    async def spend_verification(self) -> None:
        """As `spend_verification`, through the pool."""
        await self.pool.run(_spend_sync)

    def close(self) -> None:
        self.pool.close()
