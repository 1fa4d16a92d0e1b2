"""The node's two seams, each with two implementations chosen at wiring:
calls to actors (in-process `LocalLink`, Ray `RayLink`) and pushes to
sockets (`LocalSockets`, `RaySockets`). Each pair passes the same tests.
Then the actor promise under load: a full mailbox answers `overloaded`, a
flooded actor does not slow another, and a batch is not held by its
slowest call.

The Ray side talks to the session platform's two nodes; the in-process side
runs an actor host (and a socket hub) in the test process itself.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import ray

from tests.actor_kinds import ids_on
from tests.chat_clients import ChatClient
from tests.factories import make_user
from tests.waiting import eventually
from unimatch.actors.base import Services
from unimatch.actors.chat import MessageCommitter
from unimatch.actors.directory import ActorDirectory
from unimatch.actors.host import ActorHost
from unimatch.actors.links import LocalLink, NodeHandles, remote_directory
from unimatch.domain.config import Config
from unimatch.domain.errors import Conflict, NotFound, RateLimited
from unimatch.http.app import create_app
from unimatch.server.sockets import LocalSockets, RaySockets, SocketLink, SocketRouter
from unimatch.storage.cache import Cache
from unimatch.storage.pg import Database
from unimatch.ws.hub import SocketHub

LOCAL_MAILBOX = 500
FLOOD_MAILBOX = 100




def _one_node_host(config: Config, db: Database, cache: Cache, mailbox: int) -> ActorHost:
    """An actor host in the test process, wired as a one-node platform."""
    host = ActorHost(config, mailbox_limit=mailbox)
    hub = SocketHub(0, config)
    host.start(Services(
        config=config, db=db, cache=cache,
        actors=ActorDirectory([LocalLink(host)]),
        sockets=SocketRouter([LocalSockets(hub)]),
        committer=MessageCommitter(db, cache),
        node_index=0,
    ))
    return host


@pytest.fixture(scope="module")
async def local_host(config: Config, db: Database, cache: Cache) -> AsyncIterator[ActorHost]:
    host = _one_node_host(config, db, cache, LOCAL_MAILBOX)
    yield host
    await host.drain()


@pytest.fixture(params=["local", "ray"])
def directory(request: pytest.FixtureRequest, config: Config) -> ActorDirectory:
    """A directory whose links are all of one kind."""
    if request.param == "local":
        return ActorDirectory([LocalLink(request.getfixturevalue("local_host"))])
    request.getfixturevalue("platform")
    return remote_directory(config.namespace, config.nodes)


# -- calls -------------------------------------------------------------------


async def test_each_actor_link_keeps_order_and_one_message_at_a_time(
    directory: ActorDirectory,
) -> None:
    actor_id = f"order-{secrets.token_hex(4)}"
    ranks = await asyncio.gather(
        *(directory.call("counter", actor_id, "record", i) for i in range(300))
    )
    assert ranks == list(range(1, 301))
    seen = await directory.call("counter", actor_id, "seen")
    assert seen == {"order": list(range(300)), "max_inside": 1}


async def test_each_actor_link_carries_domain_errors_with_their_fields(
    directory: ActorDirectory,
) -> None:
    actor_id = f"errors-{secrets.token_hex(4)}"
    with pytest.raises(RateLimited) as limited:
        await directory.call("counter", actor_id, "fail", "RateLimited", {"n": 3}, retry_after=2.5)
    assert (limited.value.detail, limited.value.retry_after) == ({"n": 3}, 2.5)
    with pytest.raises(Conflict) as conflict:
        await directory.call("counter", actor_id, "fail", "Conflict", "taken", code="taken")
    assert conflict.value.code == "taken"
    for method in ("nosuchmethod", "_secret", "on_activate"):
        with pytest.raises(NotFound):
            await directory.call("counter", actor_id, method)
    assert (await directory.call("counter", actor_id, "get"))["value"] == 0


async def test_each_actor_link_answers_overloaded_past_a_full_mailbox(
    request: pytest.FixtureRequest, directory: ActorDirectory, config: Config
) -> None:
    local = isinstance(directory.link(0), LocalLink)
    limit = LOCAL_MAILBOX if local else config.mailbox_limit
    node = 0 if local else 1
    held, opener = ids_on(node, 2, "full", directory.node_count)
    gate = f"full-{secrets.token_hex(4)}"

    async def depth() -> int:
        if local:
            stats = request.getfixturevalue("local_host").stats()
        else:
            stats = await request.getfixturevalue("platform").nodes[node].stats.remote()
        return {e["id"]: e["depth"] for e in stats["mailbox_top"]}.get(held, 0)

    holding = asyncio.ensure_future(directory.call("counter", held, "hold", gate))
    await eventually(depth)  # the held message runs
    # `limit` more wait behind it; the rest are refused at once.
    extra = 25
    queued = [
        asyncio.ensure_future(directory.call("counter", held, "record", i))
        for i in range(limit + extra)
    ]

    async def full() -> bool:
        return await depth() == limit + 1

    await eventually(full, within=60)
    await directory.call("counter", opener, "open_gate", gate)
    await asyncio.wait_for(holding, 60)
    results = await asyncio.wait_for(asyncio.gather(*queued, return_exceptions=True), 60)
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(refused) == extra
    assert all(isinstance(e, RateLimited) and e.code == "overloaded" and e.retry_after > 0
               for e in refused)
    served = [r for r in results if not isinstance(r, BaseException)]
    assert served == list(range(1, limit + 1))  # every accepted call ran, in order


# -- the actor promise under a flood -----------------------------------------


def _p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


async def test_a_flooded_actor_does_not_delay_another_actor_of_its_node(
    config: Config, db: Database, cache: Cache
) -> None:
    # A node whose mailboxes hold what a real one's would under a flood.
    local_host = _one_node_host(config, db, cache, FLOOD_MAILBOX)
    directory = ActorDirectory([LocalLink(local_host)])
    flooded, other = f"flooded-{secrets.token_hex(4)}", f"other-{secrets.token_hex(4)}"
    await directory.call("counter", other, "get")  # activated before measuring

    async def latencies(count: int, label: str) -> list[float]:
        """Calls that do what a real one does: a transaction in PostgreSQL."""
        samples = []
        for i in range(count):
            started = time.perf_counter()
            await directory.call("counter", other, "add", 1, f"{label}-{i}")
            samples.append(time.perf_counter() - started)
        return samples

    # Quiet and flooded rounds alternate, so both see the same background
    # (a shared machine's noise falls on both alike). In all, 50,000 calls
    # for one actor, 12,500 at once per round, as from a client gone wild.
    quiet: list[float] = []
    during: list[float] = []
    refused: list[RateLimited] = []
    for round_ in range(4):
        quiet += await latencies(50, f"quiet-{round_}")
        flood = [local_host.submit(("counter", flooded, "record", (i,), {}))
                 for i in range(12_500)]
        during += await latencies(50, f"flood-{round_}")
        outcomes = await asyncio.gather(*flood, return_exceptions=True)
        refused += [o for o in outcomes if isinstance(o, RateLimited)]
    await local_host.drain()
    # The mailbox stayed bounded: each round, all but what fits were refused.
    assert len(refused) >= 4 * (12_500 - FLOOD_MAILBOX)
    assert all(e.code == "overloaded" for e in refused)
    ratio = _p99(during) / _p99(quiet)
    print(f"\nflooded actor: another actor's p99 {_p99(quiet) * 1000:.2f} ms quiet, "
          f"{_p99(during) * 1000:.2f} ms during (ratio {ratio:.2f}); {len(refused)} refused")
    assert ratio < 3.0, (ratio, _p99(quiet), _p99(during))


class Prober:
    """A Ray actor that calls nodes as another node does: with `replies`, so
    a node can answer the calls of a batch as each finishes."""

    def __init__(self, namespace: str, nodes: int, name: str) -> None:
        self.directory = remote_directory(namespace, nodes, reply_to=name)

    async def replies(self, from_index: int, answers: list[Any]) -> None:
        self.directory.link(from_index).resolve(answers)

    async def slow_and_quick(self, held: str, quick: str, gate: str) -> dict[str, Any]:
        """A call that is held and a quick one to the same node, made in the
        same tick (so one batch); the quick one's answer and whether the held
        one was still running when it came."""
        holding = asyncio.ensure_future(self.directory.call("counter", held, "hold", gate))
        answer = await asyncio.wait_for(self.directory.call("counter", quick, "get"), 30)
        return {"quick": answer, "held_still_running": not holding.done()}

    async def open_and_finish(self, opener: str, gate: str) -> None:
        await self.directory.call("counter", opener, "open_gate", gate)


async def test_a_batch_is_not_held_by_its_slowest_call(platform: Any, config: Config) -> None:
    name = f"prober-{secrets.token_hex(3)}"
    prober = ray.remote(Prober).options(
        name=name, namespace=config.namespace, num_cpus=0, max_concurrency=100
    ).remote(config.namespace, config.nodes, name)
    try:
        held, quick, opener = ids_on(1, 3, "batch")
        gate = f"batch-{secrets.token_hex(4)}"
        outcome = await prober.slow_and_quick.remote(held, quick, gate)
        assert outcome["held_still_running"] is True
        assert outcome["quick"]["host"] == 1  # same node as the held call
        await prober.open_and_finish.remote(opener, gate)
    finally:
        ray.kill(prober, no_restart=True)


# -- pushes to sockets -------------------------------------------------------


@pytest.fixture(params=["local", "ray"])
async def socket_side(
    request: pytest.FixtureRequest, config: Config, aiohttp_client: Any
) -> AsyncIterator[tuple[str, list[SocketLink]]]:
    """(base URL to connect sockets to, one socket link per node there)."""
    if request.param == "local":
        host: ActorHost = request.getfixturevalue("local_host")
        hub = SocketHub(0, config)
        app = create_app(config, directory=ActorDirectory([LocalLink(host)]), hub=hub)
        client = await aiohttp_client(app)
        yield str(client.make_url("")).rstrip("/"), [LocalSockets(hub)]
        return
    platform = request.getfixturevalue("platform")
    handles = NodeHandles(config.namespace)
    yield platform.url, [RaySockets(handles.of(i)) for i in range(config.nodes)]


async def test_each_socket_link_finds_and_reaches_a_users_socket(
    socket_side: tuple[str, list[SocketLink]], db: Database, config: Config
) -> None:
    url, links = socket_side
    user = await make_user(db, config)
    client = await ChatClient.connect(url, user.token)
    try:
        router = SocketRouter(links)
        found = await router.sockets_of(str(user.id))
        assert len(found) == 1
        node, conn_id = found[0]
        frame = {"type": "notification", "notification": {"id": secrets.token_hex(4)}}
        assert await router.push(node, [(conn_id, frame), ("no-such-socket", frame)]) == [
            True, False]
        got = await client.wait_for(lambda f: f["type"] == "notification")
        assert got == frame
    finally:
        await client.close()

    async def forgotten() -> bool:  # the socket is gone from its node
        return not await SocketRouter(links).sockets_of(str(user.id))

    await eventually(forgotten, within=30)
