"""Virtual-actor kinds used only by the runtime tests (see conftest's config).

They run inside the nodes, which import them as `tests.actor_kinds`
(Ray workers have the repository root on `sys.path`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from typing import Any

import unimatch.domain.errors
from unimatch.actors.base import VirtualActor
from unimatch.actors.routing import pick_host

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS test_counters (
        id text PRIMARY KEY,
        value bigint NOT NULL DEFAULT 0,
        log bigint[] NOT NULL DEFAULT '{}',
        passivations integer NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS test_counter_tokens (
        id text NOT NULL,
        token text NOT NULL,
        PRIMARY KEY (id, token)
    )""",
    "CREATE TABLE IF NOT EXISTS test_counter_faults (id text PRIMARY KEY)",
)
# Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalogue:
# serialise it across hosts with a transaction-scoped advisory lock.
_SCHEMA_LOCK = 8_420_117_031
LOCK = "SELECT pg_advisory_xact_lock($1)"
FAULT = "SELECT EXISTS (SELECT 1 FROM test_counter_faults WHERE id = $1)"
LOAD = "SELECT value, log, passivations FROM test_counters WHERE id = $1"
CLAIM_TOKEN = """
INSERT INTO test_counter_tokens (id, token) VALUES ($1, $2)
ON CONFLICT DO NOTHING RETURNING token"""
ADD = """
INSERT INTO test_counters (id, value, log) VALUES ($1, $2, ARRAY[$2::bigint])
ON CONFLICT (id) DO UPDATE
SET value = test_counters.value + EXCLUDED.value,
    log = array_append(test_counters.log, EXCLUDED.value)
RETURNING value, log"""
COUNT_PASSIVATION = """
INSERT INTO test_counters (id, passivations) VALUES ($1, 1)
ON CONFLICT (id) DO UPDATE SET passivations = test_counters.passivations + 1"""

_schema_ready = False
# Gates live in the host process: `hold` waits on one, `open_gate` (called on
# another actor of the same host) opens it.
_GATES: dict[str, asyncio.Event] = {}
_ARRIVED: dict[str, set[str]] = {}


def _gate(name: str) -> asyncio.Event:
    return _GATES.setdefault(name, asyncio.Event())


class Counter(VirtualActor):
    """A counter persisted in PostgreSQL, plus probes of the runtime."""

    kind = "counter"

    def __init__(self, actor_id: str, services: Any, context: Any) -> None:
        super().__init__(actor_id, services, context)
        self.value = 0
        self.log: list[int] = []
        self.passivations = 0
        self.order: list[int | str] = []  # record(i) appends ints, enter(gate) marks
        self.inside = 0
        self.max_inside = 0

    async def on_activate(self) -> None:
        global _schema_ready
        db = self.services.db
        if not _schema_ready:
            async with db.transaction() as conn:
                await conn.execute(LOCK, _SCHEMA_LOCK)
                for statement in SCHEMA:
                    await conn.execute(statement)
            _schema_ready = True
        if await db.fetchval(FAULT, self.actor_id):
            raise RuntimeError(f"activation refused for {self.actor_id}")
        row = await db.fetchrow(LOAD, self.actor_id)
        if row is not None:
            self.value, self.log, self.passivations = (
                row["value"],
                list(row["log"]),
                row["passivations"],
            )

    async def on_passivate(self) -> None:
        await self.services.db.execute(COUNT_PASSIVATION, self.actor_id)

    async def add(self, n: int, token: str) -> int:
        """Add `n` once per `token` (a retried call is a no-op); the value."""
        async with self.services.db.transaction() as conn:
            if await conn.fetchval(CLAIM_TOKEN, self.actor_id, token) is not None:
                row = await conn.fetchrow(ADD, self.actor_id, n)
                self.value, self.log = row["value"], list(row["log"])
        return self.value

    async def get(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "log": self.log,
            "passivations": self.passivations,
            "pid": os.getpid(),
            "host": self.services.node_index,
        }

    async def record(self, i: int) -> int:
        """Note `i` and whether another message ran at the same time."""
        self.inside += 1
        self.max_inside = max(self.max_inside, self.inside)
        self.order.append(i)
        await asyncio.sleep(0)  # let anything that could interleave, interleave
        self.inside -= 1
        return len(self.order)

    async def seen(self) -> dict[str, Any]:
        return {"order": self.order, "max_inside": self.max_inside}

    async def enter(self, gate: str) -> None:
        """Be inside a message until `open_gate(gate)` on this host: noted on
        arrival (see `arrived`), and in `order` on the way in and out."""
        self.order.append(f"{gate}:in")
        _ARRIVED.setdefault(gate, set()).add(self.actor_id)
        await _gate(gate).wait()
        self.order.append(f"{gate}:out")

    async def arrived(self, gate: str) -> list[str]:
        """The actors of this host now inside `enter(gate)` or past it."""
        return sorted(_ARRIVED.get(gate, ()))

    async def hold(self, gate: str) -> None:
        """Block this actor's mailbox until `open_gate(gate)` on this host."""
        await _gate(gate).wait()

    async def open_gate(self, gate: str) -> None:
        _gate(gate).set()

    async def fail(self, error: str, detail: Any, **fields: Any) -> None:
        cls = getattr(unimatch.domain.errors, error)
        raise cls(detail, **fields)

    async def _secret(self) -> str:
        return "private"


def ids_on(node: int, count: int, label: str, nodes: int = 2) -> list[str]:
    """`count` fresh counter ids whose actors live on `node` of `nodes`."""
    found: list[str] = []
    k = 0
    while len(found) < count:
        actor_id = f"{label}-{secrets.token_hex(4)}-{k}"
        if pick_host("counter", actor_id, nodes) == node:
            found.append(actor_id)
        k += 1
    return found
