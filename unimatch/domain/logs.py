"""Logs: one JSON line per event on stdout, from every process.

Every module keeps logging through the standard library
(`logging.getLogger("unimatch.x")`); `configure_logging` routes the root
logger through structlog's `ProcessorFormatter` to stdout, so a line from the
CLI, a node or the scheduler has the same shape:

    {"ts": "2025-01-01T12:00:00.123456Z", "level": "info", "process": "node-0",
     "pid": 4242, "logger": "unimatch.access", "event": "request",
     "request_id": "...", "user_id": "...", ...}

Ray's workers write to files that Ray streams to the driver
(`log_to_driver=True`, see `unimatch.server.platform.init_ray`), so every process's
lines arrive on the stdout of `unimatch serve`.

Context bound with `bind_request`, `bind_connection`, `bind_user` and
`bind_match` lives in context variables (structlog.contextvars): every line
logged later in the same task, however deep in the stack, carries it, and
`unbind` puts back what was bound before.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Mapping
from contextvars import Token
from typing import Any, TextIO

import orjson
import structlog
from structlog.contextvars import bind_contextvars, reset_contextvars
from structlog.typing import EventDict, Processor, WrappedLogger

from unimatch.domain.config import Config
from unimatch.domain.sentry import configure_sentry

LOG_FORMATS = ("json", "text")
# The keys a JSON line starts with, in this order; the rest follow as logged.
_LEADING_KEYS = ("ts", "level", "process", "pid", "logger", "event")
# Context keys cleared at the start of each request, so a keep-alive
# connection's next request starts clean.
_REQUEST_KEYS = ("request_id", "conn_id", "user_id", "match_id")

Tokens = Mapping[str, Token[Any]]


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stdout` is when a line is logged (a test
    runner or Ray may swap it after configuration)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


class _ProcessFields:
    """Adds the process name and pid to every line."""

    def __init__(self, process: str) -> None:
        self.process = process

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        event.setdefault("process", self.process)
        record = event.get("_record")
        # A stdlib record has read the pid already.
        event.setdefault("pid", record.process if record is not None else os.getpid())
        return event


def _drop_ray_fields(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    # Ray stamps every LogRecord with `_ray_timestamp_ns`; `ts` says it.
    for key in [k for k in event if k.startswith("_ray")]:
        del event[key]
    return event


def _leading_keys_first(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    ordered = {key: event.pop(key) for key in _LEADING_KEYS if key in event}
    ordered.update(event)
    return ordered


def _dumps(event: EventDict, **_: Any) -> str:
    return orjson.dumps(event, default=repr).decode()


def _pre_chain(process: str) -> list[Processor]:
    """What every line gets, from stdlib and structlog loggers alike."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _drop_ray_fields,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        _ProcessFields(process),
    ]


def _renderers(log_format: str) -> list[Processor]:
    if log_format == "text":
        # Plain tracebacks: never the locals of frames (they hold tokens).
        return [structlog.dev.ConsoleRenderer(
            colors=False, timestamp_key="ts",
            exception_formatter=structlog.dev.plain_traceback,
        )]
    return [
        structlog.processors.format_exc_info,
        _leading_keys_first,
        structlog.processors.JSONRenderer(serializer=_dumps),
    ]


def configure_logging(
    config: Config, *, process: str, stream: TextIO | None = None
) -> None:
    """Route this process's logging to stdout (or `stream`) as JSON lines,
    or human text with `config.log_format == "text"`, at `config.log_level`;
    `process` names the process on each line (`node-0`, `scheduler`, `cli`).
    Also reports errors to Sentry when `config.sentry_dsn` is set.

    Calling it again reconfigures: the latest call names the process (a node
    that builds a host and a gateway in its process calls it last)."""
    if config.log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, got {config.log_format!r}")
    pre_chain = _pre_chain(process)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *_renderers(config.log_format),
        ],
    )
    handler: logging.Handler = (
        _StdoutHandler() if stream is None else logging.StreamHandler(stream)
    )
    handler.setFormatter(formatter)
    handler.set_name("unimatch")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "unimatch"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(config.log_level.upper())
    # aiohttp's own access logger would log raw paths (with query strings);
    # unimatch.http.middleware.AccessLogger logs route templates instead.
    logging.getLogger("aiohttp.access").propagate = False
    # structlog loggers (structlog.get_logger()) take the same path.
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            *pre_chain,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    configure_sentry(config, process=process)


def _id(value: str | uuid.UUID | None) -> Any:
    # `...` is structlog's "unset": a key bound to it is left off the line.
    return ... if value is None else str(value)


def bind_request(request_id: str) -> Tokens:
    """Start a request's context: its id, and no connection, user or match
    left from the request before it on the same connection."""
    return bind_contextvars(**{key: ... for key in _REQUEST_KEYS} | {"request_id": request_id})


def bind_connection(conn_id: str, user_id: str | uuid.UUID | None = None) -> Tokens:
    """A WebSocket connection's id (and its user, once authenticated)."""
    return bind_contextvars(conn_id=conn_id, user_id=_id(user_id))


def bind_user(user_id: str | uuid.UUID) -> Tokens:
    return bind_contextvars(user_id=str(user_id))


def bind_match(match_id: str | uuid.UUID) -> Tokens:
    return bind_contextvars(match_id=str(match_id))


def unbind(tokens: Tokens) -> None:
    """Put back the context as it was before the bind that gave `tokens`
    (in the same task)."""
    reset_contextvars(**tokens)
