"""`unimatch serve` on a real two-node Ray cluster on this machine: one node
actor per Ray node, chat across nodes under every guarantee, a Ray node
killed mid-burst (its raylet, by PID) and brought back."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chat_clients import ChatClient, make_match
from tests.ray_nodes import RayNode, auth_env, free_ports, ray_env
from tests.test_chat_faults import _send_until_acked
from tests.waiting import eventually
from unimatch.actors.routing import pick_host

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cluster() -> Iterator[dict]:
    # Short: Ray's socket paths under it must fit AF_UNIX's 107 bytes.
    tmp_path = Path(tempfile.mkdtemp(prefix="umc", dir="/tmp"))
    token = tmp_path / "ray_token"
    ports = free_ports(2)
    nodes: list[RayNode] = []
    try:
        head_env = {**ray_env(joining=False, token_file=token),
                    "UNIMATCH_NODE_PORT": str(ports[0])}
        head = RayNode(tmp_path / "ray-head", {"unimatch_node": 1}, head_env)
        nodes.append(head)
        head.start()
        second_env = {**ray_env(joining=True, token_file=token),
                      "UNIMATCH_NODE_PORT": str(ports[1])}
        second = RayNode(tmp_path / "ray-second", {"unimatch_node": 1, "unimatch_second": 1},
                         second_env, head_address=head.address)
        nodes.append(second)
        second.start()
        yield {"head": head, "second": second, "ports": ports, "token": token, "nodes": nodes,
               "tmp": tmp_path}
    finally:
        for node in reversed(nodes):
            node.kill()
        assert all(node.processes() == [] for node in nodes)
        shutil.rmtree(tmp_path, ignore_errors=True)


def _listening_outside_loopback(pids: set[int]) -> list[str]:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    bad = []
    for line in out.splitlines():
        local = line.split()[3]
        if any(f"pid={pid}," in line for pid in pids) and not (
            local.startswith(("127.", "[::ffff:127.", "[::1]"))):
            bad.append(line)
    return bad


def _targets(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    return {g["labels"]["node"]: g["targets"][0] for g in json.loads(path.read_text())}


async def test_two_ray_nodes_serve_chat_through_a_node_loss(cluster, db, config) -> None:
    data_dir = cluster["tmp"] / "data"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "PROMETHEUS_MULTIPROC_DIR"))}
    env.update(auth_env(cluster["token"]), RAY_ADDRESS=cluster["head"].address,
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", PYTHONPATH=str(ROOT),
               DATABASE_URL=config.database_url, REDIS_URL=config.redis_url,
               REDIS_PREFIX=config.redis_prefix, JWT_SECRET=config.jwt_secret,
               RAY_NAMESPACE=f"{config.namespace}-cluster", UNIMATCH_DATA_DIR=str(data_dir),
               SCHEDULER_WORKERS="1", PG_POOL_SIZE="4", PG_POOL_OVERFLOW="2")
    serve = subprocess.Popen(  # noqa: ASYNC220 (a long-lived child, not awaited)
        [sys.executable, "-m", "unimatch.server.cli", "serve", "--port", str(cluster["ports"][0])],
        env=env, cwd=cluster["tmp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    targets = data_dir / "prometheus" / "targets.json"
    p0, p1 = cluster["ports"]
    clients: list[ChatClient] = []

    async def two_targets() -> bool:
        assert serve.poll() is None, "serve exited"
        return len(_targets(targets)) == 2

    try:
        # One node actor per Ray node, each on the port its machine's
        # environment names, both on loopback; Ray's own ports too.
        await eventually(two_targets, within=240)
        assert _targets(targets) == {"node-0": f"127.0.0.1:{p0}", "node-1": f"127.0.0.1:{p1}"} \
            or _targets(targets) == {"node-1": f"127.0.0.1:{p0}", "node-0": f"127.0.0.1:{p1}"}
        by_port = {v.rsplit(":", 1)[1]: k for k, v in _targets(targets).items()}
        second_index = int(by_port[str(p1)].split("-")[1])
        pids = {p.pid for n in cluster["nodes"] for p in n.processes()}
        assert _listening_outside_loopback(pids) == []

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
        cluster["second"].raylet().kill()
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
        back = RayNode(cluster["tmp"] / "ray-second-2", {"unimatch_node": 1},
                       cluster["second"].env, head_address=cluster["head"].address)
        cluster["nodes"].append(back)
        back.start()
        await eventually(two_targets, within=240)
        more = {f"c{i}": f"again {i}" for i in range(3)}
        await _send_until_acked(ca, match_id, more, within=60)
        assert sorted(ca.acks()[c]["seq"] for c in more) == [5 + 2 * n + 1, 5 + 2 * n + 2,
                                                             5 + 2 * n + 3]
    finally:
        for client in clients:
            await client.close()
        serve.terminate()
        try:
            serve.wait(timeout=90)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()


def test_a_cluster_node_refuses_to_start_without_jwt_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "JWT_SECRET"}
    env.update(RAY_ADDRESS="127.0.0.1:1", UNIMATCH_DATA_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    for command in ("serve", "node"):
        done = subprocess.run([sys.executable, "-m", "unimatch.server.cli", command],
                              env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 2
        assert "JWT_SECRET" in done.stderr
        assert not (tmp_path / "jwt_secret").exists()
