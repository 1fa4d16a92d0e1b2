"""Photo uploads: decoded to be accepted, re-encoded without metadata, size
and count limits, deletion, and the /media files with their cache headers."""

from __future__ import annotations

import io
import re
import secrets
from contextlib import AsyncExitStack

import aiohttp
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from aiohttp.test_utils import TestClient
from PIL import Image, ImageCms
from PIL.PngImagePlugin import PngInfo

from tests.factories import make_user
from tests.mailsink import free_port
from unimatch.domain.config import Config
from unimatch.domain.media import new_media_name
from unimatch.http.app import create_app
from unimatch.storage.cache import Cache, feed_key, profile_key
from unimatch.storage.media_store import CHUNK_BYTES, MediaStore
from unimatch.storage.pg import Database
from unimatch.storage.s3_media import S3MediaStore

GPS_IFD = 0x8825
ORIENTATION = 0x0112
URL = re.compile(r"^/media/[0-9a-f]{32}\.jpg$")


@pytest.fixture
async def client(aiohttp_client, store_config: Config) -> TestClient:
    """The app on each media store in turn (local folder, real S3), opened
    from the configuration as a node opens it."""
    return await aiohttp_client(create_app(store_config))


def _jpeg_with_gps() -> bytes:
    """A 64x32 JPEG from a 'phone': GPS position, camera make, and an
    orientation tag saying it must be turned 90 degrees to be upright."""
    image = Image.new("RGB", (64, 32), (200, 30, 30))
    exif = Image.Exif()
    exif[0x010F] = "TestPhone"
    exif[ORIENTATION] = 6
    gps = exif.get_ifd(GPS_IFD)
    gps[1] = "S"
    gps[2] = (1.0, 17.0, 29.0)
    gps[3] = "E"
    gps[4] = (36.0, 49.0, 2.0)
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    return out.getvalue()


def _png_with_metadata() -> bytes:
    image = Image.new("RGBA", (40, 30), (0, 120, 0, 128))
    info = PngInfo()
    info.add_text("Comment", "home address: somewhere in Westlands")
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = io.BytesIO()
    image.save(out, "PNG", pnginfo=info, icc_profile=icc)
    return out.getvalue()


def _webp() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (20, 20), (1, 2, 3)).save(out, "WEBP")
    return out.getvalue()


def _form(data: bytes, filename: str = "photo.jpg", content_type: str = "image/jpeg",
          field: str = "photo") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field(field, data, filename=filename, content_type=content_type)
    return form


async def _upload(client: TestClient, user, data: bytes, **kwargs):
    return await client.post("/api/v1/me/photos", data=_form(data, **kwargs), headers=user.auth)


async def _error(response, status: int, code: str) -> dict:
    assert response.status == status, await response.text()
    body = await response.json()
    assert body["error"] == code, body
    return body


async def _stored(store: MediaStore, url: str) -> bytes:
    """The file as the store holds it (not as the app serves it)."""
    async with store.open(url.rsplit("/", 1)[1]) as found:
        return b"".join([chunk async for chunk in found.chunks])


async def _is_stored(store: MediaStore, url: str) -> bool:
    return await store.exists(url.rsplit("/", 1)[1])


