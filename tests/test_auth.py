"""Signup, OTP by mail (through the job queue into a real SMTP server),
login with lockout, JWT checks and refresh-token families, through the
in-process app against the real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from email.message import EmailMessage

import jwt
import pytest
from aiohttp.test_utils import TestClient

from tests.mailsink import Inbox, SmtpServer
from unimatch.domain import tokens
from unimatch.domain.config import Config
from unimatch.domain.errors import Unauthorized
from unimatch.domain.passwords import common_passwords, password_problems
from unimatch.http.app import create_app
from unimatch.http.auth import email_problems
from unimatch.scheduler.mail import SEND_EMAIL, Mailer
from unimatch.scheduler.worker import JobRunner
from unimatch.storage import accounts
from unimatch.storage.pg import Database

PASSWORD = "mango-tree-by-the-lake"
MAIL_TIMEOUT = 30.0
ALLOWED = (".ac.ke", ".edu")


def _new_email() -> str:
    return f"s{secrets.token_hex(5)}@students.uonbi.ac.ke"


def _new_ip() -> str:
    return f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"


class Mailbox:
    """The run's SMTP inbox, seen by recipient, with the codes it received."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    def to(self, address: str) -> list[EmailMessage]:
        return self.inbox.to(address)

    async def wait_for(self, address: str, count: int = 1) -> list[EmailMessage]:
        await self.inbox.wait_for(address, within=MAIL_TIMEOUT, count=count)
        return self.to(address)

    async def code_for(self, address: str, count: int = 1) -> str:
        message = (await self.wait_for(address, count))[count - 1]
        body = message.get_body(preferencelist=("plain",))
        assert body is not None
        match = re.search(r"\b(\d{6})\b", body.get_content())
        assert match, body.get_content()
        return match.group(1)


@pytest.fixture(scope="module")
def inbox(mail: SmtpServer) -> tuple[Mailbox, int]:
    return Mailbox(mail.inbox), mail.port


@pytest.fixture(scope="module")
async def mail_runner(
    inbox: tuple[Mailbox, int], db: Database, config: Config
) -> AsyncIterator[JobRunner]:
    """The scheduler's job runner, in-process, delivering `send_email` jobs
    to the run's SMTP server (aiosmtpd)."""
    mail_config = config.with_(smtp_host="127.0.0.1", smtp_port=inbox[1])
    runner = JobRunner(
        db, mail_config, workers=2, kinds=[SEND_EMAIL],
        services={Mailer: Mailer(mail_config)}, poll_interval=0.2,
    )
    await runner.start()
    yield runner
    await runner.stop(grace=5)


@pytest.fixture
async def client(aiohttp_client, config: Config, mail_runner: JobRunner) -> TestClient:
    return await aiohttp_client(create_app(config))


async def _post(client: TestClient, path: str, body: dict, *, ip: str | None = None):
    headers = {"X-Forwarded-For": ip} if ip else None
    return await client.post(f"/api/v1{path}", json=body, headers=headers)


async def _register(
    client: TestClient, address: str | None = None, password: str = PASSWORD,
    name: str = "Wanjiku",
) -> str:
    address = address or _new_email()
    response = await _post(
        client, "/auth/register",
        {"email": address, "password": password, "display_name": name}, ip=_new_ip(),
    )
    assert response.status == 201, await response.text()
    return address


async def _verified(client: TestClient, inbox: Mailbox) -> tuple[str, dict]:
    """A registered, verified account: (email, body of the verify response)."""
    address = await _register(client)
    code = await inbox.code_for(address)
    response = await _post(client, "/auth/otp/verify", {"email": address, "code": code})
    assert response.status == 200, await response.text()
    return address, await response.json()


async def _error(response, status: int, code: str) -> dict:
    assert response.status == status, await response.text()
    body = await response.json()
    assert body["error"] == code, body
    assert body["status_code"] == status
    return body


async def _age_last_code(db: Database, address: str, seconds: int) -> None:
    """Move the account's codes into the past (the resend wait and expiry)."""
    await db.execute(
        """UPDATE email_otps SET created_at = created_at - make_interval(secs => $2),
                                 expires_at = expires_at - make_interval(secs => $2)
           WHERE user_id = (SELECT id FROM users WHERE email = $1)""",
        address, float(seconds),
    )


