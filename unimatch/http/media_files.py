"""A stored photo as an HTTP response, the same from either media store:
type, length, `ETag` and `Last-Modified` from the store; a cache's
conditional GET answered 304; one byte range (`Range`, `If-Range`) answered
206, as a file from disk would be. The bytes stream through, chunk by chunk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.utils import format_datetime

from aiohttp import hdrs, web

from unimatch.http.errors import error_response
from unimatch.storage.media_store import MediaFile


def _not_modified(request: web.Request, found: MediaFile) -> bool:
    """A cache's copy is current (If-None-Match wins over If-Modified-Since)."""
    if (etags := request.if_none_match) is not None:
        return any(tag.value in (found.etag, "*") for tag in etags)
    since = request.if_modified_since
    return since is not None and found.modified.replace(microsecond=0) <= since


class _Unsatisfiable(Exception):
    pass


def _byte_range(request: web.Request, found: MediaFile) -> tuple[int, int] | None:
    """[start, stop) of the one range asked for, or None for the whole file."""
    if hdrs.RANGE not in request.headers:
        return None
    if_range = request.headers.get(hdrs.IF_RANGE)
    if if_range is not None and if_range not in (f'"{found.etag}"', _http_date(found)):
        return None  # the client's part is of another version: send it all
    try:
        wanted = request.http_range
    except ValueError:
        raise _Unsatisfiable from None
    start, stop = wanted.start, wanted.stop
    if start is None:
        start = 0
    if start < 0:  # the last -start bytes
        start, stop = max(found.size + start, 0), found.size
    stop = found.size if stop is None else min(stop, found.size)
    if start >= found.size or start >= stop:
        raise _Unsatisfiable
    return start, stop


def _http_date(found: MediaFile) -> str:
    return format_datetime(found.modified.replace(microsecond=0), usegmt=True)


async def _part(chunks: AsyncIterator[bytes], start: int, stop: int) -> AsyncIterator[bytes]:
    offset = 0
    async for chunk in chunks:
        first, last = max(start - offset, 0), min(stop - offset, len(chunk))
        offset += len(chunk)
        if first < last:
            yield chunk[first:last]
        if offset >= stop:
            return


async def media_response(
    request: web.Request, found: MediaFile, headers: dict[str, str]
) -> web.StreamResponse:
    response = web.StreamResponse(headers=headers)
    response.etag = found.etag
    response.last_modified = found.modified
    if _not_modified(request, found):
        response.set_status(304)
        await response.prepare(request)
        return response
    try:
        part = _byte_range(request, found)
    except _Unsatisfiable:
        return error_response(416, "range_not_satisfiable",
                              f"this file has {found.size} bytes",
                              {**headers, hdrs.CONTENT_RANGE: f"bytes */{found.size}"})
    chunks = found.chunks
    response.content_type = found.content_type
    response.headers[hdrs.ACCEPT_RANGES] = "bytes"
    if part is None:
        response.content_length = found.size
    else:
        start, stop = part
        response.set_status(206)
        response.headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{stop - 1}/{found.size}"
        response.content_length = stop - start
        chunks = _part(chunks, start, stop)
    await response.prepare(request)
    if request.method != hdrs.METH_HEAD:
        async for chunk in chunks:
            await response.write(chunk)
    await response.write_eof()
    return response