async def test_gps_exif_is_stripped_and_orientation_applied(
    client: TestClient, db: Database, config: Config, media_store: MediaStore
) -> None:
    original = _jpeg_with_gps()
    with Image.open(io.BytesIO(original)) as source:
        assert source.getexif().get_ifd(GPS_IFD)  # the test photo really has GPS
    user = await make_user(db, config)

    response = await _upload(client, user, original)
    assert response.status == 201, await response.text()
    body = await response.json()
    assert URL.match(body["url"])
    assert body["photo_id"]

    raw = await _stored(media_store, body["url"])
    with Image.open(io.BytesIO(raw)) as stored:
        assert stored.format == "JPEG"
        assert stored.size == (32, 64)  # turned upright
        assert len(stored.getexif()) == 0
        assert not stored.getexif().get_ifd(GPS_IFD)
        assert "exif" not in stored.info
        assert "icc_profile" not in stored.info
    assert b"Exif" not in raw and b"TestPhone" not in raw

    served = await client.get(body["url"])
    assert served.status == 200
    assert served.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert served.headers["Content-Type"] == "image/jpeg"
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert served.headers["Content-Length"] == str(len(raw))
    assert await served.read() == raw
    assert served.headers["Last-Modified"]
    etag = served.headers["ETag"]
    for condition in ({"If-None-Match": etag}, {"If-None-Match": f'"x", {etag}'},
                      {"If-Modified-Since": served.headers["Last-Modified"]}):
        cached = await client.get(body["url"], headers=condition)
        assert cached.status == 304, condition
        assert cached.headers["ETag"] == etag
        assert cached.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert await cached.read() == b""
    stale = await client.get(body["url"], headers={"If-None-Match": '"another"'})
    assert stale.status == 200 and await stale.read() == raw
    head = await client.head(body["url"])
    assert head.status == 200
    assert head.headers["Content-Length"] == str(len(raw))
    assert head.headers["Content-Type"] == "image/jpeg"
    assert await head.read() == b""

    me = await (await client.get("/api/v1/me", headers=user.auth)).json()
    assert body["url"] in [p["url"] for p in me["profile"]["photos"]]


async def test_png_text_and_icc_are_stripped_and_webp_accepted(
    client: TestClient, db: Database, config: Config, media_store: MediaStore
) -> None:
    user = await make_user(db, config)
    response = await _upload(client, user, _png_with_metadata(), filename="p.png",
                             content_type="image/png")
    assert response.status == 201, await response.text()
    url = (await response.json())["url"]
    raw = await _stored(media_store, url)
    assert b"Westlands" not in raw
    with Image.open(io.BytesIO(raw)) as stored:
        assert stored.size == (40, 30)
        assert "icc_profile" not in stored.info
        assert "Comment" not in stored.info

    response = await _upload(client, user, _webp(), filename="w.webp", content_type="image/webp")
    assert response.status == 201, await response.text()


@pytest.mark.parametrize(
    ("data", "filename"),
    [
        (b"just some text, honest\n" * 20, "photo.png"),
        (b"", "empty.jpg"),
        (b"GIF89a" + b"\x00" * 100, "anim.gif"),
        (b"%PDF-1.4\n" + b"x" * 200, "cv.jpg"),
    ],
)
async def test_files_that_are_not_images_are_415(
    client: TestClient, db: Database, config: Config, data: bytes, filename: str
) -> None:
    user = await make_user(db, config)
    response = await _upload(client, user, data, filename=filename, content_type="image/png")
    await _error(response, 415, "unsupported_media_type")


async def test_truncated_and_gif_images_are_refused(
    client: TestClient, db: Database, config: Config
) -> None:
    user = await make_user(db, config)
    truncated = _jpeg_with_gps()[:200]
    await _error(await _upload(client, user, truncated), 415, "unsupported_media_type")
    gif = io.BytesIO()
    Image.new("RGB", (10, 10)).save(gif, "GIF")
    await _error(await _upload(client, user, gif.getvalue(), filename="a.gif",
                               content_type="image/gif"), 415, "unsupported_media_type")


async def test_over_5mb_is_413(client: TestClient, db: Database, config: Config) -> None:
    user = await make_user(db, config)
    body = _jpeg_with_gps() + secrets.token_bytes(config.max_photo_bytes)
    await _error(await _upload(client, user, body), 413, "payload_too_large")


async def test_decompression_bombs_are_refused(
    client: TestClient, db: Database, config: Config
) -> None:
    user = await make_user(db, config)
    for side in (7_000, 10_000):  # 49 and 100 million pixels in a few kilobytes
        bomb = io.BytesIO()
        Image.new("1", (side, side)).save(bomb, "PNG", optimize=True)
        assert len(bomb.getvalue()) < config.max_photo_bytes
        response = await _upload(client, user, bomb.getvalue(), filename="b.png",
                                 content_type="image/png")
        body = await _error(response, 400, "image_too_large")
        assert "photo" in body["detail"]