# -- the signup flow -------------------------------------------------------------


async def test_register_mails_a_code_that_verifies_and_returns_tokens(
    client: TestClient, inbox: tuple[Mailbox, int], db: Database
) -> None:
    address = _new_email()
    response = await _post(
        client, "/auth/register",
        {"email": address.upper(), "password": PASSWORD, "display_name": "Achieng"},
    )
    assert response.status == 201
    body = await response.json()
    assert body == {"user_id": body["user_id"], "email": address, "is_verified": False}

    code = await inbox[0].code_for(address)
    assert len(code) == 6
    response = await _post(client, "/auth/otp/verify", {"email": address, "code": code})
    assert response.status == 200
    verified = await response.json()
    assert verified["user"]["user_id"] == body["user_id"]
    assert verified["user"]["is_verified"] is True
    assert set(verified) == {"access", "refresh", "user"}

    me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {verified['access']}"})
    assert me.status == 200
    assert (await me.json())["user"]["is_verified"] is True
    # The code is stored hashed, never as typed.
    stored = await db.fetchval(
        "SELECT code_hash FROM email_otps WHERE user_id = $1", uuid.UUID(body["user_id"])
    )
    assert code not in stored

    # A used code does not work twice, and a verified account answers as an
    # unknown email does (nobody learns which addresses have accounts).
    again = await _post(client, "/auth/otp/verify", {"email": address, "code": code})
    verified_body = await _error(again, 400, "invalid_code")
    unknown = await _post(client, "/auth/otp/verify", {"email": _new_email(), "code": code})
    assert await _error(unknown, 400, "invalid_code") == verified_body


async def test_code_and_mail_job_commit_together(client: TestClient, db: Database) -> None:
    address = await _register(client)
    jobs = await db.fetchval(
        "SELECT count(*) FROM jobs WHERE kind = 'send_email' AND payload->>'to' = $1", address
    )
    assert jobs == 1
    # A refused registration leaves neither a code nor a mail behind.
    taken = await _post(
        client, "/auth/register",
        {"email": "nobody@gmail.com", "password": PASSWORD, "display_name": "X"},
    )
    assert taken.status == 400
    assert await db.fetchval(
        "SELECT count(*) FROM jobs WHERE payload->>'to' = 'nobody@gmail.com'"
    ) == 0


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("x@uon.ac.ke", True),
        ("x@students.uonbi.ac.ke", True),
        ("x@strathmore.edu", True),
        ("First.Last@UON.AC.KE", True),
        ("x@gmail.com", False),
        ("x@evil.ac.ke.com", False),
        ("x@ac.ke", False),
        ("x@edu", False),
        ("x@evilac.ke", False),
        ("x@.ac.ke", False),
        ("x@uon..ac.ke", False),
        ("@uon.ac.ke", False),
        ("x y@uon.ac.ke", False),
        ("x@y@uon.ac.ke", False),
        ("not-an-email", False),
    ],
)
def test_domain_allowlist(address: str, allowed: bool) -> None:
    assert (email_problems(address.strip().lower(), ALLOWED) == []) is allowed


def test_allowlist_entry_without_dot_admits_the_domain_and_its_subdomains() -> None:
    assert email_problems("x@strathmore.edu", ("strathmore.edu",)) == []
    assert email_problems("x@sbs.strathmore.edu", ("strathmore.edu",)) == []
    assert email_problems("x@notstrathmore.edu", ("strathmore.edu",)) != []


async def test_register_refuses_domain_outside_allowlist(client: TestClient) -> None:
    for address in ("x@gmail.com", "x@evil.ac.ke.com", "x@ac.ke"):
        response = await _post(
            client, "/auth/register",
            {"email": address, "password": PASSWORD, "display_name": "X"},
        )
        body = await _error(response, 400, "validation_failed")
        assert "email" in body["detail"]


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short1", "at least 10"),
        ("password123", "too common"),
        ("PassWord123", "too common"),
        ("QWERTYUIOP", "too common"),
        ("wanjiku.kamau", "email name or display name"),
        ("Wanjiku Kamau", "email name or display name"),
    ],
)
async def test_register_refuses_weak_passwords(
    client: TestClient, password: str, reason: str
) -> None:
    response = await _post(
        client, "/auth/register",
        {"email": "wanjiku.kamau@uon.ac.ke", "password": password,
         "display_name": "Wanjiku Kamau"},
    )
    body = await _error(response, 400, "validation_failed")
    assert any(reason in message for message in body["detail"]["password"]), body


