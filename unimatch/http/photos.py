"""Photos: `POST /me/photos`, `DELETE /me/photos/{photo_id}` and the files
themselves at `/media/{name}` (no API prefix).

An upload is read as a stream and refused with 413 as soon as it passes
`max_photo_bytes`; then it is decoded and re-encoded in the app's bounded
decoding pool (see `unimatch.domain.media`), so the event loop never waits on
Pillow and at most `PHOTO_DECODE_WORKERS` images are in memory at once
(past `PHOTO_DECODE_QUEUE` waiting, 503 with Retry-After). Each user may
start `LIMIT_PHOTO_UPLOADS_PER_HOUR` uploads an hour (429 past it).

Files go to, and come from, the app's media store (`storage/media_store.py`:
a folder of this machine or an S3 bucket, chosen at wiring); a photo is
streamed through the node with the same headers whichever it is.
"""

from __future__ import annotations

from contextlib import suppress

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from unimatch.domain import media
from unimatch.domain.errors import (
    NotFound,
    PayloadTooLarge,
    Unavailable,
    UnsupportedMedia,
    ValidationFailed,
)
from unimatch.http.keys import CACHE, CONFIG, DB, LIMITER, MEDIA, PHOTO_DECODER
from unimatch.http.media_files import media_response
from unimatch.http.permissions import IsAuthenticated, principal_of, requires
from unimatch.http.profile import forget_profile
from unimatch.http.validation import json_response, path_uuid
from unimatch.storage import profiles
from unimatch.storage.ratelimit import Limit

routes = web.RouteTableDef()
media_routes = web.RouteTableDef()

FIELD = "photo"
_CHUNK = 64 * 1024
# Room for the multipart envelope (boundaries, part headers) around the file.
_ENVELOPE = 16 * 1024
MEDIA_HEADERS = {
    # Names are random and files never change: cache forever.
    "Cache-Control": "public, max-age=31536000, immutable",
    "X-Content-Type-Options": "nosniff",
}


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"a photo may be at most {limit // (1024 * 1024)} MB",
                           code="payload_too_large")


async def _read_photo(request: web.Request, limit: int) -> bytes:
    """The bytes of the `photo` part, at most `limit` of them."""
    if request.content_type != "multipart/form-data":
        raise UnsupportedMedia(
            f"send multipart/form-data with the image in the field {FIELD!r}",
            code="unsupported_media_type",
        )
    if request.content_length is not None and request.content_length > limit + _ENVELOPE:
        raise _too_large(limit)
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if getattr(part, "name", None) != FIELD:
                continue
            data = bytearray()
            while chunk := await part.read_chunk(_CHUNK):  # type: ignore[union-attr]
                data += chunk
                if len(data) > limit:
                    raise _too_large(limit)
            return bytes(data)
    except (ValueError, AssertionError, HttpProcessingError) as exc:
        raise ValidationFailed({FIELD: ["malformed multipart body"]}) from exc
    raise ValidationFailed({FIELD: ["this field is required"]})


@routes.post("/me/photos")
@requires(IsAuthenticated)
async def upload_photo(request: web.Request) -> web.Response:
    config, db = request.app[CONFIG], request.app[DB]
    user_id = principal_of(request).user_id
    await request.app[LIMITER].require(
        f"photo_upload:{user_id}",
        Limit(max(config.limit_photo_uploads_per_hour, 1), 3600),
        "too many photo uploads: try again later",
    )
    # Checked again under a lock when recording; this spares the decoding work.
    if await profiles.photo_count(db, user_id) >= config.max_photos:
        raise profiles.too_many_photos(config.max_photos)
    data = await _read_photo(request, config.max_photo_bytes)
    clean = await request.app[PHOTO_DECODER].run(media.process_photo, data)
    name = media.new_media_name(clean.suffix)
    store = request.app[MEDIA]
    await store.put(name, clean.data, clean.content_type)
    try:
        photo_id = await profiles.add_photo(
            db,
            user_id,
            filename=name,
            content_type=clean.content_type,
            width=clean.width,
            height=clean.height,
            size_bytes=len(clean.data),
            max_photos=config.max_photos,
        )
    except BaseException:
        # An orphan file costs less than hiding why the upload failed.
        with suppress(Unavailable):
            await store.delete(name)
        raise
    await forget_profile(request.app[CACHE], user_id)
    return json_response(
        {"photo_id": photo_id, "url": profiles.photo_url(name),
         "width": clean.width, "height": clean.height},
        status=201,
    )


@routes.delete("/me/photos/{photo_id}")
@requires(IsAuthenticated)
async def delete_photo(request: web.Request) -> web.Response:
    user_id = principal_of(request).user_id
    photo_id = path_uuid(request, "photo_id")
    name = await profiles.delete_photo(request.app[DB], user_id, photo_id)
    if name is None:
        raise NotFound("no such photo")
    # The photo is gone from the profile; a file the store could not remove
    # now is an orphan (logged by the store), not the user's failure.
    with suppress(Unavailable):
        await request.app[MEDIA].delete(name)
    await forget_profile(request.app[CACHE], user_id)
    return web.Response(status=204)


@media_routes.get("/media/{name}")
async def serve_media(request: web.Request) -> web.StreamResponse:
    # A name that is not one of ours is no file of the store's (404).
    async with request.app[MEDIA].open(request.match_info["name"]) as found:
        return await media_response(request, found, MEDIA_HEADERS)
