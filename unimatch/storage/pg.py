"""The asyncpg pool: retries on connection failure, slow-query log, and an
optional read replica.

`Database` is the only door to PostgreSQL. A connection that cannot be had
is retried `pg_retries` times with a short backoff, then the caller gets
`Unavailable("database_unavailable")`, which the shell turns into a 503.

`Database.read()` is the door for read-heavy queries that may see data a
moment old (feed candidates, history pages, catalogues, public profiles):
with `DATABASE_REPLICA_URL` set it is a `Replica`, which serves them from a
streaming replica and falls back to the primary whenever the replica fails;
without it, the primary itself. See docs/database.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import asyncpg
import orjson

from unimatch.domain.config import Config
from unimatch.domain.errors import Unavailable
from unimatch.domain.metrics import DB_REPLICA_FALLBACKS

log = logging.getLogger("unimatch.sql")

# Errors that mean "the server is not there", as opposed to a bad query.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.InterfaceError,
)


def _log_slow(threshold_ms: float):
    def logger(record: Any) -> None:
        elapsed_ms = record.elapsed * 1000
        if elapsed_ms >= threshold_ms:
            log.warning(
                "slow query %.1f ms: %s", elapsed_ms, " ".join(record.query.split())[:2000]
            )

    return logger


async def _init_connection(conn: asyncpg.Connection, slow_query_ms: float) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )
    conn.add_query_logger(_log_slow(slow_query_ms))


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without `RESET ALL; UNLISTEN *; ...`: that is a round trip on
    every release, and the platform leaves no session state on a pooled
    connection (settings only with SET LOCAL, advisory locks only per
    transaction, LISTEN removed by its owner). asyncpg still rolls back an
    open transaction and drops listeners before calling this."""


# How long a query waits for a pooled connection before that counts as the
# database being unavailable.
ACQUIRE_TIMEOUT = 10.0

# A replica is only worth it while it answers at once: past these a read goes
# to the primary instead (the reads sent there take milliseconds).
REPLICA_ACQUIRE_TIMEOUT = 2.0
REPLICA_COMMAND_TIMEOUT = 5.0
# How long a replica that failed is left alone before reads try it again.
REPLICA_RETRY_AFTER = 5.0


def _pool(dsn: str, *, max_size: int, slow_query_ms: float, command_timeout: float,
          connect_timeout: float) -> asyncpg.Pool:
    """A pool that connects lazily, so a server that is down at start-up
    does not stop the process."""

    async def init(conn: asyncpg.Connection) -> None:
        await _init_connection(conn, slow_query_ms)

    return asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=max_size,
        init=init,
        command_timeout=command_timeout,
        timeout=connect_timeout,
        max_inactive_connection_lifetime=300,
        reset=_keep_session,
    )


class Reads(Protocol):
    """What a read-only query site needs: `Database` and `Replica` both are."""

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]: ...

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...


