"""The attacks and faults of the security review, each performed against the
real server (the app on a loopback TCP port, real PostgreSQL, Redis and
SMTP), each asserting what the user sees. docs/security.md maps every threat
to its test here."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from PIL import Image
from prometheus_client import REGISTRY

from tests.factories import PASSWORD as FACTORY_PASSWORD
from tests.factories import make_user
from tests.mailsink import free_port
from tests.test_auth import (  # noqa: F401  (fixtures used by name)
    PASSWORD,
    Mailbox,
    _age_last_code,
    _error,
    _new_email,
    _new_ip,
    _post,
    _register,
    _verified,
    client,
    inbox,
    mail_runner,
)
from tests.waiting import eventually
from unimatch.domain import tokens
from unimatch.domain.config import MIN_SECRET_BYTES, Config
from unimatch.http.app import create_app
from unimatch.http.keys import LIMITER
from unimatch.scheduler import webhooks as webhook_jobs
from unimatch.scheduler.worker import JobRunner
from unimatch.storage.pg import Database
from unimatch.storage.ratelimit import Limit

API = "/api/v1"


@pytest.fixture(scope="module")
def mailbox(inbox: tuple[Mailbox, int]) -> Mailbox:
    return inbox[0]


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _login(client: TestClient, email: str, password: str, ip: str | None = None):
    return await _post(client, "/auth/login", {"email": email, "password": password}, ip=ip)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- 1. pending-registration takeover --------------------------------------------


async def test_re_registering_a_pending_email_cannot_take_it_over(
    client: TestClient, mailbox: Mailbox, db: Database
) -> None:
    victim_password, attacker_password = "victim-chose-this-one", "attacker-wants-this-1"
    address = await _register(client, password=victim_password, name="Victim")
    first = await _post(client, "/auth/otp/resend", {"email": address})
    await _error(first, 429, "rate_limited")  # within the resend wait nothing is sent

    await _age_last_code(db, address, 61)
    attack = await _post(
        client, "/auth/register",
        {"email": address, "password": attacker_password, "display_name": "Attacker"},
        ip=_new_ip(),
    )
    # Answered exactly as a first registration.
    assert attack.status == 201, await attack.text()
    body = await attack.json()
    assert body["email"] == address and body["is_verified"] is False

    # The victim uses the code in their inbox (the one the attacker triggered).
    code = await mailbox.code_for(address, count=2)
    resent = mailbox.to(address)[1].get_body(preferencelist=("plain",)).get_content()
    assert "first registration" in resent
    verified = await _post(client, "/auth/otp/verify", {"email": address, "code": code})
    assert verified.status == 200, await verified.text()
    assert (await verified.json())["user"]["display_name"] == "Victim"

    assert (await _login(client, address, victim_password)).status == 200
    await _error(await _login(client, address, attacker_password), 401, "invalid_credentials")


# -- 2. password change and reset ------------------------------------------------


async def test_password_change_needs_the_current_one_and_ends_other_sessions(
    client: TestClient, mailbox: Mailbox
) -> None:
    address, here = await _verified(client, mailbox)
    elsewhere = await (await _login(client, address, PASSWORD)).json()
    new_password = "a-brand-new-passphrase"

    wrong = await client.post(f"{API}/me/password", headers=_bearer(here["access"]),
                              json={"current": "not-my-password", "new": new_password})
    body = await _error(wrong, 400, "invalid_credentials")
    assert "current" in body["detail"]
    weak = await client.post(f"{API}/me/password", headers=_bearer(here["access"]),
                             json={"current": PASSWORD, "new": "password123"})
    assert "new" in (await _error(weak, 400, "validation_failed"))["detail"]
    anonymous = await client.post(f"{API}/me/password",
                                  json={"current": PASSWORD, "new": new_password})
    assert anonymous.status == 401

    changed = await client.post(f"{API}/me/password", headers=_bearer(here["access"]),
                                json={"current": PASSWORD, "new": new_password})
    assert changed.status == 204, await changed.text()
    # Every other session is over; this one goes on.
    ended = await _post(client, "/auth/refresh", {"refresh": elsewhere["refresh"]})
    await _error(ended, 401, "token_revoked")
    assert (await _post(client, "/auth/refresh", {"refresh": here["refresh"]})).status == 200
    await _error(await _login(client, address, PASSWORD), 401, "invalid_credentials")
    assert (await _login(client, address, new_password)).status == 200


async def test_password_reset_by_emailed_code_reveals_no_account(
    client: TestClient, mailbox: Mailbox, db: Database
) -> None:
    address, session = await _verified(client, mailbox)
    await _age_last_code(db, address, 61)  # past the one-code-a-minute rule
    unknown = _new_email()
    known_answer = await _post(client, "/auth/password/forgot", {"email": address})
    unknown_answer = await _post(client, "/auth/password/forgot", {"email": unknown})
    assert known_answer.status == unknown_answer.status == 202
    assert await known_answer.json() == await unknown_answer.json()
    code = await mailbox.code_for(address, count=2)
    assert mailbox.to(unknown) == []

    new_password = "reset-to-something-new"
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for_account = await _post(client, "/auth/password/reset",
                              {"email": address, "code": wrong, "new": new_password})
    for_nobody = await _post(client, "/auth/password/reset",
                             {"email": unknown, "code": wrong, "new": new_password})
    assert await _error(for_account, 400, "invalid_code") == \
        await _error(for_nobody, 400, "invalid_code")
    weak = await _post(client, "/auth/password/reset",
                       {"email": address, "code": code, "new": "short"})
    await _error(weak, 400, "validation_failed")

    reset = await _post(client, "/auth/password/reset",
                        {"email": address, "code": code, "new": new_password})
    assert reset.status == 204, await reset.text()
    # A reset ends every session, and only the new password logs in.
    await _error(await _post(client, "/auth/refresh", {"refresh": session["refresh"]}),
                 401, "token_revoked")
    await _error(await _login(client, address, PASSWORD), 401, "invalid_credentials")
    assert (await _login(client, address, new_password)).status == 200
    again = await _post(client, "/auth/password/reset",
                        {"email": address, "code": code, "new": "and-another-new-one"})
    await _error(again, 400, "invalid_code")


async def test_the_inbox_owner_recovers_an_address_an_attacker_pre_registered(
    client: TestClient, mailbox: Mailbox, db: Database
) -> None:
    """The attacker registers the victim's address first. The victim cannot
    change that password by registering, but a reset (which proves the inbox)
    sets theirs, verifies the account and shuts the attacker out."""
    address = await _register(client, password="attacker-registered-it")
    await _age_last_code(db, address, 61)
    forgot = await _post(client, "/auth/password/forgot", {"email": address})
    assert forgot.status == 202
    code = await mailbox.code_for(address, count=2)
    reset = await _post(client, "/auth/password/reset",
                        {"email": address, "code": code, "new": "the-real-owner-chose"})
    assert reset.status == 204
    assert (await _login(client, address, "the-real-owner-chose")).status == 200
    await _error(await _login(client, address, "attacker-registered-it"),
                 401, "invalid_credentials")


async def test_password_reset_requests_are_limited_per_network(
    aiohttp_client, config: Config, mail_runner: JobRunner
) -> None:
    client = await aiohttp_client(create_app(config.with_(limit_register_per_hour=2)))
    ip = _new_ip()
    for _ in range(2):
        assert (await _post(client, "/auth/password/forgot", {"email": _new_email()},
                            ip=ip)).status == 202
    limited = await _post(client, "/auth/password/forgot", {"email": _new_email()}, ip=ip)
    await _error(limited, 429, "rate_limited")


# -- 3. lockout that counts before it checks, and bounded hashing -----------------


async def test_parallel_wrong_passwords_get_only_the_configured_checks(
    client: TestClient, mailbox: Mailbox, config: Config, capsys
) -> None:
    address, _ = await _verified(client, mailbox)
    ip = _new_ip()
    checks_before = _sample("unimatch_password_checks_total", op="verify")
    responses = await asyncio.wait_for(asyncio.gather(*(
        _login(client, address, f"wrong-guess-number-{i}", ip=ip) for i in range(200)
    )), timeout=120)
    statuses = [r.status for r in responses]
    checked = _sample("unimatch_password_checks_total", op="verify") - checks_before
    with capsys.disabled():
        print(f"\n200 parallel wrong logins: {statuses.count(401)} answered 401, "
              f"{statuses.count(429)} answered 429, {statuses.count(503)} answered 503, "
              f"{checked:.0f} argon2 verifications")
    assert statuses.count(401) <= config.limit_login_failures
    assert statuses.count(401) + statuses.count(429) == 200
    assert checked <= config.limit_login_failures
    locked = next(r for r in responses if r.status == 429)
    assert (await locked.json())["error"] == "too_many_attempts"
    assert int(locked.headers["Retry-After"]) >= 1
    # The right password is not checked either while the pair is locked.
    await _error(await _login(client, address, PASSWORD, ip=ip), 429, "too_many_attempts")


async def test_logins_are_limited_per_account_across_addresses_and_per_address(
    aiohttp_client, config: Config, mail_runner: JobRunner, mailbox: Mailbox
) -> None:
    client = await aiohttp_client(create_app(
        config.with_(limit_login_per_account=3, limit_login_per_ip=4)
    ))
    address, _ = await _verified(client, mailbox)
    for _ in range(3):
        await _error(await _login(client, address, "wrong-password-x", ip=_new_ip()),
                     401, "invalid_credentials")
    await _error(await _login(client, address, "wrong-password-x", ip=_new_ip()),
                 429, "too_many_attempts")

    ip = _new_ip()
    for _ in range(4):
        await _error(await _login(client, _new_email(), "wrong-password-x", ip=ip),
                     401, "invalid_credentials")
    await _error(await _login(client, _new_email(), "wrong-password-x", ip=ip),
                 429, "too_many_attempts")


async def test_password_hashing_past_its_pool_is_503_with_retry_after(
    aiohttp_client, config: Config, mail_runner: JobRunner, capsys
) -> None:
    client = await aiohttp_client(create_app(
        config.with_(password_hash_workers=1, password_hash_queue=2)
    ))
    checks_before = _sample("unimatch_password_checks_total", op="verify")
    responses = await asyncio.wait_for(asyncio.gather(*(
        _login(client, _new_email(), "some-password-here", ip=_new_ip()) for _ in range(30)
    )), timeout=120)
    statuses = [r.status for r in responses]
    checked = _sample("unimatch_password_checks_total", op="verify") - checks_before
    with capsys.disabled():
        print(f"\n30 logins, hashing pool of 1 + 2 waiting: {statuses.count(401)} checked "
              f"(401), {statuses.count(503)} refused (503)")
    assert set(statuses) <= {401, 503} and statuses.count(503) > 0
    assert checked == statuses.count(401)
    busy = next(r for r in responses if r.status == 503)
    body = await busy.json()
    assert body["error"] == "overloaded" and body["status_code"] == 503
    assert int(busy.headers["Retry-After"]) >= 1


# -- 4. codes: limits, a daily cap, one answer -------------------------------------


async def test_wrong_code_unknown_email_and_verified_account_answer_alike(
    client: TestClient, mailbox: Mailbox
) -> None:
    pending = await _register(client)
    code = await mailbox.code_for(pending)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    verified, _ = await _verified(client, mailbox)
    unknown = _new_email()
    ip = _new_ip()  # off the shared loopback budget of code checks
    answers: dict[str, list[tuple[int, dict]]] = {}
    for name, address in (("pending", pending), ("verified", verified), ("unknown", unknown)):
        answers[name] = []
        for _ in range(6):
            response = await _post(client, "/auth/otp/verify",
                                   {"email": address, "code": wrong}, ip=ip)
            answers[name].append((response.status, await response.json()))
    assert answers["pending"] == answers["verified"] == answers["unknown"]
    assert [status for status, _ in answers["unknown"]] == [400] * 5 + [429]
    assert [body["detail"].get("attempts_left") for _, body in answers["unknown"][:5]] == \
        [4, 3, 2, 1, 0]


async def test_code_checks_are_limited_per_address_and_per_account(
    aiohttp_client, config: Config, mail_runner: JobRunner
) -> None:
    client = await aiohttp_client(create_app(
        config.with_(limit_otp_verify_per_ip=3, limit_otp_verify_per_account=3)
    ))
    ip = _new_ip()
    for _ in range(3):
        await _error(await _post(client, "/auth/otp/verify",
                                 {"email": _new_email(), "code": "123456"}, ip=ip),
                     400, "invalid_code")
    limited = await _post(client, "/auth/otp/verify",
                          {"email": _new_email(), "code": "123456"}, ip=ip)
    await _error(limited, 429, "too_many_attempts")

    address = _new_email()
    for _ in range(3):
        await _error(await _post(client, "/auth/password/reset",
                                 {"email": address, "code": "123456",
                                  "new": "whatever-new-pass"}, ip=_new_ip()),
                     400, "invalid_code")
    limited = await _post(client, "/auth/otp/verify",
                          {"email": address, "code": "123456"}, ip=_new_ip())
    await _error(limited, 429, "too_many_attempts")


async def test_an_account_gets_a_bounded_number_of_codes_a_day(
    aiohttp_client, config: Config, mail_runner: JobRunner, mailbox: Mailbox, db: Database
) -> None:
    client = await aiohttp_client(create_app(config.with_(limit_codes_per_day=3)))
    address = await _register(client)
    for sent in (2, 3):
        await _age_last_code(db, address, 61)
        assert (await _post(client, "/auth/otp/resend", {"email": address})).status == 202
        await mailbox.wait_for(address, count=sent)
    await _age_last_code(db, address, 61)
    capped = await _post(client, "/auth/otp/resend", {"email": address})
    await _error(capped, 429, "rate_limited")
    assert int(capped.headers["Retry-After"]) > 60
    # Password-reset requests count too, and still answer 202.
    assert (await _post(client, "/auth/password/forgot", {"email": address})).status == 202
    codes = await db.fetchval(
        "SELECT count(*) FROM email_otps o JOIN users u ON u.id = o.user_id WHERE u.email = $1",
        address,
    )
    assert codes == 3


# -- 5. rate limits while Redis is down ---------------------------------------------


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """A redis-server of this test's own on a free loopback port (never the
    machine's), stopped by the test or at the end."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(tmp_path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )

    async def answers() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    try:
        await eventually(answers, within=20)
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 20)


