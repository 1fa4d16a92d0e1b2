"""`unimatch serve` on a real two-node Ray cluster on this machine: one node
actor per Ray node, scraped by a real Prometheus through the targets file,
chat across nodes under every guarantee, a Ray node killed mid-burst (its
raylet, by PID) and brought back, and one more node joining with
`unimatch node` and leaving on SIGTERM. One cluster and one `serve` for the
whole module, in that order."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.chat_clients import ChatClient, make_match
from tests.ray_nodes import LoopbackCluster, free_ports
from tests.test_chat_faults import _send_until_acked
from tests.waiting import eventually
from unimatch.actors.routing import pick_host
from unimatch.domain.config import Config
from unimatch.server.node import NODE_RESOURCE

ROOT = Path(__file__).resolve().parents[1]
SERVE_UP = 240


@pytest.fixture(scope="module")
def cluster() -> Iterator[LoopbackCluster]:
    ray_cluster = LoopbackCluster()
    try:
        ports = free_ports(2)
        ray_cluster.add(ports[0], {NODE_RESOURCE: 1}, "ray-head")
        ray_cluster.add(ports[1], {NODE_RESOURCE: 1}, "ray-second")
        yield ray_cluster
    finally:
        ray_cluster.close()


def _driver_env(cluster: LoopbackCluster, config: Config, data_dir: Path) -> dict[str, str]:
    """A driver's environment on a machine of the cluster (`serve`, `node`)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "PROMETHEUS_MULTIPROC_DIR"))}
    env.update(cluster.driver_env(), PYTHONPATH=str(ROOT),
               DATABASE_URL=config.database_url or "", REDIS_URL=config.redis_url or "",
               REDIS_PREFIX=config.redis_prefix, JWT_SECRET=config.jwt_secret,
               RAY_NAMESPACE=f"{config.namespace}-cluster", UNIMATCH_DATA_DIR=str(data_dir),
               SCHEDULER_WORKERS="1", PG_POOL_SIZE="4", PG_POOL_OVERFLOW="2")
    return env


