"""The media store of a cluster: objects in a bucket of an S3-compatible
store (MinIO, Ceph RGW, AWS S3), through aiobotocore on the event loop.

An object is written by one PUT, which the store makes visible whole or not
at all, with its content type; a photo is streamed back through the node
chunk by chunk, never held whole. The store not answering is `Unavailable`
(503), a missing object `NotFound` (404). `connect` checks the bucket
before the node serves, so a wrong endpoint, bucket or key stops the start
with a message naming them."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from datetime import UTC
from typing import TYPE_CHECKING, Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from unimatch.domain.config import Config, check_media_store
from unimatch.domain.errors import NotFound, Unavailable
from unimatch.storage.media_store import (
    CHUNK_BYTES,
    MediaFile,
    check_name,
    is_ours,
    measured,
    no_such_file,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger("unimatch.storage.media")

_MISSING = {"NoSuchKey", "404", "NotFound"}
# Each node's connections to the store; an upload or a photo served holds one.
_POOL_CONNECTIONS = 32


def _unavailable() -> Unavailable:
    return Unavailable("media store unavailable", code="media_store_unavailable")


def _is_missing(error: ClientError) -> bool:
    return str(error.response.get("Error", {}).get("Code")) in _MISSING


@contextmanager
def _answered(op: str, name: str) -> Iterator[None]:
    """The store's errors as ours: no such object is `NotFound` (404), any
    other failure `Unavailable` (503), logged."""
    try:
        yield
    except ClientError as exc:
        if _is_missing(exc):
            raise no_such_file() from None
        log.warning("media store %s %s failed: %s", op, name, exc)
        raise _unavailable() from exc
    except BotoCoreError as exc:
        log.warning("media store %s %s failed: %s", op, name, exc)
        raise _unavailable() from exc


class S3MediaStore:
    kind = "s3"

    def __init__(self, client: S3Client, bucket: str, exits: AsyncExitStack) -> None:
        self._client = client
        self.bucket = bucket
        self._exits = exits

    @classmethod
    async def connect(cls, config: Config) -> S3MediaStore:
        """A client for the configured bucket, once the bucket answers."""
        check_media_store(config)
        assert config.s3_bucket is not None
        where = config.s3_endpoint_url or f"AWS {config.s3_region}"
        exits = AsyncExitStack()
        client: Any = await exits.enter_async_context(get_session().create_client(
            "s3",
            endpoint_url=config.s3_endpoint_url,
            region_name=config.s3_region,
            aws_access_key_id=config.s3_access_key_id,
            aws_secret_access_key=config.s3_secret_access_key,
            config=AioConfig(
                # MinIO and RGW serve buckets under the path, not as host names.
                s3={"addressing_style": "path" if config.s3_endpoint_url else "auto"},
                connect_timeout=5,
                read_timeout=30,
                retries={"max_attempts": 3, "mode": "standard"},
                max_pool_connections=_POOL_CONNECTIONS,
            ),
        ))
        try:
            await client.head_bucket(Bucket=config.s3_bucket)
        except (ClientError, BotoCoreError) as exc:
            await exits.aclose()
            raise RuntimeError(
                f"the media store (MEDIA_STORE=s3) cannot use bucket {config.s3_bucket!r} "
                f"at {where}: {exc}"
            ) from exc
        log.info("media store: bucket %s at %s", config.s3_bucket, where)
        return cls(client, config.s3_bucket, exits)

    async def put(self, name: str, data: bytes, content_type: str) -> None:
        check_name(name)
        with measured(self.kind, "put"), _answered("put", name):
            await self._client.put_object(
                Bucket=self.bucket, Key=name, Body=data, ContentType=content_type)

    @asynccontextmanager
    async def open(self, name: str) -> AsyncIterator[MediaFile]:
        if not is_ours(name):
            raise no_such_file()
        with measured(self.kind, "get"), _answered("get", name):
            found = await self._client.get_object(Bucket=self.bucket, Key=name)
        body = found["Body"]
        try:
            yield MediaFile(found["ContentType"], found["ContentLength"],
                            found["ETag"].strip('"'), found["LastModified"].astimezone(UTC),
                            body.iter_chunks(CHUNK_BYTES))
        finally:
            # Read to the end, the connection goes back to the pool; else closed.
            body.close()

    async def exists(self, name: str) -> bool:
        if not is_ours(name):
            return False
        with measured(self.kind, "exists"):  # no such object is an answer: ok
            try:
                with _answered("exists", name):
                    await self._client.head_object(Bucket=self.bucket, Key=name)
            except NotFound:
                return False
            return True

    async def delete(self, name: str) -> None:
        if not is_ours(name):
            return
        with measured(self.kind, "delete"), _answered("delete", name):
            await self._client.delete_object(Bucket=self.bucket, Key=name)

    async def close(self) -> None:
        await self._exits.aclose()