async def test_auth_limits_hold_in_process_while_redis_is_down(
    aiohttp_client, config: Config, db: Database, private_redis
) -> None:
    url, process = private_redis
    client = await aiohttp_client(create_app(config.with_(redis_url=url, limit_login_failures=3)))
    user = await make_user(db, config)
    ip = _new_ip()
    assert (await _login(client, user.email, FACTORY_PASSWORD, ip=ip)).status == 200

    process.terminate()
    await asyncio.wait_for(process.wait(), 20)
    local_before = _sample("unimatch_ratelimit_degraded_total", mode="local")
    for _ in range(3):
        await _error(await _login(client, user.email, "not-the-password", ip=ip),
                     401, "invalid_credentials")
    await _error(await _login(client, user.email, FACTORY_PASSWORD, ip=ip),
                 429, "too_many_attempts")
    assert _sample("unimatch_ratelimit_degraded_total", mode="local") > local_before
    # The owner elsewhere still logs in: the database, not Redis, holds accounts.
    assert (await _login(client, user.email, FACTORY_PASSWORD, ip=_new_ip())).status == 200

    # A limit that guards no credentials fails open, counted.
    open_before = _sample("unimatch_ratelimit_degraded_total", mode="open")
    limiter = client.server.app[LIMITER]
    decisions = [await limiter.hit(f"likes:{uuid.uuid4()}", Limit(1, 3600)) for _ in range(3)]
    assert all(d.allowed for d in decisions)
    assert _sample("unimatch_ratelimit_degraded_total", mode="open") == open_before + 3


