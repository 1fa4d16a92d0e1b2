"""The registry of job kinds and what a handler receives.

A feature adds background work by registering an async handler for its kind
in a module of its own, and listing that module in
`unimatch.scheduler.actor.HANDLER_MODULES` (or one of the optional names
already there):

    from unimatch.scheduler.handlers import JobContext, register

    @register("deliver_webhook")
    async def deliver_webhook(payload: dict[str, Any], ctx: JobContext) -> None:
        ...

Handlers run at least once per job, possibly more (see `queue`): make them
idempotent. Raising retries the job with backoff; raising `PermanentJobError`
sends it straight to `dead` (for input that can never succeed).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from unimatch.domain.config import Config
from unimatch.storage.jobs import Job
from unimatch.storage.pg import Database

T = TypeVar("T")


class PermanentJobError(Exception):
    """The job can never succeed (a malformed payload): no retries."""


@dataclass(frozen=True)
class JobContext:
    """What a handler gets besides its payload: the claim it runs under, the
    database, the configuration and the process's shared clients (`Mailer`,
    `Cache`, ...) looked up by type."""

    job: Job
    db: Database
    config: Config
    services: Mapping[type, object] = field(default_factory=dict)

    def service(self, cls: type[T]) -> T:
        try:
            value = self.services[cls]
        except KeyError:
            raise LookupError(
                f"job kind {self.job.kind!r} needs a {cls.__name__}, which this runner lacks"
            ) from None
        if not isinstance(value, cls):
            raise TypeError(f"service registered for {cls.__name__} is a {type(value).__name__}")
        return value


Handler = Callable[[dict[str, Any], JobContext], Awaitable[None]]
H = TypeVar("H", bound=Handler)

# kind -> handler, filled by importing handler modules.
HANDLERS: dict[str, Handler] = {}


def register(kind: str) -> Callable[[H], H]:
    """Decorator: make the function the handler of `kind` in `HANDLERS`.

    Registering a second, different function for a kind is an error (two
    features claiming one name); re-importing the same module is not.
    """

    def decorate(handler: H) -> H:
        existing = HANDLERS.get(kind)
        if existing is not None and _name(existing) != _name(handler):
            raise ValueError(f"job kind {kind!r} already has a handler: {_name(existing)}")
        HANDLERS[kind] = handler
        return handler

    return decorate


def _name(handler: Handler) -> str:
    return f"{handler.__module__}.{getattr(handler, '__qualname__', repr(handler))}"
