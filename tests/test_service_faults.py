"""The platform under chat load while PostgreSQL restarts and Redis stops.

A real `unimatch serve` runs against a private PostgreSQL and a private
Redis (the machine's own are shared and never touched), with pairs of users
talking as real clients do (tests/fault_load.py). PostgreSQL stopped: HTTP
answers 503 `database_unavailable`, chat sends get error frames and no ack;
started again, the same processes recover and every message ever acked is
stored exactly once, seqs without a gap. Redis stopped: feeds (from
PostgreSQL), login (its limits in process memory) and chat go on; back, the
feed cache fills again. A node killed is tests/test_chat_faults.py.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests import factories
from tests.chat_clients import make_match
from tests.conftest import create_database
from tests.factories import PASSWORD, make_user
from tests.fault_load import ChatLoad
from tests.fault_servers import PrivatePostgres, PrivateRedis, ServeProcess
from tests.waiting import eventually
from unimatch.domain.config import Config
from unimatch.storage.cache import feed_key
from unimatch.storage.pg import Database

pytestmark = pytest.mark.timeout(600)

PREFIX = "faults:"
LOGIN_FAILURES = 5
PAIRS = 3
# Error frames each sender gets while PostgreSQL is down.
REFUSALS = 3


@dataclass
class Stack:
    pg: PrivatePostgres
    redis: PrivateRedis
    serve: ServeProcess
    db: Database
    config: Config  # the serve process's signing key, for test users' tokens
    http: aiohttp.ClientSession

    @property
    def api(self) -> str:
        return self.serve.url + "/api/v1"


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    root = tmp_path_factory.mktemp("faults")
    pg, redis = PrivatePostgres(), PrivateRedis()
    serve: ServeProcess | None = None
    db: Database | None = None
    try:
        await asyncio.to_thread(pg.start)
        await redis.start()
        dsn = await create_database(pg.admin_dsn(), "unimatch")
        secret = "faults-" + secrets.token_hex(32)
        serve = ServeProcess(root / "data", {
            "DATABASE_URL": dsn, "REDIS_URL": redis.url, "JWT_SECRET": secret,
            "REDIS_PREFIX": PREFIX, "RAY_NAMESPACE": f"unimatch-faults-{uuid.uuid4().hex[:8]}",
            "LIMIT_LOGIN_FAILURES": str(LOGIN_FAILURES),
            "PG_POOL_SIZE": "5", "PG_POOL_OVERFLOW": "5",
        })
        await serve.start()  # it applies the migrations
        db = await Database.connect(dsn, size=2, overflow=2)
        config = Config(database_url=dsn, redis_url=redis.url, jwt_secret=secret)
        async with aiohttp.ClientSession() as http:
            yield Stack(pg, redis, serve, db, config, http)
    finally:
        try:
            if db is not None:
                await db.close()
            if serve is not None:
                await serve.stop()
        finally:
            await redis.destroy()
            await asyncio.to_thread(pg.destroy)


async def _json(response: aiohttp.ClientResponse) -> dict:
    return await response.json(content_type=None)


async def _start_chat_load(stack: Stack) -> tuple[ChatLoad, factories.TestUser, str]:
    pairs = [await make_match(stack.db, stack.config) for _ in range(PAIRS)]
    load = ChatLoad(stack.serve.url, pairs)
    await load.start()
    a, _, match_id = pairs[0]
    return load, a, match_id


def _still_the_same_processes(stack: Stack, before: set[int]) -> None:
    assert stack.serve.proc is not None and stack.serve.proc.returncode is None
    now = {p.pid for p in stack.serve.processes() if p.is_running()}
    assert before <= now, f"restarted: {sorted(before - now)}"


# "fast": a clean restart; "immediate": as if it crashed (WAL replay on start).
@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgres_restart_answers_503_and_recovers_with_no_acked_message_lost(
    stack: Stack, mode: str
) -> None:
    loop = asyncio.get_running_loop()
    load, user, match_id = await _start_chat_load(stack)
    history = f"{stack.api}/matches/{match_id}/messages"
    try:
        await load.each_acked_more(load.ack_marks(), 5, within=60)
        processes = {p.pid for p in stack.serve.processes()}

        stopped_at = loop.time()
        await asyncio.to_thread(stack.pg.stop, mode)
        down_at = loop.time()

        async def unavailable() -> dict | None:
            async with stack.http.get(history, headers=user.auth) as r:
                body = await _json(r)
                return body if r.status == 503 else None

        body = await eventually(unavailable, within=30)
        assert body["error"] == "database_unavailable", body
        first_503 = loop.time()
        # Writes too, whether they go straight to SQL or through an actor.
        other = load.pairs[1][0]
        for method, path, payload in (
            ("POST", f"/matches/{match_id}/messages",
             {"client_msg_id": uuid.uuid4().hex, "body": "while it is down"}),
            ("POST", "/swipes", {"target_id": str(other.id), "action": "like"}),
        ):
            async with stack.http.request(method, stack.api + path, json=payload,
                                          headers=user.auth) as r:
                refused = await _json(r)
                assert (r.status, refused["error"]) == (503, "database_unavailable"), refused
        async with stack.http.get(stack.serve.url + "/readyz") as r:
            ready = await _json(r)
            assert r.status == 503 and "postgres" in ready["detail"]["failed"], ready

        # Sends while it is down: each sender gets error frames (for its
        # first tries and for its resends), never an ack.
        acked = load.acked_ids()
        marks = load.error_marks()

        async def every_sender_refused() -> bool:
            return all(len(errors) >= REFUSALS for errors in load.errors_since(marks))

        await eventually(every_sender_refused, within=30)
        assert load.acked_ids() == acked
        codes = {e["code"] for errors in load.errors_since(marks) for e in errors}
        assert codes <= {"service_unavailable", "database_unavailable", "overloaded"}, codes

        restart_at = loop.time()
        await asyncio.to_thread(stack.pg.start)
        up_at = loop.time()

        async def served() -> bool:
            async with stack.http.get(history, headers=user.auth) as r:
                return r.status == 200

        await eventually(served, within=60)
        http_ok = loop.time()
        await load.each_acked_more(load.ack_marks(), 5, within=60)
        chat_ok = loop.time()
        await load.settle(within=60)
        _still_the_same_processes(stack, processes)
        async with stack.http.get(stack.serve.url + "/readyz") as r:
            assert r.status == 200, await _json(r)
    finally:
        await load.close()
    stored = await load.assert_stored_exactly_once(stack.db)
    assert stored >= PAIRS * 2 * 10
    print(f"\npostgres fault ({mode}): stop took {down_at - stopped_at:.2f} s; first 503 "
          f"{first_503 - down_at:.2f} s after it was down; down {restart_at - down_at:.2f} s; "
          f"start took {up_at - restart_at:.2f} s; HTTP 200 {http_ok - up_at:.2f} s and "
          f"new acks {chat_ok - up_at:.2f} s after it was up; 503s for "
          f"{http_ok - stopped_at:.2f} s in all; {stored} messages stored once, codes {codes}")


async def test_redis_stopped_feeds_login_and_chat_go_on_and_caching_resumes(
    stack: Stack,
) -> None:
    loop = asyncio.get_running_loop()
    viewer = await make_user(stack.db, stack.config)
    for _ in range(5):
        await make_user(stack.db, stack.config, gender="man")
    locked = await make_user(stack.db, stack.config)
    redis = aioredis.Redis.from_url(stack.redis.url)
    discover = f"{stack.api}/discover"
    load, _, _ = await _start_chat_load(stack)

    async def feed() -> dict:
        async with stack.http.get(discover, headers=viewer.auth) as r:
            body = await _json(r)
            assert r.status == 200, body
            assert body["results"], body
            return body

    async def login(email: str, password: str) -> tuple[int, dict]:
        async with stack.http.post(f"{stack.api}/auth/login",
                                   json={"email": email, "password": password}) as r:
            return r.status, await _json(r)

    try:
        await load.each_acked_more(load.ack_marks(), 5, within=60)
        baseline_at = loop.time()
        await load.each_acked_more(load.ack_marks(), 5, within=60)
        baseline = loop.time() - baseline_at
        assert (await feed())["cached"] is False
        assert (await feed())["cached"] is True  # the cache works before the fault
        processes = {p.pid for p in stack.serve.processes()}

        stopped_at = loop.time()
        await stack.redis.stop()
        marks = load.ack_marks()

        # Feeds are computed from PostgreSQL.
        page = await feed()
        assert page["cached"] is False
        feed_ok = loop.time()
        # Login works, and its failure limit holds in process memory.
        status, body = await login(viewer.email, PASSWORD)
        assert status == 200 and body["access"], body
        statuses = [(await login(locked.email, "wrong-" + PASSWORD))[0]
                    for _ in range(LOGIN_FAILURES + 2)]
        assert statuses[:LOGIN_FAILURES] == [401] * LOGIN_FAILURES, statuses
        assert statuses[LOGIN_FAILURES:] == [429, 429], statuses
        # Chat goes on: every sender kept getting acks, and gets them about
        # as fast as before.
        await load.each_acked_more(marks, 5, within=60)
        during_at = loop.time()
        await load.each_acked_more(load.ack_marks(), 5, within=60)
        during = loop.time() - during_at
        assert during < max(3.0, 10 * baseline), (baseline, during)
        async with stack.http.get(stack.serve.url + "/readyz") as r:
            ready = await _json(r)
            assert r.status == 503 and ready["detail"]["failed"] == ["redis"], ready

        restart_at = loop.time()
        await stack.redis.start()  # empty: it keeps nothing on disk

        async def cached_again() -> bool:
            await feed()
            return bool(await redis.exists(PREFIX + feed_key(viewer.id)))

        await eventually(cached_again, within=60, interval=0.2)
        cache_ok = loop.time()
        assert (await feed())["cached"] is True
        async with stack.http.get(stack.serve.url + "/readyz") as r:
            assert r.status == 200, await _json(r)
        await load.settle(within=60)
        _still_the_same_processes(stack, processes)
    finally:
        await load.close()
        await redis.aclose()
    stored = await load.assert_stored_exactly_once(stack.db)
    print(f"\nredis fault: 5 acks per sender in {baseline:.2f} s before; "
          f"feed served {feed_ok - stopped_at:.2f} s after the stop; 5 acks "
          f"per sender in {during:.2f} s while down; down "
          f"{restart_at - stopped_at:.2f} s; feed cached again {cache_ok - restart_at:.2f} s "
          f"after the start; {stored} messages stored once")