def test_password_policy_and_list() -> None:
    assert len(common_passwords()) >= 300
    assert all(p == p.lower() for p in common_passwords())
    assert password_problems("mango-tree-by-the-lake") == []


async def test_register_validates_every_field_at_once(client: TestClient) -> None:
    response = await _post(client, "/auth/register", {"email": 5, "display_name": "x" * 51})
    body = await _error(response, 400, "validation_failed")
    assert set(body["detail"]) == {"email", "password", "display_name"}
    malformed = await client.post("/api/v1/auth/register", data=b"{nope")
    await _error(malformed, 400, "invalid_json")


async def test_taken_email_is_409_case_insensitively(
    client: TestClient, inbox: tuple[Mailbox, int]
) -> None:
    address, _ = await _verified(client, inbox[0])
    response = await _post(
        client, "/auth/register",
        {"email": address.upper(), "password": PASSWORD, "display_name": "Other"},
    )
    body = await _error(response, 409, "email_taken")
    assert "email" in body["detail"]


async def test_register_is_rate_limited_per_ip(
    aiohttp_client, config: Config, mail_runner: JobRunner
) -> None:
    client = await aiohttp_client(create_app(config.with_(limit_register_per_hour=2)))
    ip = _new_ip()
    for _ in range(2):
        response = await _post(
            client, "/auth/register",
            {"email": _new_email(), "password": PASSWORD, "display_name": "X"}, ip=ip,
        )
        assert response.status == 201
    response = await _post(
        client, "/auth/register",
        {"email": _new_email(), "password": PASSWORD, "display_name": "X"}, ip=ip,
    )
    await _error(response, 429, "rate_limited")
    assert 1 <= int(response.headers["Retry-After"]) <= 3600
    # Another network is not affected.
    other = await _post(
        client, "/auth/register",
        {"email": _new_email(), "password": PASSWORD, "display_name": "X"}, ip=_new_ip(),
    )
    assert other.status == 201


# -- codes ------------------------------------------------------------------------


async def test_wrong_codes_count_down_then_lock_the_code(
    client: TestClient, inbox: tuple[Mailbox, int]
) -> None:
    address = await _register(client)
    code = await inbox[0].code_for(address)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for left in (4, 3, 2, 1, 0):
        response = await _post(client, "/auth/otp/verify", {"email": address, "code": wrong})
        body = await _error(response, 400, "invalid_code")
        assert body["detail"]["attempts_left"] == left
        assert body["detail"]["code"]
    # Even the right code is refused now: the code is spent.
    response = await _post(client, "/auth/otp/verify", {"email": address, "code": code})
    await _error(response, 429, "too_many_attempts")
    assert 1 <= int(response.headers["Retry-After"]) <= 60


async def test_expired_code_is_410(
    client: TestClient, inbox: tuple[Mailbox, int], db: Database
) -> None:
    address = await _register(client)
    code = await inbox[0].code_for(address)
    await _age_last_code(db, address, 601)
    response = await _post(client, "/auth/otp/verify", {"email": address, "code": code})
    await _error(response, 410, "code_expired")


async def test_verify_rejects_malformed_and_unknown(client: TestClient) -> None:
    malformed = await _post(client, "/auth/otp/verify", {"email": _new_email(), "code": "12ab56"})
    body = await _error(malformed, 400, "validation_failed")
    assert "code" in body["detail"]
    unknown = await _post(client, "/auth/otp/verify", {"email": _new_email(), "code": "123456"})
    await _error(unknown, 400, "invalid_code")