async def test_at_most_6_photos(client: TestClient, db: Database, config: Config) -> None:
    user = await make_user(db, config)  # starts with one photo
    for _ in range(config.max_photos - 1):
        assert (await _upload(client, user, _webp(), filename="w.webp")).status == 201
    await _error(await _upload(client, user, _webp()), 409, "too_many_photos")
    count = await db.fetchval("SELECT count(*) FROM photos WHERE user_id = $1", user.id)
    assert count == config.max_photos


async def test_delete_removes_the_row_and_the_file(
    client: TestClient, db: Database, config: Config, media_store: MediaStore
) -> None:
    user = await make_user(db, config)
    other = await make_user(db, config)
    mine = await (await _upload(client, user, _webp())).json()
    theirs = await (await _upload(client, other, _webp())).json()

    # Someone else's photo is not found, and stays.
    response = await client.delete(f"/api/v1/me/photos/{theirs['photo_id']}", headers=user.auth)
    await _error(response, 404, "not_found")
    assert await _is_stored(media_store, theirs["url"])

    response = await client.delete(f"/api/v1/me/photos/{mine['photo_id']}", headers=user.auth)
    assert response.status == 204
    assert not await _is_stored(media_store, mine["url"])
    await _error(await client.get(mine["url"]), 404, "not_found")
    again = await client.delete(f"/api/v1/me/photos/{mine['photo_id']}", headers=user.auth)
    await _error(again, 404, "not_found")
    malformed = await client.delete("/api/v1/me/photos/not-a-uuid", headers=user.auth)
    await _error(malformed, 404, "not_found")


async def test_photo_changes_clear_profile_caches(
    client: TestClient, db: Database, config: Config, cache: Cache
) -> None:
    user = await make_user(db, config)
    viewer = await make_user(db, config)
    before = await (await client.get(f"/api/v1/users/{user.id}", headers=viewer.auth)).json()
    await cache.set_json(feed_key(user.id), {"results": []}, 600)
    uploaded = await (await _upload(client, user, _webp())).json()
    assert await cache.get_json(profile_key(user.id)) is None
    assert await cache.get_json(feed_key(user.id)) is None
    after = await (await client.get(f"/api/v1/users/{user.id}", headers=viewer.auth)).json()
    assert len(after["photos"]) == len(before["photos"]) + 1

    await client.delete(f"/api/v1/me/photos/{uploaded['photo_id']}", headers=user.auth)
    assert await cache.get_json(profile_key(user.id)) is None


async def test_bad_requests(client: TestClient, db: Database, config: Config) -> None:
    user = await make_user(db, config)
    wrong_field = await _upload(client, user, _webp(), field="picture")
    body = await _error(wrong_field, 400, "validation_failed")
    assert "photo" in body["detail"]
    as_json = await client.post("/api/v1/me/photos", json={"photo": "x"}, headers=user.auth)
    await _error(as_json, 415, "unsupported_media_type")
    anonymous = await client.post("/api/v1/me/photos", data=_form(_webp()))
    await _error(anonymous, 401, "unauthorized")


async def test_media_serves_only_our_names(client: TestClient, store_config: Config) -> None:
    """A file of another name beside the photos (in the folder, in the
    bucket) is never served."""
    if store_config.media_store == "s3":
        async with get_session().create_client(
            "s3", endpoint_url=store_config.s3_endpoint_url, region_name=store_config.s3_region,
            aws_access_key_id=store_config.s3_access_key_id,
            aws_secret_access_key=store_config.s3_secret_access_key,
            config=AioConfig(s3={"addressing_style": "path"}),
        ) as raw:
            await raw.put_object(Bucket=store_config.s3_bucket, Key="notes.txt", Body=b"private")
    else:
        store_config.media_root.mkdir(parents=True, exist_ok=True)
        (store_config.media_root / "notes.txt").write_text("private")
    for name in ("notes.txt", "..%2Fjwt_secret", f"{'a' * 32}.jpg"):
        response = await client.get(f"/media/{name}")
        await _error(response, 404, "not_found")


