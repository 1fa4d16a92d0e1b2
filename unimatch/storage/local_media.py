"""The media store of one machine: files in `MEDIA_ROOT`.

Every file operation runs in a worker thread, so the event loop never waits
on the disk. Fit for one machine only: another machine sees none of these
files (a cluster uses `storage/s3_media.py`)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from unimatch.domain.media import content_type_of
from unimatch.storage.media_store import (
    CHUNK_BYTES,
    MediaFile,
    check_name,
    is_ours,
    measured,
    no_such_file,
)


def _write_atomically(root: Path, name: str, data: bytes) -> None:
    """Aside, flushed to disk, then renamed: a reader never sees half a file."""
    root.mkdir(parents=True, exist_ok=True)
    partial = root / f".{name}.partial"
    with open(partial, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(root / name)


def _open(path: Path) -> tuple[BinaryIO, os.stat_result] | None:
    try:
        handle = open(path, "rb")  # closed by the caller's context
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    return handle, os.fstat(handle.fileno())


async def _chunks(handle: BinaryIO) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
        yield chunk


class LocalMediaStore:
    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    async def put(self, name: str, data: bytes, content_type: str) -> None:
        check_name(name)
        with measured(self.kind, "put"):
            await asyncio.to_thread(_write_atomically, self.root, name, data)

    @asynccontextmanager
    async def open(self, name: str) -> AsyncIterator[MediaFile]:
        with measured(self.kind, "get"):
            opened = await asyncio.to_thread(_open, self.root / name) if is_ours(name) else None
            if opened is None:
                raise no_such_file()
        handle, stat = opened
        try:
            yield MediaFile(
                content_type_of(name),
                stat.st_size,
                # As aiohttp's FileResponse made it: caches keep their copies.
                f"{stat.st_mtime_ns:x}-{stat.st_size:x}",
                datetime.fromtimestamp(stat.st_mtime, UTC),
                _chunks(handle),
            )
        finally:
            await asyncio.to_thread(handle.close)

    async def exists(self, name: str) -> bool:
        if not is_ours(name):
            return False
        with measured(self.kind, "exists"):
            return await asyncio.to_thread((self.root / name).is_file)

    async def delete(self, name: str) -> None:
        if not is_ours(name):
            return
        with measured(self.kind, "delete"):
            await asyncio.to_thread((self.root / name).unlink, missing_ok=True)

    async def close(self) -> None:
        pass