async def test_resend_waits_60s_and_a_new_code_invalidates_the_old(
    client: TestClient, inbox: tuple[Mailbox, int], db: Database
) -> None:
    address = await _register(client)
    first = await inbox[0].code_for(address)
    soon = await _post(client, "/auth/otp/resend", {"email": address})
    await _error(soon, 429, "rate_limited")
    assert 1 <= int(soon.headers["Retry-After"]) <= 60

    await _age_last_code(db, address, 61)
    resent = await _post(client, "/auth/otp/resend", {"email": address})
    assert resent.status == 202
    second = await inbox[0].code_for(address, count=2)
    live = await db.fetchval(
        """SELECT count(*) FROM email_otps o JOIN users u ON u.id = o.user_id
           WHERE u.email = $1 AND o.consumed_at IS NULL AND o.invalidated_at IS NULL""",
        address,
    )
    assert live == 1
    if first != second:
        old = await _post(client, "/auth/otp/verify", {"email": address, "code": first})
        await _error(old, 400, "invalid_code")
    new = await _post(client, "/auth/otp/verify", {"email": address, "code": second})
    assert new.status == 200


async def test_resend_for_unknown_or_verified_email_is_202_and_sends_nothing(
    client: TestClient, inbox: tuple[Mailbox, int]
) -> None:
    unknown = _new_email()
    response = await _post(client, "/auth/otp/resend", {"email": unknown})
    assert response.status == 202
    address, _ = await _verified(client, inbox[0])
    response = await _post(client, "/auth/otp/resend", {"email": address})
    assert response.status == 202
    assert inbox[0].to(unknown) == []
    assert len(inbox[0].to(address)) == 1
    missing = await _post(client, "/auth/otp/resend", {})
    await _error(missing, 400, "validation_failed")


# -- login and lockout ------------------------------------------------------------


async def test_login_returns_tokens_and_refuses_bad_credentials_alike(
    client: TestClient, inbox: tuple[Mailbox, int]
) -> None:
    address, _ = await _verified(client, inbox[0])
    ok = await _post(client, "/auth/login", {"email": address.upper(), "password": PASSWORD})
    assert ok.status == 200
    body = await ok.json()
    assert set(body) == {"access", "refresh", "user"}
    assert body["user"]["email"] == address

    wrong = await _post(client, "/auth/login", {"email": address, "password": "not-it-at-all"})
    nobody = await _post(client, "/auth/login", {"email": _new_email(), "password": PASSWORD})
    wrong_body = await _error(wrong, 401, "invalid_credentials")
    nobody_body = await _error(nobody, 401, "invalid_credentials")
    assert wrong_body["detail"] == nobody_body["detail"]

    missing = await _post(client, "/auth/login", {"email": address})
    await _error(missing, 400, "validation_failed")


async def test_login_unverified_and_suspended_are_403(
    client: TestClient, inbox: tuple[Mailbox, int], db: Database
) -> None:
    pending = await _register(client)
    response = await _post(client, "/auth/login", {"email": pending, "password": PASSWORD})
    await _error(response, 403, "unverified")
    # A wrong password does not reveal that the account is unverified.
    response = await _post(client, "/auth/login", {"email": pending, "password": "x" * 12})
    await _error(response, 401, "invalid_credentials")

    address, verified = await _verified(client, inbox[0])
    await db.execute(
        "INSERT INTO suspensions (user_id, reason) VALUES ($1, 'test')",
        uuid.UUID(verified["user"]["user_id"]),
    )
    response = await _post(client, "/auth/login", {"email": address, "password": PASSWORD})
    await _error(response, 403, "suspended")


async def test_failed_logins_lock_the_account_and_ip_pair(
    client: TestClient, inbox: tuple[Mailbox, int], config: Config
) -> None:
    address, _ = await _verified(client, inbox[0])
    ip = _new_ip()
    for _ in range(config.limit_login_failures):
        response = await _post(
            client, "/auth/login", {"email": address, "password": "wrong-password!"}, ip=ip
        )
        await _error(response, 401, "invalid_credentials")
    # Locked: even the right password is not checked.
    locked = await _post(client, "/auth/login", {"email": address, "password": PASSWORD}, ip=ip)
    await _error(locked, 429, "too_many_attempts")
    retry_after = int(locked.headers["Retry-After"])
    assert 1 <= retry_after <= 15 * 60
    # The same account from another address is not locked.
    elsewhere = await _post(
        client, "/auth/login", {"email": address, "password": PASSWORD}, ip=_new_ip()
    )
    assert elsewhere.status == 200