async def test_a_media_store_that_does_not_answer_is_503(
    aiohttp_client, db: Database, config: Config
) -> None:
    """S3 unreachable: an upload and a photo are 503, and no photo row is left."""
    exits = AsyncExitStack()
    nowhere = await exits.enter_async_context(get_session().create_client(
        "s3", endpoint_url=f"http://127.0.0.1:{free_port()}", region_name="us-east-1",
        aws_access_key_id="key", aws_secret_access_key="secret",
        config=AioConfig(s3={"addressing_style": "path"}, connect_timeout=1,
                         retries={"max_attempts": 1, "mode": "standard"}),
    ))
    store = S3MediaStore(nowhere, "photos", exits)
    try:
        client = await aiohttp_client(create_app(config, media=store))
        user = await make_user(db, config)
        await _error(await _upload(client, user, _webp()), 503, "media_store_unavailable")
        count = await db.fetchval("SELECT count(*) FROM photos WHERE user_id = $1", user.id)
        assert count == 1  # the one make_user gave
        await _error(await client.get(f"/media/{'a' * 32}.jpg"), 503, "media_store_unavailable")
    finally:
        await store.close()


async def test_a_photo_uploaded_through_one_node_is_served_by_another(
    aiohttp_client, db: Database, s3_config: Config, tmp_path
) -> None:
    """Two nodes on two machines (each a disk of its own) share the bucket."""
    one = await aiohttp_client(create_app(s3_config.with_(media_root=tmp_path / "one")))
    other = await aiohttp_client(create_app(s3_config.with_(media_root=tmp_path / "other")))
    user = await make_user(db, s3_config)
    uploaded = await (await _upload(one, user, _jpeg_with_gps())).json()
    through_one = await one.get(uploaded["url"])
    through_other = await other.get(uploaded["url"])
    assert through_other.status == 200
    assert await through_other.read() == await through_one.read()
    assert through_other.headers["ETag"] == through_one.headers["ETag"]
    response = await other.delete(f"/api/v1/me/photos/{uploaded['photo_id']}", headers=user.auth)
    assert response.status == 204
    await _error(await one.get(uploaded["url"]), 404, "not_found")


async def test_a_photo_is_served_in_byte_ranges_as_from_a_disk(
    client: TestClient, media_store: MediaStore
) -> None:
    """One range (a resumed download, a player): 206 with exactly those bytes,
    across the store's chunks; past the end 416; a changed file sends it all."""
    name = new_media_name()
    data = secrets.token_bytes(3 * CHUNK_BYTES + 77)
    await media_store.put(name, data, "image/jpeg")
    url = f"/media/{name}"
    whole = await client.get(url)
    assert whole.headers["Accept-Ranges"] == "bytes"
    size = len(data)
    for asked, (start, stop) in {
        "bytes=0-9": (0, 10),
        f"bytes={CHUNK_BYTES - 5}-{2 * CHUNK_BYTES + 4}": (CHUNK_BYTES - 5, 2 * CHUNK_BYTES + 5),
        "bytes=-100": (size - 100, size),
        f"bytes={size - 3}-": (size - 3, size),
        f"bytes=5-{size + 1000}": (5, size),
    }.items():
        part = await client.get(url, headers={"Range": asked})
        assert part.status == 206, asked
        assert part.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{size}", asked
        assert part.headers["Content-Type"] == "image/jpeg"
        assert part.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert await part.read() == data[start:stop], asked
    for asked in (f"bytes={size}-", "bytes=9-2", "bytes=x-y"):
        refused = await client.get(url, headers={"Range": asked})
        body = await _error(refused, 416, "range_not_satisfiable")
        assert body["detail"] == f"this file has {size} bytes"
        assert refused.headers["Content-Range"] == f"bytes */{size}"
    same = {"Range": "bytes=0-9", "If-Range": whole.headers["ETag"]}
    assert (await client.get(url, headers=same)).status == 206
    changed = await client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"older"'})
    assert changed.status == 200 and await changed.read() == data
