"""The virtual-actor runtime against a real local Ray, PostgreSQL and Redis.

The nodes here live in a Ray namespace of their own, so they never collide
with the nodes of the whole-platform fixture in the same Ray. The test
process hosts no actors: its directory reaches both nodes over Ray.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import ray
from prometheus_client import REGISTRY

from tests.actor_kinds import SCHEMA, ids_on
from tests.waiting import eventually
from unimatch.actors.batching import TickBatcher
from unimatch.actors.directory import ActorDirectory
from unimatch.actors.links import remote_directory
from unimatch.actors.routing import pick_host
from unimatch.domain.config import Config
from unimatch.domain.errors import Conflict, NotFound, RateLimited
from unimatch.server.node import start_nodes, stop_nodes
from unimatch.server.platform import free_port
from unimatch.storage.pg import Database

SUFFIX = f"-rt-{secrets.token_hex(3)}"




async def start_test_nodes(config: Config) -> list[Any]:
    return await asyncio.to_thread(start_nodes, config, "127.0.0.1", free_port())


@pytest.fixture(scope="module")
def rt_config(config: Config) -> Config:
    return config.with_(nodes=2, namespace=config.namespace + SUFFIX)


@pytest.fixture(scope="module")
async def hosts(ray_cluster: None, rt_config: Config) -> AsyncIterator[list[Any]]:
    handles = await start_test_nodes(rt_config)
    yield handles
    await asyncio.to_thread(stop_nodes, handles)


@pytest.fixture(scope="module")
def directory(hosts: list[Any], rt_config: Config) -> ActorDirectory:
    return remote_directory(rt_config.namespace, len(hosts), retry_deadline=90.0)


async def call_on(node: Any, kind: str, actor_id: str, method: str, *args: Any) -> Any:
    """A call sent to one node on its own, in a batch of one."""
    ((ok, value),) = await node.call_batch.remote([(0, (kind, actor_id, method, args, {}))], None)
    if not ok:
        raise value
    return value


# -- routing (in-process) -----------------------------------------------------


def test_rendezvous_hashing_is_stable_and_balanced() -> None:
    ids = [f"user-{i}" for i in range(4000)]
    picks = [pick_host("user", i, 4) for i in ids]
    assert picks == [pick_host("user", i, 4) for i in ids]
    # Another interpreter (another hash seed) picks the same hosts.
    script = (
        "from unimatch.actors.routing import pick_host\n"
        "print(''.join(str(pick_host('user', f'user-{i}', 4)) for i in range(4000)))"
    )
    other = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert other.stdout.strip() == "".join(map(str, picks))
    for host in range(4):
        assert 0.2 < picks.count(host) / len(ids) < 0.3
    # The kind is part of the key.
    assert [pick_host("match", i, 4) for i in ids] != picks
    assert pick_host("user", "anyone", 1) == 0
    with pytest.raises(ValueError):
        pick_host("user", "anyone", 0)


def test_adding_a_host_moves_about_one_in_n_and_only_to_it() -> None:
    ids = [f"match-{i}" for i in range(5000)]
    before = [pick_host("match", i, 4) for i in ids]
    after = [pick_host("match", i, 5) for i in ids]
    moved = [(b, a) for b, a in zip(before, after, strict=True) if a != b]
    assert 0.15 < len(moved) / len(ids) < 0.25  # ideal 1/5
    assert all(a == 4 for _, a in moved)


# -- TickBatcher (in-process) -------------------------------------------------


async def test_batcher_sends_one_tick_as_one_ordered_batch() -> None:
    batches: list[list[int]] = []

    async def send(items: list[int]) -> list[int]:
        batches.append(list(items))
        return [i * 10 for i in items]

    batcher = TickBatcher[int, int](send)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(50)))
    assert results == [i * 10 for i in range(50)]
    assert batches == [list(range(50))]
    # A later tick is a later batch.
    assert await batcher.submit(7) == 70
    assert batches[-1] == [7]


async def test_batcher_gives_each_caller_its_own_exception() -> None:
    async def send(items: list[int]) -> list[int | BaseException]:
        return [ValueError(f"bad {i}") if i % 2 else i for i in items]

    batcher = TickBatcher[int, int](send)
    outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True)
    assert outcomes[0::2] == [0, 2, 4]
    assert [str(e) for e in outcomes[1::2]] == ["bad 1", "bad 3", "bad 5"]
    assert all(isinstance(e, ValueError) for e in outcomes[1::2])


async def test_batcher_fails_the_whole_batch_when_send_fails() -> None:
    async def broken(items: list[int]) -> list[int]:
        raise ConnectionError("host gone")

    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    for send, error in ((broken, ConnectionError), (short, RuntimeError)):
        batcher = TickBatcher[int, int](send)
        outcomes = await asyncio.gather(
            *(batcher.submit(i) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(e, error) for e in outcomes), outcomes


async def test_batcher_with_a_cap_collects_while_a_flush_is_in_flight() -> None:
    batches: list[list[str]] = []
    sent: asyncio.Queue[list[str]] = asyncio.Queue()
    release = asyncio.Event()

    async def send(items: list[str]) -> list[str]:
        batches.append(list(items))
        sent.put_nowait(list(items))
        await release.wait()
        return [s.upper() for s in items]

    batcher = TickBatcher[str, str](send, max_in_flight=1)
    first = asyncio.ensure_future(batcher.submit("a"))
    assert await asyncio.wait_for(sent.get(), 5) == ["a"]
    assert batcher.in_flight == 1
    later = [asyncio.ensure_future(batcher.submit(s)) for s in "bcd"]
    await asyncio.sleep(0)  # one turn of the loop: they run up to their wait
    more = asyncio.ensure_future(batcher.submit("e"))
    await asyncio.sleep(0)
    assert batcher.pending == 4
    assert batches == [["a"]]  # nothing else left while the first was out
    release.set()
    assert await asyncio.gather(first, *later, more) == ["A", "B", "C", "D", "E"]
    assert batches == [["a"], ["b", "c", "d", "e"]]


async def test_batcher_without_a_cap_flushes_every_tick() -> None:
    sent: asyncio.Queue[list[int]] = asyncio.Queue()
    release = asyncio.Event()

    async def send(items: list[int]) -> list[int]:
        sent.put_nowait(list(items))
        await release.wait()
        return items

    batcher = TickBatcher[int, int](send)
    first = asyncio.ensure_future(batcher.submit(1))
    assert await asyncio.wait_for(sent.get(), 5) == [1]
    second = asyncio.ensure_future(batcher.submit(2))
    # A slow batch in flight does not hold up the next tick's batch.
    assert await asyncio.wait_for(sent.get(), 5) == [2]
    assert batcher.in_flight == 2
    release.set()
    assert await asyncio.gather(first, second) == [1, 2]


# -- the runtime on Ray -------------------------------------------------------


async def test_one_actor_handles_a_thousand_concurrent_calls_one_at_a_time_in_order(
    directory: ActorDirectory,
) -> None:
    actor_id = f"serial-{secrets.token_hex(4)}"
    ranks = await asyncio.gather(
        *(directory.call("counter", actor_id, "record", i) for i in range(1000))
    )
    seen = await directory.call("counter", actor_id, "seen")
    assert seen["max_inside"] == 1  # never two messages at once
    assert seen["order"] == list(range(1000))  # arrival order = call order
    assert ranks == list(range(1, 1001))


async def test_different_actors_run_concurrently_one_actor_does_not(
    directory: ActorDirectory, hosts: list[Any]
) -> None:
    same_host = ids_on(0, 2, "par")
    other_host = ids_on(1, 1, "par")
    # An idle actor per host to look and to open gates, called on its host
    # directly: through the directory, a probe made in the same tick would
    # share a batch with the held calls and wait for them.
    probes = [ids_on(0, 1, "probe")[0], ids_on(1, 1, "probe")[0]]

    async def on_probe(host: int, method: str, gate: str) -> Any:
        return await call_on(hosts[host], "counter", probes[host], method, gate)

    gate = f"together-{secrets.token_hex(4)}"
    calls = [
        asyncio.ensure_future(directory.call("counter", i, "enter", gate))
        for i in [*same_host, *other_host]
    ]

    async def everyone_inside() -> bool:
        inside = [await on_probe(host, "arrived", gate) for host in (0, 1)]
        return {i for found in inside for i in found} == {*same_host, *other_host}

    # All three inside a message at the same moment: on one host and across.
    await eventually(everyone_inside, within=30)
    assert not any(call.done() for call in calls)
    for host in (0, 1):
        await on_probe(host, "open_gate", gate)
    await asyncio.gather(*calls)

    one = same_host[0]
    second_gate = f"alone-{secrets.token_hex(4)}"
    first = asyncio.ensure_future(directory.call("counter", one, "enter", second_gate))

    async def first_inside() -> bool:
        return one in await on_probe(0, "arrived", second_gate)

    await eventually(first_inside, within=30)
    second = asyncio.ensure_future(directory.call("counter", one, "record", 7))

    async def second_queued() -> bool:
        stats = await hosts[0].stats.remote()
        return {(e["kind"], e["id"]): e["depth"] for e in stats["mailbox_top"]}.get(
            ("counter", one)
        ) == 2

    await eventually(second_queued, within=30)  # in the mailbox behind the first
    await on_probe(0, "open_gate", second_gate)
    await asyncio.gather(first, second)
    order = (await directory.call("counter", one, "seen"))["order"]
    # Sent while the first was inside, the second began after the first ended.
    assert order[-3:] == [f"{second_gate}:in", f"{second_gate}:out", 7]


async def test_domain_errors_reach_the_caller_with_class_and_fields(
    directory: ActorDirectory,
) -> None:
    actor_id = f"errors-{secrets.token_hex(4)}"
    with pytest.raises(RateLimited) as limited:
        await directory.call("counter", actor_id, "fail", "RateLimited", {"n": 3}, retry_after=2.5)
    assert limited.value.detail == {"n": 3}
    assert limited.value.retry_after == 2.5
    assert limited.value.code == "rate_limited"
    with pytest.raises(Conflict) as conflict:
        await directory.call(
            "counter", actor_id, "fail", "Conflict", "taken", code="already_matched"
        )
    assert (conflict.value.detail, conflict.value.code) == ("taken", "already_matched")
    # The actor lives on after raising.
    assert await directory.call("counter", actor_id, "add", 2, "t") == 2


async def test_unknown_kind_or_method_is_not_found(
    directory: ActorDirectory, hosts: list[Any]
) -> None:
    actor_id = f"unknown-{secrets.token_hex(4)}"
    host = hosts[directory.node_for("counter", actor_id)]
    before = await host.stats.remote()
    for kind, method in [
        ("nosuchkind", "get"),
        ("counter", "nosuchmethod"),
        ("counter", "_secret"),
        ("counter", "on_activate"),
        ("counter", "on_passivate"),
        ("counter", "__init__"),
    ]:
        with pytest.raises(NotFound):
            await directory.call(kind, actor_id, method)
    after = await host.stats.remote()
    # Refused before activation: nothing was activated for them.
    assert after["activations_total"] == before["activations_total"]


async def test_failed_activation_fails_waiting_calls_and_is_retried_next_call(
    directory: ActorDirectory, hosts: list[Any], db: Database
) -> None:
    for statement in SCHEMA:
        await db.execute(statement)
    actor_id = f"faulty-{secrets.token_hex(4)}"
    host = hosts[directory.node_for("counter", actor_id)]
    await db.execute("INSERT INTO test_counter_faults (id) VALUES ($1)", actor_id)
    before = await host.stats.remote()
    outcomes = await asyncio.gather(
        *(directory.call("counter", actor_id, "add", 1, f"t{i}") for i in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(e, RuntimeError) and "activation refused" in str(e) for e in outcomes)
    stats = await host.stats.remote()
    assert stats["activations_total"] == before["activations_total"]
    assert stats["active"].get("counter", 0) == before["active"].get("counter", 0)

    await db.execute("DELETE FROM test_counter_faults WHERE id = $1", actor_id)
    assert await directory.call("counter", actor_id, "add", 4, "t-after") == 4
    stats = await host.stats.remote()
    assert stats["activations_total"] == before["activations_total"] + 1


async def test_stats_report_activations_and_mailbox_depths(
    directory: ActorDirectory, hosts: list[Any]
) -> None:
    blocked, opener = ids_on(1, 2, "depth")
    host = hosts[1]
    before = await host.stats.remote()
    gate = f"gate-{secrets.token_hex(4)}"
    held = asyncio.ensure_future(directory.call("counter", blocked, "hold", gate))
    queued = [asyncio.ensure_future(directory.call("counter", blocked, "get")) for _ in range(4)]

    async def blocked_depth() -> dict[str, Any] | None:
        stats = await host.stats.remote()
        top = {(e["kind"], e["id"]): e["depth"] for e in stats["mailbox_top"]}
        return stats if top.get(("counter", blocked)) == 5 else None

    stats = await eventually(blocked_depth)
    assert stats["mailbox_max"] >= 5
    assert stats["mailbox_total"] >= 5
    assert stats["active"]["counter"] >= 1
    assert stats["activations_total"] == before["activations_total"] + 1
    assert stats["node"] == 1

    await directory.call("counter", opener, "open_gate", gate)
    await asyncio.wait_for(asyncio.gather(held, *queued), 60)
    stats = await host.stats.remote()
    assert all(e["id"] != blocked for e in stats["mailbox_top"])
    assert stats["activations_total"] == before["activations_total"] + 2

    every = [await h.stats.remote() for h in hosts]
    assert [s["node"] for s in every] == [0, 1]
    assert len({s["pid"] for s in every}) == 2


async def test_lookup_by_name_finds_the_nodes(
    rt_config: Config, hosts: list[Any], directory: ActorDirectory
) -> None:
    looked_up = remote_directory(rt_config.namespace, len(hosts))
    await looked_up.check_health()
    actor_id = f"lookup-{secrets.token_hex(4)}"
    await looked_up.call("counter", actor_id, "add", 3, "t")
    assert (await directory.call("counter", actor_id, "get"))["value"] == 3


async def test_idle_actor_is_passivated_and_reactivated_with_its_state(
    ray_cluster: None, config: Config
) -> None:
    quick = config.with_(nodes=1, passivate_after=0.5, namespace=config.namespace + SUFFIX + "-p")
    handles = await start_test_nodes(quick)
    try:
        directory = remote_directory(quick.namespace, 1)
        actor_id = f"idle-{secrets.token_hex(4)}"
        assert await directory.call("counter", actor_id, "add", 5, "t1") == 5
        first = await handles[0].stats.remote()
        assert first["active"] == {"counter": 1}

        async def passivated() -> bool:
            stats = await handles[0].stats.remote()
            return stats["active"].get("counter", 0) == 0 and stats["passivations_total"] == 1

        await eventually(passivated)
        state = await directory.call("counter", actor_id, "get")
        # Reloaded from PostgreSQL, including what on_passivate wrote.
        assert state["value"] == 5
        assert state["log"] == [5]
        assert state["passivations"] == 1
        assert (await handles[0].stats.remote())["activations_total"] == 2
    finally:
        await asyncio.to_thread(stop_nodes, handles)


async def test_killed_host_comes_back_and_later_calls_succeed_with_state_intact(
    directory: ActorDirectory, hosts: list[Any]
) -> None:
    victims = ids_on(0, 2, "kill")
    survivors = ids_on(1, 1, "kill")
    old_pid = (await hosts[0].stats.remote())["pid"]
    retries_before = REGISTRY.get_sample_value("unimatch_actor_call_retries_total") or 0.0
    calls = 60
    halfway = asyncio.Event()

    async def stream(actor_id: str) -> None:
        for i in range(calls):
            value = await directory.call("counter", actor_id, "add", i + 1, f"t{i}")
            assert value == (i + 1) * (i + 2) // 2
            if i == 15:
                halfway.set()

    streams = asyncio.gather(*(stream(a) for a in [*victims, *survivors]))
    await asyncio.wait_for(halfway.wait(), 60)
    ray.kill(hosts[0], no_restart=False)
    await asyncio.wait_for(streams, 180)

    for actor_id in [*victims, *survivors]:
        state = await directory.call("counter", actor_id, "get")
        assert state["value"] == calls * (calls + 1) // 2
        assert state["log"] == list(range(1, calls + 1))  # each add once, in order
    new = await hosts[0].stats.remote()
    assert new["pid"] != old_pid
    retries = REGISTRY.get_sample_value("unimatch_actor_call_retries_total") or 0.0
    assert retries > retries_before
