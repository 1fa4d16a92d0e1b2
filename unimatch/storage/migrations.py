"""Schema migrations: numbered `.sql` files applied in order, each in its own
transaction, recorded in `schema_migrations`. A session-level advisory lock
makes two processes that start at once apply each file exactly once."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

log = logging.getLogger("unimatch.migrations")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_LOCK_KEY = 7_311_946_125  # any fixed bigint, shared by every process of the platform
_FILE_RE = re.compile(r"^(\d{3,})_([\w-]+)\.sql$")

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
APPLIED = "SELECT version FROM schema_migrations"
RECORD = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in directory.iterdir():
        match = _FILE_RE.match(path.name)
        if match:
            found.append(Migration(int(match[1]), match[2], path))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {directory}")
    return found


async def apply_migrations(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply what is pending; return the versions applied by this call."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            await conn.execute(CREATE_TABLE)
            done = {r["version"] for r in await conn.fetch(APPLIED)}
            applied = []
            for migration in discover(directory):
                if migration.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.path.read_text())
                    await conn.execute(RECORD, migration.version, migration.name)
                log.info("applied migration %03d_%s", migration.version, migration.name)
                applied.append(migration.version)
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await conn.close()
