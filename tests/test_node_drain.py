"""A node drains gracefully: on shutdown it stops accepting new connections,
lets requests in flight finish, and closes sockets with 1001."""

from __future__ import annotations

import asyncio

import aiohttp
import ray

from tests.factories import make_user
from tests.waiting import eventually
from unimatch.domain.config import Config
from unimatch.server.node import Node
from unimatch.server.platform import free_port
from unimatch.storage.pg import Database

TIMEOUT = 60


async def _refused(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(url + "/healthz") as r:
            await r.read()
            return False
    except aiohttp.ClientConnectionError:
        return True


LOCK_WAITERS = """
SELECT EXISTS (SELECT 1 FROM pg_stat_activity
               WHERE wait_event_type = 'Lock' AND query ILIKE '%UPDATE users%'
                 AND datname = current_database())"""


async def test_drain_finishes_in_flight_requests_and_closes_sockets_1001(
    platform: object, config: Config, db: Database
) -> None:
    port = free_port()
    # A third node beside the platform's two: its calls go to their actors.
    gateway = ray.remote(Node).options(
        name="node-drain-test", namespace=config.namespace, num_cpus=0,
        max_concurrency=1000,
    ).remote(config, 9, "127.0.0.1", port, name="node-drain-test")
    url = await gateway.ready.remote()
    user = await make_user(db, config)
    try:
        async with aiohttp.ClientSession() as session, db.transaction() as lock:
            ws = await session.ws_connect(f"{url}/ws?token={user.token}")
            ready = await asyncio.wait_for(ws.receive_json(), TIMEOUT)
            assert ready["type"] == "ready"

            # Hold the user's row so the profile update below waits inside
            # its handler: a request in flight when the drain starts.
            await lock.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user.id)
            in_flight = asyncio.create_task(session.patch(
                url + "/api/v1/me/profile", json={"display_name": "Drained"},
                headers=user.auth,
            ))
            await eventually(lambda: db.fetchval(LOCK_WAITERS), within=TIMEOUT)

            draining = asyncio.ensure_future(gateway.drain_http.remote())
            closing = await asyncio.wait_for(ws.receive(), TIMEOUT)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == 1001

            await eventually(lambda: _refused(url), within=TIMEOUT)

            await lock.execute("COMMIT")
            await lock.execute("BEGIN")
            response = await asyncio.wait_for(in_flight, TIMEOUT)
            body = await response.json()
            assert response.status == 200, body
            assert body["profile"]["display_name"] == "Drained"
            await asyncio.wait_for(draining, TIMEOUT)
    finally:
        await gateway.drain.remote()
        ray.kill(gateway, no_restart=True)