async def test_a_successful_login_clears_the_failures(
    client: TestClient, inbox: tuple[Mailbox, int], config: Config
) -> None:
    address, _ = await _verified(client, inbox[0])
    ip = _new_ip()
    for _round in range(2):
        for _ in range(config.limit_login_failures - 1):
            response = await _post(
                client, "/auth/login", {"email": address, "password": "wrong-password!"}, ip=ip
            )
            await _error(response, 401, "invalid_credentials")
        ok = await _post(client, "/auth/login", {"email": address, "password": PASSWORD}, ip=ip)
        assert ok.status == 200


async def test_unknown_accounts_lock_out_like_real_ones(
    client: TestClient, config: Config
) -> None:
    ip, address = _new_ip(), _new_email()
    for _ in range(config.limit_login_failures):
        response = await _post(client, "/auth/login",
                               {"email": address, "password": PASSWORD}, ip=ip)
        await _error(response, 401, "invalid_credentials")
    locked = await _post(client, "/auth/login", {"email": address, "password": PASSWORD}, ip=ip)
    await _error(locked, 429, "too_many_attempts")


# -- tokens -----------------------------------------------------------------------


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_an_access_token_used_before_still_expires_on_time(
    client: TestClient, inbox: tuple[Mailbox, int], config: Config, monkeypatch
) -> None:
    _, verified = await _verified(client, inbox[0])
    user_id = uuid.UUID(verified["user"]["user_id"])
    token = tokens.issue_access(config.with_(access_ttl=120), user_id)
    response = await client.get("/api/v1/me", headers=_bearer(token))
    assert response.status == 200  # its signature is now checked and remembered

    later = time.time() + 121
    monkeypatch.setattr(tokens.time, "time", lambda: later)
    response = await client.get("/api/v1/me", headers=_bearer(token))
    await _error(response, 401, "token_expired")
    # A remembered token under another secret is not valid there either.
    with pytest.raises(Unauthorized):
        tokens.decode(config.with_(jwt_secret="x" * 40), token, tokens.ACCESS)


async def test_bad_access_tokens_are_401(
    client: TestClient, inbox: tuple[Mailbox, int], config: Config
) -> None:
    _, verified = await _verified(client, inbox[0])
    user_id = uuid.UUID(verified["user"]["user_id"])
    now = int(time.time())
    claims = {"sub": str(user_id), "type": "access", "iat": now, "exp": now + 600,
              "jti": str(uuid.uuid4())}
    cases = {
        "alg none": jwt.encode(claims, key=None, algorithm="none"),
        "bad signature": jwt.encode(claims, "another-secret-of-enough-length!", algorithm="HS256"),
        "refresh as access": verified["refresh"],
        "garbage": "not.a.token",
        "missing jti": jwt.encode({k: v for k, v in claims.items() if k != "jti"},
                                  tokens.signing_key(config), algorithm="HS256"),
        "signed with the raw secret": jwt.encode(claims, config.jwt_secret, algorithm="HS256"),
    }
    for name, token in cases.items():
        response = await client.get("/api/v1/me", headers=_bearer(token))
        assert response.status == 401, name
        assert (await response.json())["error"] in {"invalid_token", "token_expired"}, name

    expired = tokens.issue_access(config.with_(access_ttl=-60), user_id)
    response = await client.get("/api/v1/me", headers=_bearer(expired))
    await _error(response, 401, "token_expired")
    response = await client.get("/api/v1/me")
    await _error(response, 401, "unauthorized")
    # An access token is no refresh token either.
    response = await _post(client, "/auth/refresh", {"refresh": verified["access"]})
    await _error(response, 401, "invalid_token")


