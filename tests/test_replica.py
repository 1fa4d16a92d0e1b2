"""Reads on a real streaming replica (DATABASE_REPLICA_URL).

The replica is made in the test from the run's own PostgreSQL server with
`pg_basebackup -R -X stream` and started with that server's own binaries on
a free loopback port; it is stopped and removed at the end. The machine's
server must accept replication from 127.0.0.1 (`make test` sets that up,
see .ci/machine-setup).
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from tests.chat_clients import make_match
from tests.conftest import dsn_for
from tests.factories import catalogue_ids, make_user
from tests.mailsink import free_port
from tests.waiting import eventually
from unimatch.domain.config import Config
from unimatch.http.app import create_app
from unimatch.http.keys import DB
from unimatch.storage import feed, profiles
from unimatch.storage.pg import Database

# Settings a hot standby must have at least as high as its primary.
_STANDBY_MINIMUMS = (
    "max_connections", "max_worker_processes", "max_wal_senders",
    "max_prepared_transactions", "max_locks_per_transaction",
)
START_TIMEOUT = 120


@dataclass
class StreamingReplica:
    """A standby of the test server, run by the owner of its data."""

    root: Path
    bindir: Path
    user: str | None  # run as this user (we are root), else as ourselves
    port: int
    options: str

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _run(self, *args: str) -> None:
        command = [*(["runuser", "-u", self.user, "--"] if self.user else []), *args]
        subprocess.run(command, check=True, capture_output=True, timeout=START_TIMEOUT)

    def start(self) -> None:
        self._run(
            str(self.bindir / "pg_ctl"), "start", "-D", str(self.data), "-w",
            "-t", str(START_TIMEOUT), "-l", str(self.root / "replica.log"), "-o", self.options,
        )

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w")

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None


def _alive(pid: int) -> bool:
    """Whether `pid` runs (an exited process not yet reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def _server_facts(admin_dsn: str) -> tuple[Path, Path, dict[str, str]]:
    """(binaries folder, data folder, the standby minimum settings) of the
    server at `admin_dsn`."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        bindir = await conn.fetchval("SELECT setting FROM pg_config WHERE name = 'BINDIR'")
        data = await conn.fetchval("SHOW data_directory")
        rows = await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name = any($1::text[])",
            list(_STANDBY_MINIMUMS),
        )
    finally:
        await conn.close()
    return Path(bindir), Path(data), {r["name"]: r["setting"] for r in rows}


@pytest.fixture
async def replica(pg_admin_dsn: str, pg_dsn: str) -> AsyncIterator[StreamingReplica]:
    """A streaming replica of the test server (which holds this run's
    database), accepting connections; stopped and removed afterwards."""
    bindir, primary_data, minimums = await _server_facts(pg_admin_dsn)
    owner = pwd.getpwuid(primary_data.stat().st_uid).pw_name
    user = owner if os.geteuid() == 0 else None
    # Under /tmp, not pytest's tmp_path: the server's user must reach it and
    # its socket path must stay short.
    root = Path(tempfile.mkdtemp(prefix="unimatch-replica-"))
    if user:
        shutil.chown(root, user)
    port = free_port()
    options = " ".join(
        [f"-c port={port}", "-c listen_addresses=127.0.0.1",
         f"-c unix_socket_directories={root}", "-c shared_buffers=16MB",
         "-c hot_standby=on", "-c logging_collector=off", "-c ssl=off",
         *(f"-c {name}={value}" for name, value in minimums.items())]
    )
    standby = StreamingReplica(root, bindir, user, port, options)
    try:
        standby._run(
            str(bindir / "pg_basebackup"), "-d", pg_admin_dsn, "-D", str(standby.data),
            "-R", "-X", "stream", "-c", "fast",
        )
        # A Debian server keeps its configuration outside the data folder:
        # give the copy files of its own (the command line sets the rest).
        for name, text in (
            ("postgresql.conf", ""),
            ("pg_ident.conf", ""),
            ("pg_hba.conf", "local all all trust\nhost all all 127.0.0.1/32 trust\n"),
        ):
            path = standby.data / name
            if name == "pg_hba.conf" or not path.exists():
                path.write_text(text)
                if user:
                    shutil.chown(path, user)
        standby.start()
        yield standby
    finally:
        pid = standby.pid
        if pid is not None and _alive(pid):
            standby.stop()
        shutil.rmtree(root, ignore_errors=True)
    if pid is not None:
        # pg_ctl returns once the pid file is gone, just before the exit.
        async def stopped() -> bool:
            return not _alive(pid)

        await eventually(stopped, within=30)


def _fallbacks() -> float:
    return sum(
        REGISTRY.get_sample_value("unimatch_db_replica_fallbacks_total", {"reason": reason}) or 0.0
        for reason in ("unreachable", "timeout", "conflict", "down")
    )


def _replica_dsn(replica: StreamingReplica, pg_dsn: str) -> str:
    database = pg_dsn.partition("?")[0].rpartition("/")[2]
    return dsn_for(f"postgresql://postgres@127.0.0.1:{replica.port}/postgres", database)


async def _insert_message(db: Database, match_id: str, sender: object, seq: int, body: str) -> None:
    await db.execute(
        """INSERT INTO messages (match_id, seq, sender_id, body, client_msg_id)
           VALUES ($1, $2, $3, $4, $5)""",
        match_id, seq, sender, body, f"replica-{seq}",
    )


async def test_history_reads_go_to_the_replica_and_fall_back_when_it_stops(
    aiohttp_client, replica: StreamingReplica, pg_dsn: str, config: Config, db: Database
) -> None:
    app = create_app(config.with_(replica_url=_replica_dsn(replica, pg_dsn)))
    client = await aiohttp_client(app)
    reads = app[DB].read()
    assert app[DB].replica is not None
    # The app's reads reach a standby.
    assert await reads.fetchval("SELECT pg_is_in_recovery()") is True

    a, _, match_id = await make_match(db, config)
    fallbacks = _fallbacks()
    await _insert_message(db, match_id, a.id, 1, "written to the primary")
    url = f"/api/v1/matches/{match_id}/messages"

    async def history_bodies() -> list[str]:
        async with client.get(url, headers=a.auth) as resp:
            assert resp.status == 200, await resp.text()
            return [m["body"] for m in (await resp.json())["messages"]]

    # The row written to the primary shows in a history page served by the
    # replica: no read fell back, so every one of them went there.
    assert await eventually(history_bodies, within=30) == ["written to the primary"]
    assert await reads.fetchval("SELECT pg_is_in_recovery()") is True
    assert _fallbacks() == fallbacks

    # The replica stops: history still answers, from the primary, and the
    # fallback is counted.
    replica.stop()
    await _insert_message(db, match_id, a.id, 2, "written while the replica is down")
    assert await history_bodies() == [
        "written to the primary", "written while the replica is down"
    ]
    assert _fallbacks() == fallbacks + 1
    assert app[DB].replica.down
    assert await reads.fetchval("SELECT pg_is_in_recovery()") is False
    assert _fallbacks() == fallbacks + 2  # straight to the primary while it rests

    # Started again, it is tried once its rest is over (`retry_after`), and
    # serves reads again.
    replica.start()

    async def served_by_replica() -> bool:
        return bool(await reads.fetchval("SELECT pg_is_in_recovery()"))

    assert await eventually(served_by_replica, within=60)
    settled = _fallbacks()
    assert await history_bodies() == [
        "written to the primary", "written while the replica is down"
    ]
    assert _fallbacks() == settled


async def test_feed_catalogue_and_profile_reads_use_the_replica(
    replica: StreamingReplica, pg_dsn: str, config: Config, db: Database
) -> None:
    assert config.database_url
    routed = await Database.connect(
        config.database_url, size=2, overflow=0, replica_dsn=_replica_dsn(replica, pg_dsn)
    )
    try:
        # Sharing every interest, the newcomer outranks other tests' users,
        # and is first among equals as the most recently active.
        interests = (await catalogue_ids(db))[1][:10]
        viewer = await make_user(db, config, interests=interests)
        newcomer = await make_user(db, config, interests=interests)
        fallbacks = _fallbacks()

        async def newcomer_in_feed() -> bool:
            ranked = await feed.compute_feed(routed, viewer.id)
            return newcomer.id in {uuid.UUID(card["user_id"]) for card in ranked}

        async def newcomer_profile() -> dict[str, Any] | None:
            return await profiles.public_profile(routed, newcomer.id, viewer.id, dt.date.today())

        # Rows written to the primary show in the feed and the public profile
        # read from the replica; no read fell back.
        assert await eventually(newcomer_in_feed, within=30)
        profile = await eventually(newcomer_profile, within=30)
        assert profile["display_name"] == newcomer.display_name
        assert {c["slug"] for c in (await profiles.catalogues(routed)).campuses}
        assert _fallbacks() == fallbacks

        # Stopped: the same reads answer from the primary, one fallback each.
        replica.stop()
        profile = await profiles.public_profile(routed, newcomer.id, viewer.id, dt.date.today())
        assert profile is not None and profile["display_name"] == newcomer.display_name
        assert await newcomer_in_feed()
        assert _fallbacks() == fallbacks + 2
    finally:
        await routed.close()