class Database:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        retries: int = 3,
        backoff: float = 0.05,
        replica: asyncpg.Pool | None = None,
    ) -> None:
        self.pool = pool
        self.retries = retries
        self.backoff = backoff
        self.replica = Replica(replica, self) if replica is not None else None

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        size: int = 20,
        overflow: int = 10,
        retries: int = 3,
        slow_query_ms: float = 100.0,
        replica_dsn: str | None = None,
    ) -> Database:
        """Open a pool (and one on the replica at `replica_dsn`). Both connect
        lazily, so a database that is down at start-up does not stop the
        process: requests get 503 until the primary is back, and reads go to
        the primary until the replica is."""
        pool = _pool(dsn, max_size=size + overflow, slow_query_ms=slow_query_ms,
                     command_timeout=30, connect_timeout=5)
        await pool
        replica = None
        if replica_dsn:
            replica = _pool(replica_dsn, max_size=size + overflow, slow_query_ms=slow_query_ms,
                            command_timeout=REPLICA_COMMAND_TIMEOUT,
                            connect_timeout=REPLICA_ACQUIRE_TIMEOUT)
            await replica
        return cls(pool, retries=retries, replica=replica)

    @classmethod
    async def for_config(cls, config: Config, *, size: int | None = None) -> Database:
        """The pool a server process opens: `config`'s primary (and replica),
        sizes and retries; `size` overrides the pool size."""
        if not config.database_url:
            raise RuntimeError("DATABASE_URL is not set")
        return await cls.connect(
            config.database_url,
            size=config.pg_pool_size if size is None else size,
            overflow=config.pg_pool_overflow,
            retries=config.pg_retries,
            slow_query_ms=config.slow_query_ms,
            replica_dsn=config.replica_url,
        )

    def read(self) -> Reads:
        """Where read-heavy queries that may see data a moment old go: the
        replica when one is configured (falling back to this primary), else
        this primary."""
        return self.replica if self.replica is not None else self

    async def close(self) -> None:
        if self.replica is not None:
            await asyncio.wait_for(self.replica.pool.close(), timeout=10)
        await asyncio.wait_for(self.pool.close(), timeout=10)

    async def _acquire(self) -> asyncpg.pool.PoolConnectionProxy:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                # asyncio.timeout, not acquire(timeout=): that one runs the
                # acquisition as a task of its own, on every query.
                async with asyncio.timeout(ACQUIRE_TIMEOUT):
                    return await self.pool.acquire()
            except _CONNECTION_ERRORS as exc:
                if attempt == self.retries:
                    log.error("database unavailable after %d retries: %r", self.retries, exc)
                    raise Unavailable("database_unavailable", code="database_unavailable") from exc
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        conn = await self._acquire()
        try:
            yield conn
        except _CONNECTION_ERRORS as exc:
            raise Unavailable("database_unavailable", code="database_unavailable") from exc
        finally:
            await self.pool.release(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def _run(self, method: str, query: str, *args: Any) -> Any:
        async with self.connection() as conn:
            return await getattr(conn, method)(query, *args)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return await self._run("fetch", query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        return await self._run("fetchrow", query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._run("fetchval", query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        return await self._run("execute", query, *args)

    async def ping(self) -> None:
        async with self.connection() as conn:
            await conn.fetchval("SELECT 1")


# A replica cancels a query that conflicts with the WAL it is replaying
# (SQLSTATE 40001 on a standby); the primary answers it.
_RECOVERY_CONFLICT = asyncpg.exceptions.SerializationError


class Replica:
    """Reads from a streaming replica that never fail because of it.

    A read the replica cannot serve (unreachable, shutting down, too slow,
    or cancelled by a recovery conflict) runs on the primary instead and is
    counted in `unimatch_db_replica_fallbacks_total` by reason. A replica
    that failed is left alone for `retry_after` seconds (reads go straight
    to the primary, reason `down`), then the next read tries it again.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        primary: Database,
        *,
        retry_after: float = REPLICA_RETRY_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.primary = primary
        self.retry_after = retry_after
        self._clock = clock
        self._down_until = 0.0

    @property
    def down(self) -> bool:
        """Whether reads skip the replica for now, after a failure."""
        return self._clock() < self._down_until

    def _fall_back(self, reason: str, exc: BaseException | None = None) -> None:
        DB_REPLICA_FALLBACKS.labels(reason).inc()
        if reason in ("unreachable", "timeout"):
            if not self.down:
                log.warning("replica %s (%r): reads go to the primary for %.0f s",
                            reason, exc, self.retry_after)
            self._down_until = self._clock() + self.retry_after

    async def _run(self, method: str, query: str, *args: Any) -> Any:
        if self.down:
            self._fall_back("down")
            return await self.primary._run(method, query, *args)
        try:
            async with asyncio.timeout(REPLICA_ACQUIRE_TIMEOUT):
                conn = await self.pool.acquire()
        except TimeoutError as exc:
            self._fall_back("timeout", exc)
            return await self.primary._run(method, query, *args)
        except _CONNECTION_ERRORS as exc:
            self._fall_back("unreachable", exc)
            return await self.primary._run(method, query, *args)
        try:
            return await getattr(conn, method)(query, *args)
        except _RECOVERY_CONFLICT:
            self._fall_back("conflict")
        except TimeoutError as exc:
            self._fall_back("timeout", exc)
        except _CONNECTION_ERRORS as exc:
            self._fall_back("unreachable", exc)
        finally:
            await self.pool.release(conn)
        return await self.primary._run(method, query, *args)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return await self._run("fetch", query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        return await self._run("fetchrow", query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._run("fetchval", query, *args)