async def test_refresh_rotates_and_reuse_revokes_the_family(
    client: TestClient, inbox: tuple[Mailbox, int], db: Database, config: Config
) -> None:
    _, verified = await _verified(client, inbox[0])
    first = verified["refresh"]
    response = await _post(client, "/auth/refresh", {"refresh": first})
    assert response.status == 200
    rotated = await response.json()
    assert set(rotated) == {"access", "refresh"}
    assert rotated["refresh"] != first
    me = await client.get("/api/v1/me", headers=_bearer(rotated["access"]))
    assert me.status == 200

    # Past the grace of an honest retry, a used token is a stolen copy.
    await db.execute(
        "UPDATE refresh_tokens SET used_at = used_at - interval '1 minute'"
        " WHERE used_at IS NOT NULL AND family_id = $1",
        tokens.decode(config, first, tokens.REFRESH).family_id,
    )
    reused = await _post(client, "/auth/refresh", {"refresh": first})
    await _error(reused, 401, "token_reused")
    # The whole family is gone: the newer token stops working too.
    newer = await _post(client, "/auth/refresh", {"refresh": rotated["refresh"]})
    await _error(newer, 401, "token_revoked")


async def test_two_concurrent_refreshes_with_one_token_get_one_pair(
    client: TestClient, inbox: tuple[Mailbox, int]
) -> None:
    """Two tabs refreshing at once: one rotation wins, and the other, within
    the reuse grace, is handed the very same pair instead of a revocation."""
    _, verified = await _verified(client, inbox[0])
    responses = await asyncio.gather(
        *(_post(client, "/auth/refresh", {"refresh": verified["refresh"]}) for _ in range(2))
    )
    assert [r.status for r in responses] == [200, 200]
    first, second = [await r.json() for r in responses]
    assert first == second
    assert (await _post(client, "/auth/refresh", {"refresh": first["refresh"]})).status == 200


async def test_sessions_are_independent_families(
    client: TestClient, inbox: tuple[Mailbox, int]
) -> None:
    address, verified = await _verified(client, inbox[0])
    login = await _post(client, "/auth/login", {"email": address, "password": PASSWORD})
    other = (await login.json())["refresh"]
    logout = await _post(client, "/auth/logout", {"refresh": verified["refresh"]})
    assert logout.status == 204
    assert (await _post(client, "/auth/refresh", {"refresh": other})).status == 200


async def test_logout_revokes_the_family(
    client: TestClient, inbox: tuple[Mailbox, int], config: Config
) -> None:
    _, verified = await _verified(client, inbox[0])
    rotated = await (await _post(client, "/auth/refresh", {"refresh": verified["refresh"]})).json()
    # Logging out with an older token of the family ends the family too.
    response = await _post(client, "/auth/logout", {"refresh": rotated["refresh"]})
    assert response.status == 204
    assert await response.read() == b""
    again = await _post(client, "/auth/logout", {"refresh": rotated["refresh"]})
    assert again.status == 204
    refreshed = await _post(client, "/auth/refresh", {"refresh": rotated["refresh"]})
    await _error(refreshed, 401, "token_revoked")
    bad = await _post(client, "/auth/logout", {"refresh": "nonsense"})
    await _error(bad, 401, "invalid_token")
    missing = await _post(client, "/auth/logout", {})
    await _error(missing, 400, "validation_failed")


async def test_suspension_revokes_families_and_refuses_refresh(
    client: TestClient, inbox: tuple[Mailbox, int], db: Database
) -> None:
    address, verified = await _verified(client, inbox[0])
    user_id = uuid.UUID(verified["user"]["user_id"])
    second = await (await _post(client, "/auth/login",
                                {"email": address, "password": PASSWORD})).json()
    async with db.transaction() as conn:
        await conn.execute("INSERT INTO suspensions (user_id, reason) VALUES ($1, 'x')", user_id)
        assert await accounts.revoke_user_families(conn, user_id, "suspended") == 2
    for token in (verified["refresh"], second["refresh"]):
        response = await _post(client, "/auth/refresh", {"refresh": token})
        await _error(response, 401, "token_revoked")
    me = await client.get("/api/v1/me", headers=_bearer(second["access"]))
    await _error(me, 403, "suspended")


async def test_refresh_of_a_suspended_user_with_a_live_family_is_403(
    client: TestClient, inbox: tuple[Mailbox, int], db: Database
) -> None:
    _, verified = await _verified(client, inbox[0])
    await db.execute(
        "INSERT INTO suspensions (user_id, reason) VALUES ($1, 'x')",
        uuid.UUID(verified["user"]["user_id"]),
    )
    response = await _post(client, "/auth/refresh", {"refresh": verified["refresh"]})
    await _error(response, 403, "suspended")
