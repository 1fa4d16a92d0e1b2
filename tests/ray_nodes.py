"""Real Ray nodes started with `ray start` on this machine, for cluster tests.

Every port is chosen free and given explicitly (Ray's defaults clash between
clusters on one machine), every address is 127.0.0.1, token auth stays on,
and each node is stopped by the PIDs of its own processes: never `ray stop`,
which ends every Ray on the machine.

This module imports no Ray: a driver of the cluster (a benchmark) must have
the cluster's token in its environment before Ray is imported, since Ray
reads RAY_AUTH_MODE once, at import.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))
START_TIMEOUT = 90


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, *, contiguous: bool = False) -> list[int]:
    """`count` ports free on loopback now (consecutive when asked)."""
    for _ in range(200):
        if contiguous:
            base = random.randrange(20_000, 40_000)
            ports = list(range(base, base + count))
        else:
            ports = random.sample(range(20_000, 40_000), count)
        if all(_free(p) for p in ports):
            return ports
    raise RuntimeError("no free ports")


@dataclass
class RayNode:
    """One `ray start` (head or joining), its temp dir and environment."""

    temp_dir: Path
    resources: dict[str, float]
    env: dict[str, str]
    head_address: str | None = None  # None: this is the head
    gcs_port: int = 0
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.head_address or f"127.0.0.1:{self.gcs_port}"

    def start(self) -> None:
        names = ["node-manager-port", "object-manager-port", "metrics-export-port",
                 "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                 "runtime-env-agent-port"]
        if self.head_address is None:
            names += ["port", "ray-client-server-port", "dashboard-port"]
        picked = free_ports(len(names))
        self.ports = dict(zip(names, picked, strict=True))
        workers = free_ports(24, contiguous=True)
        # A joining node goes through tests.ray_join so it stays on loopback.
        launcher = [RAY] if self.head_address is None else [sys.executable, "-m", "tests.ray_join"]
        args = [*launcher, "start", "--node-ip-address", "127.0.0.1",
                "--temp-dir", str(self.temp_dir), "--num-cpus", "1",
                "--resources", json.dumps(self.resources),
                "--min-worker-port", str(workers[0]), "--max-worker-port", str(workers[-1]),
                "--disable-usage-stats", "--log-style", "record"]
        args += [f"--{name}={port}" for name, port in self.ports.items()]
        if self.head_address is None:
            self.gcs_port = self.ports["port"]
            args += ["--head", "--include-dashboard", "false",
                     "--dashboard-host", "127.0.0.1"]
        else:
            args += ["--address", self.head_address]
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(args, env=self.env, capture_output=True, text=True,
                                  timeout=START_TIMEOUT, cwd=self.temp_dir)
        except subprocess.TimeoutExpired as exc:
            self.kill()
            raise RuntimeError(f"ray start hung: {exc.stderr!r}"[-3000:]) from exc
        if done.returncode != 0:
            self.kill()
            raise RuntimeError(f"ray start failed: {done.stdout[-3000:]}{done.stderr[-3000:]}")

    def processes(self) -> list[psutil.Process]:
        """Every process of this node: its cmdline names its temp dir, or it
        runs in that folder (`ray start` ran there; Ray's client server, left
        to init when `ray start` exits, names neither the folder nor the
        session), or it descends from one that does (workers name only the
        session)."""
        mine: dict[int, psutil.Process] = {}
        marker = str(self.temp_dir)
        for proc in psutil.process_iter(["cmdline", "cwd"]):
            try:
                words = " ".join(proc.info["cmdline"] or []) + " "
                cwd = (proc.info["cwd"] or "").removesuffix(" (deleted)")
                if (f"{marker}/" in words or f"{marker} " in words
                        or cwd == marker or cwd.startswith(f"{marker}/")):
                    mine[proc.pid] = proc
                    for child in proc.children(recursive=True):
                        mine[child.pid] = child
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return list(mine.values())

    def raylet(self) -> psutil.Process:
        for proc in self.processes():
            try:
                if proc.name() == "raylet":
                    return proc
            except psutil.NoSuchProcess:
                continue
        raise LookupError("no raylet")

    def kill(self) -> None:
        """SIGKILL every process of this node; returns once all are gone."""
        for _ in range(5):
            procs = self.processes()
            if not procs:
                return
            for proc in procs:
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(procs, timeout=10)


def loopback_name() -> str | None:
    """A host name of this machine that resolves to 127.0.0.1 and that Ray
    does not rewrite (it turns "localhost" and 127.0.0.1 into the machine's
    external address on a joining node): how a second node on this machine
    joins the head on loopback."""
    name = socket.gethostname()
    try:
        return name if socket.gethostbyname(name) == "127.0.0.1" and name != "localhost" else None
    except OSError:
        return None


def auth_env(token_file: Path) -> dict[str, str]:
    """Token auth on, with this cluster's own token file (not ~/.ray's):
    for `ray start` on every node and for every driver."""
    if not token_file.exists():
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(secrets.token_hex(32))
        token_file.chmod(0o600)
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}


def ray_env(*, joining: bool, token_file: Path) -> dict[str, str]:
    """`ray start`'s environment: workers at normal priority; the head keeps
    Ray on loopback (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0), a joining node
    must not set it (the check refuses to join)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "PROMETHEUS_MULTIPROC_DIR"))}
    env["RAY_worker_niceness"] = "0"
    # The joining launcher is `python -m tests.ray_join`: the repository root
    # must be importable whatever the working folder (a fresh clone's venv
    # installs only the package).
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.update(auth_env(token_file))
    if not joining:
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return env


class LoopbackCluster:
    """A Ray cluster of `RayNode`s on this machine, as a cluster test and
    `bench/chat.py --cluster` run it: the head first, then joining nodes,
    each offering `resources` (one UniMatch node: `NODE_RESOURCE`) and naming
    the port its node listens on (UNIMATCH_NODE_PORT, as a machine's
    `ray start` environment would), all on loopback with a token of their
    own (made at once: `auth_env(cluster.token)`).
    `close` kills every process of every node, by PID, and removes the
    temp dir."""

    def __init__(self) -> None:
        # Short: Ray's socket paths under it must fit AF_UNIX's 107 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="umc", dir="/tmp"))
        self.token = self.root / "ray_token"
        auth_env(self.token)
        self.nodes: list[RayNode] = []

    @property
    def head(self) -> RayNode:
        return self.nodes[0]

    @property
    def address(self) -> str:
        return self.head.address

    def add(self, node_port: int, resources: dict[str, float], name: str | None = None
            ) -> RayNode:
        """Start one more Ray node (the head if none runs yet)."""
        joining = bool(self.nodes)
        env = {**ray_env(joining=joining, token_file=self.token),
               "UNIMATCH_NODE_PORT": str(node_port)}
        node = RayNode(self.root / (name or f"ray-{len(self.nodes)}"), resources, env,
                       head_address=self.address if joining else None)
        self.nodes.append(node)
        node.start()
        return node

    def driver_env(self) -> dict[str, str]:
        """What a driver (`unimatch serve`, `unimatch node`, a benchmark)
        adds to its environment to join this cluster."""
        return {**auth_env(self.token), "RAY_ADDRESS": self.address,
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

    def pids(self) -> set[int]:
        return {p.pid for node in self.nodes for p in node.processes()}

    def close(self) -> None:
        try:
            for node in reversed(self.nodes):
                node.kill()
            left = [p for node in self.nodes for p in node.processes()]
            assert left == [], f"Ray processes left: {left}"
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
