"""A real S3-compatible server for the tests: a one-machine Ceph cluster
(one monitor, one OSD on memstore, the RADOS gateway) in a temporary folder,
bound to 127.0.0.1 only, with one S3 user.

Debian's packages (`radosgw ceph-mon ceph-osd ceph-common`, installed by
`.ci/machine-setup`) bring it; no daemon of the machine's own is used. Each
daemon runs in the foreground as our child and is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.waiting import eventually

PACKAGES = "radosgw ceph-mon ceph-osd ceph-common"
_BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph-authtool",
             "ceph")
_START_TIMEOUT = 120.0

_CONF = """\
[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
run dir = {base}/run
log file = {base}/log/$name.log
admin socket = {base}/run/$name.asok
pid file = {base}/run/$name.pid
mon data = {base}/$name
osd data = {base}/$name
keyring = {base}/keyring
auth allow insecure global id reclaim = false
osd objectstore = memstore
memstore device bytes = 1073741824
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
osd crush chooseleaf type = 0
mon data avail warn = 1
mon data avail crit = 0
mon warn on pool no redundancy = false
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw data = {base}/rgw
"""

# name, caps: every key goes into the monitor's auth database at its mkfs.
_KEYS = (
    ("mon.", ("mon", "allow *")),
    ("client.admin", ("mon", "allow *", "osd", "allow *", "mgr", "allow *")),
    ("osd.0", ("mon", "allow profile osd", "osd", "allow *", "mgr", "allow profile osd")),
    ("client.rgw", ("mon", "allow rw", "osd", "allow rwx")),
)


def _two_free_ports() -> tuple[int, int]:
    """Two distinct loopback ports free now (both held while asking)."""
    with socket.socket() as first, socket.socket() as second:
        first.bind(("127.0.0.1", 0))
        second.bind(("127.0.0.1", 0))
        return int(first.getsockname()[1]), int(second.getsockname()[1])


def missing_binaries() -> list[str]:
    return [name for name in _BINARIES if shutil.which(name) is None]


@dataclass
class CephS3:
    base: Path
    mon_port: int
    rgw_port: int
    access_key: str = field(default_factory=lambda: "K" + secrets.token_hex(9).upper())
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(30), repr=False)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    started_in: float = 0.0

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.rgw_port}"

    @classmethod
    async def start(cls) -> CephS3:
        missing = missing_binaries()
        if missing:
            raise RuntimeError(f"the S3 tests run a real Ceph RADOS gateway: {', '.join(missing)} "
                               f"not found; apt-get install {PACKAGES} (.ci/machine-setup does)")
        server = cls(Path(tempfile.mkdtemp(prefix="unimatch-ceph-")), *_two_free_ports())
        began = time.monotonic()
        try:
            await asyncio.to_thread(server._bootstrap)
            await server._wait_for_gateway()
            await asyncio.to_thread(server._open_to_tests)
        except BaseException:
            server.stop()
            raise
        server.started_in = time.monotonic() - began
        return server

    def _run(self, *args: str) -> str:
        done = subprocess.run(args, cwd=self.base, capture_output=True, text=True, timeout=60,
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): "
                               f"{done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def _daemon(self, name: str, *args: str) -> None:
        log = open(self.base / "log" / f"{name}.out", "wb")
        self.processes.append(subprocess.Popen(
            args, cwd=self.base, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True))
        log.close()

    def _bootstrap(self) -> None:
        base, conf = self.base, str(self.base / "ceph.conf")
        fsid = str(uuid.uuid4())
        for folder in ("run", "log", "rgw", "osd.0"):
            (base / folder).mkdir()
        (base / "ceph.conf").write_text(
            _CONF.format(fsid=fsid, base=base, mon_port=self.mon_port, rgw_port=self.rgw_port))
        keyring = str(base / "keyring")
        for i, (name, caps) in enumerate(_KEYS):
            cap_args: list[str] = []
            for kind, cap in zip(caps[::2], caps[1::2], strict=True):
                cap_args += ["--cap", kind, cap]
            self._run("ceph-authtool", keyring, *(["--create-keyring"] if i == 0 else []),
                      "--gen-key", "-n", name, *cap_args)
        self._run("monmaptool", "--create", "--addv", "a", f"[v2:127.0.0.1:{self.mon_port}]",
                  "--fsid", fsid, str(base / "monmap"))
        self._run("ceph-mon", "-c", conf, "--mkfs", "-i", "a", "--monmap", str(base / "monmap"))
        self._daemon("mon", "ceph-mon", "-c", conf, "-i", "a", "-f")
        osd_uuid = str(uuid.uuid4())
        # `ceph` waits for the monitor's quorum itself (up to its timeout).
        self._run("ceph", "-c", conf, "--connect-timeout", "60", "osd", "new", osd_uuid, "0")
        self._run("ceph-osd", "-c", conf, "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)
        self._daemon("osd", "ceph-osd", "-c", conf, "-i", "0", "-f")
        self._daemon("rgw", "radosgw", "-c", conf, "-n", "client.rgw", "-f")

    def _open_to_tests(self) -> None:
        """Once the gateway answers: only on loopback, with the tests' S3 user."""
        conf = str(self.base / "ceph.conf")
        self._check_loopback_only()
        self._run("radosgw-admin", "-c", conf, "-n", "client.admin", "user", "create",
                  "--uid=unimatch-tests", "--display-name=UniMatch tests",
                  f"--access-key={self.access_key}", f"--secret-key={self.secret_key}")

    async def _wait_for_gateway(self) -> None:
        """The gateway answers once it has made its pools on the OSD."""
        try:
            await eventually(self._gateway_answers, within=_START_TIMEOUT, interval=0.1)
        except AssertionError:
            raise RuntimeError(f"the RADOS gateway did not answer within {_START_TIMEOUT:.0f} s; "
                               f"logs in {self.base / 'log'}") from None

    async def _gateway_answers(self) -> bool:
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[0]} exited ({process.returncode}); "
                                   f"logs in {self.base / 'log'}")
        return await asyncio.to_thread(self._answers)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint_url, timeout=2):
                return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def listening(self) -> list[tuple[str, int]]:
        """The (address, port) pairs the daemons listen on."""
        pids = {process.pid for process in self.processes}
        return sorted((c.laddr.ip, c.laddr.port) for c in psutil.net_connections("tcp")
                      if c.pid in pids and c.status == psutil.CONN_LISTEN)

    def _check_loopback_only(self) -> None:
        exposed = [address for address in self.listening() if address[0] != "127.0.0.1"]
        if exposed:
            raise RuntimeError(f"Ceph listens beyond loopback: {exposed}")

    def stop(self) -> None:
        """Every daemon stopped by its PID (the gateway first), the folder removed."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.processes.clear()
        shutil.rmtree(self.base, ignore_errors=True)
