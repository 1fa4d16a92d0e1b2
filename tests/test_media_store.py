"""The media stores: the same behaviour from the local folder and from a
real S3-compatible server (Ceph's RADOS gateway, tests/ceph_s3.py), and the
configuration that picks one."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from unimatch.domain.config import Config
from unimatch.domain.errors import NotFound
from unimatch.domain.media import new_media_name
from unimatch.http.app import create_app, open_media_store
from unimatch.storage.media_store import CHUNK_BYTES, MediaStore
from unimatch.storage.s3_media import S3MediaStore


async def _read(store: MediaStore, name: str) -> tuple[str, int, list[bytes]]:
    async with store.open(name) as found:
        return found.content_type, found.size, [chunk async for chunk in found.chunks]


async def _etag(store: MediaStore, name: str) -> str:
    async with store.open(name) as found:
        return found.etag


def _ops(store: str, op: str, outcome: str) -> float:
    labels = {"store": store, "op": op, "outcome": outcome}
    return REGISTRY.get_sample_value("unimatch_media_store_ops_total", labels) or 0.0


async def test_a_stored_file_reads_back_whole_with_its_type(media_store: MediaStore) -> None:
    name = new_media_name(".jpg")
    data = secrets.token_bytes(3 * CHUNK_BYTES + 123)
    assert not await media_store.exists(name)
    await media_store.put(name, data, "image/jpeg")
    assert await media_store.exists(name)
    content_type, size, chunks = await _read(media_store, name)
    assert (content_type, size) == ("image/jpeg", len(data))
    assert b"".join(chunks) == data
    assert len(chunks) > 1  # streamed, not read whole
    async with media_store.open(name) as again:
        assert again.modified.tzinfo is not None
        assert abs((datetime.now(UTC) - again.modified).total_seconds()) < 60
        etag = again.etag
    assert etag and (await _etag(media_store, name)) == etag  # the same version each time

    png = new_media_name(".png")
    await media_store.put(png, b"\x89PNG tiny", "image/png")
    assert (await _read(media_store, png))[:2] == ("image/png", 9)
    assert await _etag(media_store, png) != etag


async def test_a_missing_file_is_not_found_and_deleting_it_is_harmless(
    media_store: MediaStore,
) -> None:
    name = new_media_name()
    missing_before = _ops(media_store.kind, "get", "missing")
    with pytest.raises(NotFound):
        await _read(media_store, name)
    assert _ops(media_store.kind, "get", "missing") == missing_before + 1
    assert not await media_store.exists(name)
    await media_store.delete(name)


async def test_delete_removes_the_file(media_store: MediaStore) -> None:
    name = new_media_name()
    await media_store.put(name, b"photo", "image/jpeg")
    deleted_before = _ops(media_store.kind, "delete", "ok")
    await media_store.delete(name)
    assert _ops(media_store.kind, "delete", "ok") == deleted_before + 1
    assert not await media_store.exists(name)
    with pytest.raises(NotFound):
        await _read(media_store, name)


async def test_only_our_names_are_stored_or_found(media_store: MediaStore) -> None:
    for name in ("../jwt_secret", "notes.txt", f"{'A' * 32}.jpg", f"{'a' * 32}.gif"):
        with pytest.raises(ValueError, match="not a media name"):
            await media_store.put(name, b"x", "image/jpeg")
        with pytest.raises(NotFound):
            await _read(media_store, name)
        assert not await media_store.exists(name)
        await media_store.delete(name)


async def test_a_file_left_unread_releases_the_store(media_store: MediaStore) -> None:
    """A client that goes away mid-photo: the next requests are served as usual."""
    name = new_media_name()
    data = secrets.token_bytes(4 * CHUNK_BYTES)
    await media_store.put(name, data, "image/jpeg")
    for _ in range(40):  # past the S3 client's pool of connections
        async with media_store.open(name) as found:
            assert await anext(found.chunks)
    assert b"".join((await _read(media_store, name))[2]) == data


async def test_a_local_write_leaves_no_partial_file(config: Config) -> None:
    store = await open_media_store(config)
    name = new_media_name()
    await store.put(name, b"whole", "image/jpeg")
    assert sorted(p.name for p in config.media_root.iterdir() if name in p.name) == [name]


def test_media_store_settings_are_checked() -> None:
    assert Config.from_env({}, dotenv=False).media_store == "local"
    with pytest.raises(ValueError, match="MEDIA_STORE must be local or s3, got 'nfs'"):
        Config.from_env({"MEDIA_STORE": "nfs"}, dotenv=False)
    with pytest.raises(ValueError) as refused:
        Config.from_env({"MEDIA_STORE": "s3", "S3_BUCKET": "photos"}, dotenv=False)
    assert str(refused.value).startswith(
        "MEDIA_STORE=s3 needs S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY: set them")
    s3 = Config.from_env({
        "MEDIA_STORE": "S3", "S3_ENDPOINT_URL": "http://127.0.0.1:9000", "S3_BUCKET": "photos",
        "S3_ACCESS_KEY_ID": "key", "S3_SECRET_ACCESS_KEY": "secret",
    }, dotenv=False)
    assert (s3.media_store, s3.s3_bucket, s3.s3_region) == ("s3", "photos", "us-east-1")
    assert "secret" not in repr(s3)


async def test_an_app_on_s3_without_its_settings_refuses_to_start(
    aiohttp_client, config: Config
) -> None:
    unset = config.with_(media_store="s3", s3_bucket="photos")
    with pytest.raises(ValueError, match="MEDIA_STORE=s3 needs S3_ACCESS_KEY_ID"):
        await aiohttp_client(create_app(unset))


async def test_a_bucket_that_cannot_be_used_stops_the_start(s3_config: Config) -> None:
    with pytest.raises(RuntimeError, match="cannot use bucket 'no-such-bucket' at http://"):
        await S3MediaStore.connect(s3_config.with_(s3_bucket="no-such-bucket"))
    with pytest.raises(RuntimeError, match="cannot use bucket"):
        await S3MediaStore.connect(s3_config.with_(s3_secret_access_key="wrong"))


def test_the_server_refuses_to_start_on_s3_without_its_keys(tmp_path: Path) -> None:
    env = {**os.environ, "MEDIA_STORE": "s3", "S3_BUCKET": "photos",
           "UNIMATCH_DATA_DIR": str(tmp_path), "JWT_SECRET": "k" * 40}
    done = subprocess.run([sys.executable, "-m", "unimatch.server.cli", "serve"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith(
        "unimatch: MEDIA_STORE=s3 needs S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY: set them")
    assert "Traceback" not in done.stderr