# -- 13. secrets ---------------------------------------------------------------------


def test_a_short_jwt_secret_is_refused_and_a_generated_one_is_long_enough(
    tmp_path: Path,
) -> None:
    env = {"UNIMATCH_DATA_DIR": str(tmp_path)}
    with pytest.raises(ValueError, match="JWT_SECRET"):
        Config.from_env({**env, "JWT_SECRET": "s" * (MIN_SECRET_BYTES - 1)}, dotenv=False)
    assert Config.from_env({**env, "JWT_SECRET": "s" * MIN_SECRET_BYTES}, dotenv=False)
    generated = Config.from_env(env, dotenv=False).jwt_secret
    assert len(generated.encode()) >= MIN_SECRET_BYTES


def test_serve_refuses_to_start_with_a_short_jwt_secret(tmp_path: Path) -> None:
    env = {**os.environ, "JWT_SECRET": "too-short", "UNIMATCH_DATA_DIR": str(tmp_path),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(
        [sys.executable, "-m", "unimatch.server.cli", "serve", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode != 0
    assert f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes" in result.stderr
    assert "listening" not in result.stdout


async def test_tokens_and_code_hashes_use_separate_derived_keys(
    client: TestClient, mailbox: Mailbox, db: Database, config: Config
) -> None:
    jwt_key, otp_key = tokens.signing_key(config), tokens.otp_key(config)
    assert len({jwt_key, otp_key, config.jwt_secret.encode()}) == 3
    address = await _register(client)
    code = await mailbox.code_for(address)
    row = await db.fetchrow(
        "SELECT o.id, o.code_hash FROM email_otps o JOIN users u ON u.id = o.user_id"
        " WHERE u.email = $1", address,
    )
    message = f"{row['id']}:{code}".encode()
    assert row["code_hash"] == hmac.new(otp_key, message, hashlib.sha256).hexdigest()
    assert row["code_hash"] != hmac.new(config.jwt_secret.encode(), message,
                                        hashlib.sha256).hexdigest()
    # A token signed with the raw secret (or the OTP key) is no token.
    import jwt as pyjwt

    now = int(time.time())
    claims = {"sub": str(uuid.uuid4()), "type": "access", "iat": now, "exp": now + 60,
              "jti": str(uuid.uuid4())}
    for key in (config.jwt_secret.encode(), otp_key):
        forged = pyjwt.encode(claims, key, algorithm="HS256")
        await _error(await client.get(f"{API}/me", headers=_bearer(forged)),
                     401, "invalid_token")


# -- 15. refresh reuse grace ------------------------------------------------------------


async def test_a_retried_refresh_gets_the_same_pair_and_a_late_reuse_revokes(
    client: TestClient, mailbox: Mailbox, db: Database, config: Config
) -> None:
    _, session = await _verified(client, mailbox)
    old = session["refresh"]
    first = await (await _post(client, "/auth/refresh", {"refresh": old})).json()
    # The response was lost; the client sends the same token again.
    retry = await _post(client, "/auth/refresh", {"refresh": old})
    assert retry.status == 200
    assert await retry.json() == first
    assert (await client.get(f"{API}/me", headers=_bearer(first["access"]))).status == 200

    # Once the new token has been used, the old one is a copy: revoked.
    second = await (await _post(client, "/auth/refresh", {"refresh": first["refresh"]})).json()
    await _error(await _post(client, "/auth/refresh", {"refresh": old}), 401, "token_reused")
    await _error(await _post(client, "/auth/refresh", {"refresh": second["refresh"]}),
                 401, "token_revoked")

    # And past the grace, a reuse revokes even when the successor is unused.
    _, other = await _verified(client, mailbox)
    rotated = await (await _post(client, "/auth/refresh", {"refresh": other["refresh"]})).json()
    family = tokens.decode(config, other["refresh"], tokens.REFRESH).family_id
    await db.execute(
        "UPDATE refresh_tokens SET used_at = used_at - make_interval(secs => $2)"
        " WHERE family_id = $1 AND used_at IS NOT NULL",
        family, config.refresh_reuse_grace + 1,
    )
    await _error(await _post(client, "/auth/refresh", {"refresh": other["refresh"]}),
                 401, "token_reused")
    await _error(await _post(client, "/auth/refresh", {"refresh": rotated["refresh"]}),
                 401, "token_revoked")


# -- 6. the client address behind trusted proxies -------------------------------------


async def _limited_registers(
    client: TestClient, forwarded: list[str | None], *, local_addr: str = "127.0.0.1"
) -> list[int]:
    """Send one register request per `X-Forwarded-For` value from the TCP
    source `local_addr`; the body is empty, so an allowed request is a 400
    and one over the per-IP budget a 429 (the budget is spent first)."""
    statuses = []
    connector = aiohttp.TCPConnector(local_addr=(local_addr, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for value in forwarded:
            headers = {"X-Forwarded-For": value} if value is not None else {}
            async with session.post(client.make_url(f"{API}/auth/register"), json={},
                                    headers=headers) as response:
                statuses.append(response.status)
    return statuses


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    aiohttp_client, config: Config
) -> None:
    # Budgets here are tiny: keep 127.0.0.1's own bucket, which the other
    # tests' clients share, out of it (only forwarded clients and the peers
    # 127.0.0.2 and 127.0.0.3 are counted).
    client = await aiohttp_client(create_app(config.with_(
        trusted_proxies=("127.0.0.1/32", "127.0.0.3/32"), limit_register_per_hour=2,
    )))
    # 127.0.0.2 is no proxy of ours: rotating forged addresses buys nothing.
    forged = [_new_ip() for _ in range(3)]
    assert await _limited_registers(client, forged, local_addr="127.0.0.2") == [400, 400, 429]
    # From the trusted proxy, each forwarded client has its own budget...
    assert await _limited_registers(client, [_new_ip() for _ in range(3)]) == [400] * 3
    # ...and one client is one client.
    same = _new_ip()
    assert await _limited_registers(client, [same] * 3) == [400, 400, 429]
    # A header whose last entry is garbage counts the proxy that sent it.
    garbage = ["not-an-address"] * 3
    assert await _limited_registers(client, garbage, local_addr="127.0.0.3") == [400, 400, 429]


async def test_ipv6_clients_share_a_budget_per_64_and_hops_walk_from_the_right(
    aiohttp_client, config: Config
) -> None:
    client = await aiohttp_client(create_app(config.with_(limit_register_per_hour=2)))
    site, subnet = secrets.randbelow(65536), secrets.randbelow(65535)
    prefix = f"2001:db8:{site:x}:{subnet:x}"
    same_64 = [f"{prefix}::1", f"{prefix}:ffff::2", f"{prefix}:1:2:3:4"]
    assert await _limited_registers(client, same_64) == [400, 400, 429]
    # The next /64 is another subscriber.
    assert await _limited_registers(client, [f"2001:db8:{site:x}:{subnet + 1:x}::1"]) == [400]

    two_hops = await aiohttp_client(create_app(config.with_(
        limit_register_per_hour=1, trusted_proxy_hops=2,
    )))
    client_ip, cdn = _new_ip(), "127.0.0.9"
    # client -> our CDN (loopback, trusted) -> our nginx -> app
    assert await _limited_registers(two_hops, [
        f"{client_ip}, {cdn}", f"203.0.113.1, {client_ip}, {cdn}",
    ]) == [400, 429]
    # A peer of nginx that is not our CDN is the client; what it claims is ignored.
    direct = _new_ip()
    assert await _limited_registers(two_hops, [
        f"{_new_ip()}, {direct}", f"{_new_ip()}, {direct}",
    ]) == [400, 429]


# -- 10. images ---------------------------------------------------------------------------


def _flat_png(width: int, height: int) -> bytes:
    """A one-colour RGB PNG written row by row (never held decoded here)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    compressor = zlib.compressobj(9)
    row = b"\x00" + bytes((90, 160, 200)) * width
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def _jpeg(width: int, height: int) -> bytes:
    gradient = Image.linear_gradient("L").resize((width, height))
    image = Image.merge("RGB", (gradient, gradient.rotate(90), gradient))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


def _reset_peak_rss() -> None:
    """Linux: VmHWM (the peak resident size) starts again from VmRSS."""
    Path("/proc/self/clear_refs").write_text("5")


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


async def _upload_photo(client: TestClient, user, data: bytes, name: str = "p.jpg"):
    form = aiohttp.FormData()
    form.add_field("photo", data, filename=name, content_type="application/octet-stream")
    return await client.post(f"{API}/me/photos", data=form, headers=user.auth)


async def test_a_40_megapixel_png_is_refused_quickly_with_memory_bounded(
    aiohttp_client, config: Config, db: Database, capsys
) -> None:
    client = await aiohttp_client(create_app(config))
    user = await make_user(db, config)
    bomb = _flat_png(8000, 5000)
    photo = _jpeg(1600, 1200)
    baseline_started = time.perf_counter()
    accepted = await _upload_photo(client, user, photo)
    baseline = time.perf_counter() - baseline_started
    assert accepted.status == 201, await accepted.text()

    # The peak resident size of this process (the server's) starts afresh.
    _reset_peak_rss()
    before = _rss_kib("VmRSS")
    started = time.perf_counter()
    refused = await _upload_photo(client, user, bomb, name="b.png")
    elapsed = time.perf_counter() - started
    peak_growth = _rss_kib("VmHWM") - before
    with capsys.disabled():
        print(f"\n40 MP PNG of {len(bomb) / 1024:.0f} KiB: refused in {elapsed * 1000:.1f} ms "
              f"(a 1600x1200 JPEG takes {baseline * 1000:.1f} ms), peak RSS grew "
              f"{peak_growth / 1024:.1f} MiB (decoding it would take "
              f"{8000 * 5000 * 3 / 2**20:.0f} MiB)")
    body = await refused.json()
    assert refused.status == 400 and body["error"] == "image_too_large"
    assert elapsed < baseline
    assert peak_growth < 40 * 1024


async def test_a_large_jpeg_is_decoded_reduced_in_draft_mode(
    aiohttp_client, config: Config, db: Database
) -> None:
    client = await aiohttp_client(create_app(config))
    user = await make_user(db, config)
    # 24 MP: over the 12 MP decode cap, yet accepted, decoded at half size.
    response = await _upload_photo(client, user, _jpeg(6000, 4000))
    assert response.status == 201, await response.text()
    body = await response.json()
    assert (body["width"], body["height"]) == (2048, 1365)


async def test_photo_decodes_are_bounded_and_uploads_limited_per_user(
    aiohttp_client, config: Config, db: Database
) -> None:
    client = await aiohttp_client(create_app(config.with_(
        photo_decode_workers=1, photo_decode_queue=0, limit_photo_uploads_per_hour=2,
    )))
    photo = _jpeg(4000, 3000)
    users = [await make_user(db, config) for _ in range(6)]
    responses = await asyncio.wait_for(asyncio.gather(
        *(_upload_photo(client, user, photo) for user in users)
    ), timeout=120)
    statuses = sorted(r.status for r in responses)
    assert 201 in statuses and 503 in statuses and set(statuses) <= {201, 503}
    busy = next(r for r in responses if r.status == 503)
    assert (await busy.json())["error"] == "overloaded"
    assert int(busy.headers["Retry-After"]) >= 1

    small = _jpeg(200, 150)
    user = users[0]
    await _upload_photo(client, user, small)  # its second upload this hour
    limited = await _upload_photo(client, user, small)
    await _error(limited, 429, "rate_limited")


# -- 12. webhooks -------------------------------------------------------------------------


async def test_webhook_urls_that_hide_private_addresses_are_refused(
    aiohttp_client, config: Config, db: Database
) -> None:
    strict = config.with_(webhook_allow_private=False, webhook_allow_http=False,
                          webhook_ports=(80, 443))
    client = await aiohttp_client(create_app(strict))
    user = await make_user(db, config)
    refused = {
        "https://2852039166/h": "numeric",            # 169.254.169.254 as one number
        "https://127.1/h": "numeric",
        "https://0x7f.0.0.1/h": "numeric",
        "https://0177.0.0.1/h": "numeric",
        "https://0x7f000001/h": "numeric",
        "https://[64:ff9b::7f00:1]/h": "private",     # NAT64 of 127.0.0.1
        "https://[64:ff9b::a00:1]/h": "private",      # NAT64 of 10.0.0.1
        "https://[2002:a9fe:a9fe::1]/h": "private",   # 6to4 of 169.254.169.254
        "https://[::ffff:127.0.0.1]/h": "private",
        "https://example.com:8080/h": "port",
        "http://example.com/h": "https",
    }
    for url, reason in refused.items():
        response = await client.post(f"{API}/webhooks", json={"url": url, "events": ["match"]},
                                     headers=user.auth)
        body = await _error(response, 400, "validation_failed")
        assert reason in body["detail"]["url"][0], (url, body)
    for url in ("https://example.com/h", "https://example.com:443/h", "https://8.8.8.8/h",
                "https://[2002:808:808::1]/h"):
        response = await client.post(f"{API}/webhooks", json={"url": url, "events": ["match"]},
                                     headers=user.auth)
        assert response.status == 201, (url, await response.text())
    relaxed = await aiohttp_client(create_app(strict.with_(webhook_allow_http=True,
                                                           webhook_ports=(80, 443, 8080))))
    response = await relaxed.post(
        f"{API}/webhooks", json={"url": "http://example.com:8080/h", "events": ["match"]},
        headers=user.auth,
    )
    assert response.status == 201, await response.text()


@pytest.fixture
async def flooding_receiver() -> AsyncIterator[tuple[str, dict[str, int]]]:
    """A receiver that answers 200 with a gzip bomb, then streams more junk:
    up to 64 MiB in all, counting what it managed to send."""
    import gzip

    bomb = gzip.compress(bytes(32 * 2**20))
    sent = {"bytes": 0}

    async def hook(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Encoding": "gzip",
                                               "Content-Type": "application/json"})
        await response.prepare(request)
        try:
            await response.write(bomb)
            sent["bytes"] += len(bomb)
            for _ in range(64):
                await response.write(bytes(2**20))
                sent["bytes"] += 2**20
        except (ConnectionResetError, ConnectionError):
            pass
        return response

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/hook", sent
    await runner.cleanup()


async def test_a_receiver_cannot_make_a_delivery_read_a_large_or_compressed_body(
    flooding_receiver, config: Config
) -> None:
    url, sent = flooding_receiver
    policy = webhook_jobs.DestinationPolicy.from_config(config)
    answer = await asyncio.wait_for(
        webhook_jobs.post_delivery(url, b"{}", {"Content-Type": "application/json"}, policy),
        timeout=30,
    )
    assert answer.status == 200
    assert len(answer.head) <= webhook_jobs.MAX_RESPONSE_BYTES
    assert answer.head[:2] == b"\x1f\x8b"  # still compressed: nothing was inflated
    total = 32 * 2**20 // 1000 + 64 * 2**20
    assert sent["bytes"] < total


async def test_deliveries_are_signed_with_a_timestamp_receivers_can_check(
    aiohttp_client, config: Config, db: Database
) -> None:
    from tests.test_webhooks import _verify

    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        secret = secrets.token_hex(32)
        body = b'{"event":"match"}'
        signature = webhook_jobs.sign(secret, body)
        answer = await webhook_jobs.post_delivery(
            f"http://127.0.0.1:{port}/hook", body,
            {webhook_jobs.SIGNATURE_HEADER: signature},
            webhook_jobs.DestinationPolicy.from_config(config),
        )
        assert answer.status == 200
        ((headers, got),) = received
        assert got == body
        assert _verify(secret, headers, got)
        t = int(time.time())
        assert headers[webhook_jobs.SIGNATURE_HEADER].startswith(f"t={t}") or \
            headers[webhook_jobs.SIGNATURE_HEADER].startswith(f"t={t - 1}")
        # A capture replayed later carries an old timestamp: refused.
        old = {webhook_jobs.SIGNATURE_HEADER: webhook_jobs.sign(secret, body, t - 3600)}
        assert not _verify(secret, old, body)
        # And the timestamp cannot be swapped without the secret.
        forged = headers[webhook_jobs.SIGNATURE_HEADER].replace(f"t={t}", f"t={t + 1}")
        assert not _verify(secret, {webhook_jobs.SIGNATURE_HEADER: forged}, body)
    finally:
        await runner.cleanup()


# -- 14. operations endpoints -------------------------------------------------------------


async def test_metrics_are_served_only_to_allowed_tcp_peers(
    aiohttp_client, config: Config
) -> None:
    client = await aiohttp_client(create_app(config.with_(metrics_allow=("127.0.0.1/32",))))
    refused_before = _sample("unimatch_metrics_refused_total")
    for local_addr, headers, status in (
        ("127.0.0.2", {}, 404),
        ("127.0.0.2", {"X-Forwarded-For": "127.0.0.1"}, 404),
        ("127.0.0.1", {}, 200),
    ):
        connector = aiohttp.TCPConnector(local_addr=(local_addr, 0), force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session, session.get(
            client.make_url("/metrics"), headers=headers
        ) as response:
            assert response.status == status, (local_addr, headers)
            if status == 404:
                assert await response.json() == {
                    "error": "not_found", "status_code": 404, "detail": "no such resource",
                }
            else:
                assert "unimatch_http_requests_total" in await response.text()
    assert _sample("unimatch_metrics_refused_total") == refused_before + 2
