"""Where uploaded photos live: one interface, two stores.

`LocalMediaStore` (`storage/local_media.py`) keeps them in a folder of this
machine; `S3MediaStore` (`storage/s3_media.py`) in a bucket of an
S3-compatible object store every machine of a cluster shares. The app
factory picks one from `MEDIA_STORE` when it wires the app
(`http/app.py: media_ctx`); the handlers know only `MediaStore`.

Names are ours (`domain.media.MEDIA_NAME`: 32 hex digits and a suffix): a
store refuses to write any other, and treats any other as missing, so a
request path can never reach outside the store's own files.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from unimatch.domain.errors import NotFound
from unimatch.domain.media import MEDIA_NAME
from unimatch.domain.metrics import MEDIA_STORE_LATENCY, MEDIA_STORE_OPS

# Bytes handed on per chunk while a file streams out.
CHUNK_BYTES = 64 * 1024


@dataclass
class MediaFile:
    """An open stored file: its type, size, version (`etag`, without quotes)
    and time (`modified`, in UTC) known, its bytes to stream (once, inside the `open` context
    that gave it)."""

    content_type: str
    size: int
    etag: str
    modified: datetime
    chunks: AsyncIterator[bytes]


class MediaStore(Protocol):
    kind: str

    async def put(self, name: str, data: bytes, content_type: str) -> None:
        """Store `data` under `name`, whole or not at all: a reader never
        sees half a file."""
        ...

    def open(self, name: str) -> AbstractAsyncContextManager[MediaFile]:
        """The stored file, to stream within the context; `NotFound` when
        there is none (or the name is not one of ours)."""
        ...

    async def exists(self, name: str) -> bool: ...

    async def delete(self, name: str) -> None:
        """Remove the file; nothing happens when there is none."""
        ...

    async def close(self) -> None: ...


def no_such_file() -> NotFound:
    return NotFound("no such file")


def check_name(name: str) -> None:
    if not MEDIA_NAME.match(name):
        raise ValueError(f"not a media name: {name!r}")


def is_ours(name: str) -> bool:
    return MEDIA_NAME.match(name) is not None


@contextmanager
def measured(store: str, op: str) -> Iterator[None]:
    """Count the operation by outcome (a `NotFound` is `missing`) and time it."""
    started = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    except NotFound:
        outcome = "missing"
        raise
    finally:
        MEDIA_STORE_OPS.labels(store, op, outcome).inc()
        MEDIA_STORE_LATENCY.labels(store, op).observe(time.perf_counter() - started)