def _targets(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    return {g["labels"]["node"]: g["targets"][0] for g in json.loads(path.read_text())}


@dataclass
class Served:
    """`unimatch serve` on the cluster: its process, environment, and the
    Prometheus targets file it keeps."""

    process: subprocess.Popen[bytes]
    env: dict[str, str]
    targets: Path
    ports: list[int]

    def running(self) -> None:
        assert self.process.poll() is None, "serve exited"

    async def with_targets(self, count: int, within: float = SERVE_UP) -> dict[str, str]:
        async def listed() -> dict[str, str]:
            self.running()
            found = _targets(self.targets)
            return found if len(found) == count else {}

        return await eventually(listed, within=within)

    def url_of(self, node: str) -> str:
        return f"http://{_targets(self.targets)[node]}"


@pytest.fixture(scope="module")
async def served(cluster: LoopbackCluster, config: Config) -> AsyncIterator[Served]:
    data_dir = cluster.root / "data"
    env = _driver_env(cluster, config, data_dir)
    ports = [int(node.env["UNIMATCH_NODE_PORT"]) for node in cluster.nodes]
    process = subprocess.Popen(  # noqa: ASYNC220 (a long-lived child, stopped below)
        [sys.executable, "-m", "unimatch.server.cli", "serve", "--port", str(ports[0])],
        env=env, cwd=cluster.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        served = Served(process, env, data_dir / "prometheus" / "targets.json", ports)
        # One node actor per Ray node, each on the port its machine's
        # environment names.
        found = await served.with_targets(2)
        assert sorted(found.values()) == sorted(f"127.0.0.1:{p}" for p in ports)
        yield served
    finally:
        await asyncio.to_thread(_stop, process, 90)


def _stop(process: subprocess.Popen[bytes], timeout: float) -> int:
    process.terminate()
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def _listening_outside_loopback(pids: set[int]) -> list[str]:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    bad = []
    for line in out.splitlines():
        local = line.split()[3]
        if any(f"pid={pid}," in line for pid in pids) and not (
            local.startswith(("127.", "[::ffff:127.", "[::1]"))):
            bad.append(line)
    return bad


async def _get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        response.raise_for_status()
        return await response.json()


async def _metric(url: str, name: str) -> dict[str, float]:
    """`name`'s samples on a node's /metrics: labels text -> value."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        text = await response.text()
    found = {}
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in "{ ":
            labels, _, value = line[len(name):].rpartition(" ")
            found[labels] = float(value)
    return found


async def test_prometheus_scrapes_every_node_from_the_targets_file(
    served: Served, tmp_path: Path
) -> None:
    binary = shutil.which("prometheus")
    assert binary, "the prometheus binary is missing: .ci/machine-setup installs it"
    # The unimatch-nodes job of ops/prometheus/prometheus.yml, over the file
    # the platform keeps, scraped every second.
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{
            "job_name": "unimatch-nodes",
            "metrics_path": "/metrics",
            "file_sd_configs": [{"files": [str(served.targets)], "refresh_interval": "1s"}],
        }],
    }))
    port = free_ports(1)[0]
    api = f"http://127.0.0.1:{port}/api/v1"
    log = (tmp_path / "prometheus.log").open("wb")
    prometheus = subprocess.Popen(  # noqa: ASYNC220 (a long-lived child, killed below)
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    nodes = set(_targets(served.targets))
    try:
        async def all_up() -> list[dict[str, Any]]:
            assert prometheus.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            try:
                active = (await _get_json(f"{api}/targets"))["data"]["activeTargets"]
            except aiohttp.ClientError:
                return []
            up = [t for t in active if t["health"] == "up"]
            return up if {t["labels"]["node"] for t in up} == nodes else []

        up = await eventually(all_up, within=60, interval=0.2)
        assert {t["labels"]["node"]: t["scrapeUrl"] for t in up} == {
            node: f"http://{where}/metrics" for node, where in _targets(served.targets).items()}

        async def live_nodes() -> dict[str, float]:
            query = await _get_json(f"{api}/query?query=unimatch_cluster_nodes_live")
            found = {r["metric"]["node"]: float(r["value"][1]) for r in query["data"]["result"]}
            return found if set(found) == nodes else {}

        # What every node routes to, as Prometheus scraped it: both nodes.
        assert await eventually(live_nodes, within=30, interval=0.2) == dict.fromkeys(nodes, 2.0)
    finally:
        prometheus.kill()
        prometheus.wait(timeout=30)
        log.close()


async def test_two_ray_nodes_serve_chat_through_a_node_loss(
    cluster: LoopbackCluster, served: Served, db, config
) -> None:
    p0, p1 = served.ports
    clients: list[ChatClient] = []
    try:
        # Every Ray node and every node actor on loopback only.
        by_port = {v.rsplit(":", 1)[1]: k for k, v in _targets(served.targets).items()}
        second_index = int(by_port[str(p1)].split("-")[1])
        assert _listening_outside_loopback(cluster.pids()) == []

        # Users whose sockets are on different nodes; the match lives on the
        # second Ray node's node, so its loss moves it.
        for _ in range(50):
            a, b, match_id = await make_match(db, config)
            if pick_host("match", match_id, {0, 1}) == second_index:
                break
        url0, url1 = f"http://127.0.0.1:{p0}", f"http://127.0.0.1:{p1}"
        ca = await ChatClient.connect(url0, a.token)
        cb = await ChatClient.connect(url1, b.token)
        clients += [ca, cb]
        first = {f"x{i}": f"hello {i}" for i in range(5)}
        await _send_until_acked(ca, match_id, first, within=60)
        assert sorted(ack["seq"] for ack in ca.acks().values()) == [1, 2, 3, 4, 5]
        await cb.wait_until(lambda: len(cb.of_type("message", match_id)) == 5, within=30)
        # Idempotent resend: the same ack, no new row.
        seen = len(ca.of_type("ack"))
        await ca.send_message(match_id, "hello 0", "x0")
        await ca.wait_until(lambda: len(ca.of_type("ack")) > seen, within=30)
        assert ca.of_type("ack")[-1]["seq"] == 1

        # A burst from both; the second Ray node's raylet is killed mid-way.
        n = 30
        bodies = {ca: {f"a{i}": f"from a {i}" for i in range(n)},
                  cb: {f"b{i}": f"from b {i}" for i in range(n)}}
        for client in (ca, cb):
            for cmid, body in list(bodies[client].items())[:10]:
                await client.send_message(match_id, body, cmid)
        await ca.wait_until(lambda: len(ca.acks()) >= 10, within=60)
        killed_at = time.monotonic()
        cluster.nodes[1].raylet().kill()
        await cb.wait_closed(within=60)
        cb.url = cb.url.replace(url1, url0)
        first_ack: dict[str, float] = {}

        async def recover(client: ChatClient, name: str) -> None:
            before = set(client.acks())
            await _send_until_acked(client, match_id, bodies[client], within=120)
            new = [f for f in client.of_type("ack") if f["client_msg_id"] not in before]
            first_ack[name] = time.monotonic() - killed_at if new else 0.0

        started = time.monotonic()
        await asyncio.gather(recover(ca, "a"), recover(cb, "b"))
        print(f"\nkill -> all acked {time.monotonic() - killed_at:.2f} s; "
              f"reconnect+resend took {time.monotonic() - started:.2f} s; per client {first_ack}")

        rows = await db.fetch(
            "SELECT seq, client_msg_id, id FROM messages WHERE match_id = $1 ORDER BY seq",
            uuid.UUID(match_id))
        assert [r["seq"] for r in rows] == list(range(1, 5 + 2 * n + 1))
        stored = {r["client_msg_id"]: (r["seq"], str(r["id"])) for r in rows}
        for client in (ca, cb):
            for cmid, ack in client.acks().items():
                assert stored[cmid] == (ack["seq"], ack["message_id"])
        # Sync after reconnect: b sees every seq once.
        synced = len(cb.of_type("synced"))
        await cb.send({"type": "sync", "cursors": {match_id: 0}})
        await cb.wait_until(lambda: len(cb.of_type("synced")) > synced, within=30)
        assert sorted(cb.seqs(match_id)) == list(range(1, 5 + 2 * n + 1))

        # The Ray node comes back: Ray restarts its node there, and the
        # match moves back (a new send is served, seq continues).
        cluster.add(p1, {NODE_RESOURCE: 1}, "ray-second-2")
        await served.with_targets(2)
        more = {f"c{i}": f"again {i}" for i in range(3)}
        await _send_until_acked(ca, match_id, more, within=60)
        assert sorted(ca.acks()[c]["seq"] for c in more) == [5 + 2 * n + 1, 5 + 2 * n + 2,
                                                             5 + 2 * n + 3]
    finally:
        for client in clients:
            await client.close()


async def test_unimatch_node_joins_serves_and_leaves_on_sigterm(
    cluster: LoopbackCluster, served: Served, db, config, tmp_path: Path
) -> None:
    before = await served.with_targets(2)
    port = free_ports(1)[0]
    # As on a machine of its own: its own data folder.
    env = _driver_env(cluster, config, tmp_path / "node-data")
    log_path = tmp_path / "node.log"
    log = log_path.open("wb")
    node = subprocess.Popen(  # noqa: ASYNC220 (a long-lived child, stopped below)
        [sys.executable, "-m", "unimatch.server.cli", "node", "--port", str(port)],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    clients: list[ChatClient] = []

    async def listed(count: int) -> dict[str, str]:
        found = _targets(served.targets)
        return found if len(found) == count else {}

    try:
        # It joins: the platform lists it for Prometheus, on the port given
        # (not the one its Ray node's environment names for serve's node).
        async def joined() -> dict[str, str]:
            assert node.poll() is None, log_path.read_text()[-3000:]
            return await listed(3)

        found = await eventually(joined, within=SERVE_UP)
        name = next(n for n in found if n not in before)
        assert found[name] == f"127.0.0.1:{port}"
        index = int(name.split("-")[1])
        live = {int(n.split("-")[1]) for n in found}
        others = sorted(live - {index})

        # a's socket, user actor and match live on the new node; b has a
        # socket on each other node, so each of them must route b's sends
        # to the new node: they learnt of it.
        for _ in range(300):
            a, b, match_id = await make_match(db, config)
            if pick_host("match", match_id, live) == index == pick_host("user", str(a.id), live):
                break
        else:
            raise AssertionError("no match of a user on the new node")
        new_url = f"http://127.0.0.1:{port}"
        urls = [served.url_of(f"node-{i}") for i in others]
        ca = await ChatClient.connect(new_url, a.token)
        cbs = [await ChatClient.connect(url, b.token) for url in urls]
        clients += [ca, *cbs]
        sent: dict[ChatClient, dict[str, str]] = {
            ca: {f"a{i}": f"from a {i}" for i in range(5)},
            **{cb: {f"b{j}-{i}": f"from b {j} {i}" for i in range(5)}
               for j, cb in enumerate(cbs)}}
        for client, bodies in sent.items():
            await _send_until_acked(client, match_id, bodies, within=90)
        first = 5 * (1 + len(cbs))
        assert sorted(f["seq"] for c in sent for f in c.acks().values()) == list(
            range(1, first + 1))
        for client in (ca, *cbs):
            await client.wait_until(lambda c=client: len(c.seqs(match_id)) == first, within=30)
        # The match was served on the new node itself.
        calls = await _metric(new_url, "unimatch_actor_calls_total")
        assert sum(v for k, v in calls.items() if 'kind="match"' in k) >= first

        # A burst from a (on the leaving node) and b; SIGTERM mid-way.
        n = 20
        burst: dict[ChatClient, dict[str, str]] = {
            ca: {f"A{i}": f"burst a {i}" for i in range(n)},
            cbs[0]: {f"B{i}": f"burst b {i}" for i in range(n)}}
        for client, bodies in burst.items():
            for cmid, body in list(bodies.items())[:8]:
                await client.send_message(match_id, body, cmid)
        await ca.wait_until(lambda: len(ca.acks()) >= 5 + 4, within=60)
        node.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        # It drains: a's socket closes "going away"; a reconnects to another
        # node, syncs and resends what was not acked.
        assert await ca.wait_closed(within=60) == 1001
        closed = time.monotonic() - signalled
        ca.url = ca.url.replace(new_url, urls[0])
        await asyncio.gather(*(_send_until_acked(c, match_id, bodies, within=120)
                               for c, bodies in burst.items()))
        acked = time.monotonic() - signalled
        assert await asyncio.to_thread(node.wait, 90) == 0, log_path.read_text()[-3000:]
        print(f"\nunimatch node: SIGTERM -> its socket closed {closed:.2f} s, every message "
              f"of the burst acked {acked:.2f} s, process exited "
              f"{time.monotonic() - signalled:.2f} s")
        assert await eventually(lambda: listed(2), within=30) == before

        total = first + 2 * n
        rows = await db.fetch(
            "SELECT seq, client_msg_id, id FROM messages WHERE match_id = $1 ORDER BY seq",
            uuid.UUID(match_id))
        assert [r["seq"] for r in rows] == list(range(1, total + 1))
        stored = {r["client_msg_id"]: (r["seq"], str(r["id"])) for r in rows}
        for client in (ca, *cbs):
            for cmid, ack in client.acks().items():
                assert stored[cmid] == (ack["seq"], ack["message_id"])
        # Every socket, synced from the start, sees every seq once.
        for client in (ca, *cbs):
            synced = len(client.of_type("synced"))
            await client.send({"type": "sync", "cursors": {match_id: 0}})
            await client.wait_until(lambda c=client, k=synced: len(c.of_type("synced")) > k,
                                    within=30)
            assert sorted(client.seqs(match_id)) == list(range(1, total + 1))
        # The other nodes served throughout, never restarted: b's sockets on
        # them stayed open from the first message to the last.
        assert all(not cb.closed and cb.reconnects == 0 for cb in cbs)
        assert ca.reconnects == 1
    finally:
        for client in clients:
            await client.close()
        if node.poll() is None:
            await asyncio.to_thread(_stop, node, 60)
        log.close()


def test_a_cluster_node_refuses_to_start_without_jwt_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "JWT_SECRET"}
    env.update(RAY_ADDRESS="127.0.0.1:1", UNIMATCH_DATA_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    for command in ("serve", "node"):
        done = subprocess.run([sys.executable, "-m", "unimatch.server.cli", command],
                              env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 2
        assert "JWT_SECRET" in done.stderr
        assert not (tmp_path / "jwt_secret").exists()
