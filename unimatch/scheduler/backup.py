"""The daily database dump: `pg_dump --format=custom` into the backup folder,
keeping the `BACKUP_KEEP` newest dumps.

A dump is written to `unimatch-<date>.dump.partial` and renamed when pg_dump
has exited 0, so the folder only ever holds whole dumps; a retry on the same
day rewrites the same file. Restoring one is `pg_restore` (docs/operations.md).

pg_dump must be at least as new as the server. The embedded PostgreSQL's own
binaries (the pgserver package, PostgreSQL 16) and those on PATH are both
candidates; the newest major version wins unless `PG_BIN_DIR` names a folder.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from unimatch.domain.config import Config
from unimatch.scheduler.handlers import JobContext, register
from unimatch.scheduler.periodic import BACKUP_DATABASE, period_date, prune_backups

log = logging.getLogger("unimatch.backup")

DUMP_PREFIX = "unimatch-"
DUMP_SUFFIX = ".dump"
_VERSION = re.compile(r"(\d+)(?:\.(\d+))?")


class BackupError(RuntimeError):
    """pg_dump or pg_restore is missing or failed (its stderr is the message)."""


def backup_dir(config: Config) -> Path:
    return config.data_dir / "backups"


def dump_path(config: Config, day: str) -> Path:
    return backup_dir(config) / f"{DUMP_PREFIX}{day}{DUMP_SUFFIX}"


def _candidates(tool: str) -> list[Path]:
    found = []
    try:
        import pgserver

        bundled = Path(pgserver.__file__).parent / "pginstall" / "bin" / tool
        if bundled.exists():
            found.append(bundled)
    except ImportError:
        pass
    on_path = shutil.which(tool)
    if on_path:
        found.append(Path(on_path))
    return found


async def _major_version(binary: Path) -> tuple[int, int]:
    proc = await asyncio.create_subprocess_exec(
        str(binary), "--version",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    match = _VERSION.search(out.decode().rpartition(")")[2] or out.decode())
    if proc.returncode != 0 or match is None:
        return (0, 0)
    return (int(match[1]), int(match[2] or 0))


async def pg_tool(config: Config, tool: str) -> Path:
    """The `pg_dump` / `pg_restore` to use: from `config.pg_bin_dir` when set,
    else the newest of the bundled and the PATH ones."""
    if config.pg_bin_dir is not None:
        chosen = config.pg_bin_dir / tool
        if not chosen.exists():
            raise BackupError(f"{tool} not found in PG_BIN_DIR={config.pg_bin_dir}")
        return chosen
    candidates = _candidates(tool)
    if not candidates:
        raise BackupError(f"{tool} not found (install the PostgreSQL client or set PG_BIN_DIR)")
    versions = [await _major_version(path) for path in candidates]
    return max(zip(versions, candidates, strict=True))[1]


def libpq_target(dsn: str) -> tuple[str, dict[str, str]]:
    """The DSN without its password, and the environment that carries it
    (`PGPASSWORD`), so the secret never shows in a process listing."""
    parts = urlsplit(dsn)
    env: dict[str, str] = {}
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        user = parts.username or ""
        netloc = f"{user}@{host}" if user else host
        if parts.port:
            netloc += f":{parts.port}"
        dsn = urlunsplit(parts._replace(netloc=netloc))
    return dsn, env


async def _run(binary: Path, *args: str, env: Mapping[str, str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(binary), *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await proc.communicate()
    except asyncio.CancelledError:
        # The job lost its lease or the runner stops: no orphan pg_dump.
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        raise BackupError(f"{binary.name} exited {proc.returncode}: {err.decode()[-2000:]}")


async def dump_database(config: Config, target: Path) -> int:
    """`pg_dump --format=custom` of `config.database_url` into `target`,
    replaced whole. Returns the dump's size in bytes."""
    assert config.database_url
    pg_dump = await pg_tool(config, "pg_dump")
    dsn, env = libpq_target(config.database_url)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        await _run(pg_dump, "--format=custom", f"--file={partial}", f"--dbname={dsn}", env=env)
        # pg_dump closes the file but does not fsync it.
        fd = os.open(partial, os.O_RDONLY)
        try:
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return (await asyncio.to_thread(target.stat)).st_size


@register(BACKUP_DATABASE)
async def backup_database(payload: dict[str, Any], ctx: JobContext) -> None:
    """Dump the database to `backups/unimatch-<period date>.dump`, then keep
    only the `BACKUP_KEEP` newest dumps. Idempotent per day."""
    target = dump_path(ctx.config, period_date(payload))
    size = await dump_database(ctx.config, target)
    pruned = prune_backups(target.parent, DUMP_PREFIX, DUMP_SUFFIX, ctx.config.backup_keep)
    log.info(
        "dumped the database to %s (%d bytes); removed %d old dump(s)", target, size, len(pruned)
    )
