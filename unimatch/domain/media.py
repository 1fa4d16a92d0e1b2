"""Uploaded photos: decoded to prove they are images, re-encoded clean.

A photo is accepted only when Pillow decodes it fully as JPEG, PNG or WebP
(the declared type and file name count for nothing). It is then turned
upright by its EXIF orientation, scaled down to `MAX_SIDE` and re-encoded as
a JPEG that carries no metadata at all: no EXIF (where phones put GPS
coordinates), no ICC profile, no text chunks. Location data in a dating-app
photo is a safety risk, so nothing of the original file survives but pixels.

Decoding is CPU-bound and memory-hungry: callers run `process_photo` in a
bounded pool (`PHOTO_DECODE_WORKERS`), and the size is checked from the
header before a single pixel is decoded. At most `MAX_PIXELS` (12 MP, a
phone camera's full frame) are ever decoded, about 36 MB as RGB: a 50 KB PNG
that claims 40 MP of one colour is refused at its header. A JPEG is decoded
in draft mode, scaled down by its own decoder (by 1/2, 1/4 or 1/8) to the
smallest size still at least the photo's final size, so a 48 MP camera JPEG decodes as
12 MP or less; its header may claim up to `MAX_JPEG_PIXELS`.
"""

from __future__ import annotations

import io
import math
import re
import secrets
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from unimatch.domain.errors import UnsupportedMedia, ValidationFailed

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")
# Pixels decoded at most: a 5 MB file can claim a gigapixel canvas.
MAX_PIXELS = 12_000_000
# A JPEG's header may claim more: draft mode decodes it reduced (below
# Pillow's own decompression-bomb threshold of 89 MP).
MAX_JPEG_PIXELS = 80_000_000
MAX_SIDE = 2048
JPEG_QUALITY = 85
OUTPUT_CONTENT_TYPE = "image/jpeg"
OUTPUT_SUFFIX = ".jpg"
# What a stored name's suffix is served as.
CONTENT_TYPES = {".jpg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}

# Names we generate: 32 hex digits and a known suffix. Anything else under
# /media is not ours to serve.
MEDIA_NAME = re.compile(r"^[0-9a-f]{32}\.(jpg|png|webp)$")


@dataclass(frozen=True)
class CleanPhoto:
    data: bytes
    width: int
    height: int
    content_type: str = OUTPUT_CONTENT_TYPE
    suffix: str = OUTPUT_SUFFIX


def _unsupported() -> UnsupportedMedia:
    return UnsupportedMedia(
        "not a JPEG, PNG or WebP image", code="unsupported_media_type"
    )


def _decode(data: bytes) -> Image.Image:
    try:
        # `verify` checks the file's structure but leaves the image unusable,
        # so it is opened twice; `load` then decodes every pixel.
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as probe:
            _check_header(probe)
            probe.verify()
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        _check_header(image)
        if image.format == "JPEG":
            image.draft(image.mode if image.mode in ("L", "RGB") else "RGB",
                        _thumbnail_size(image.size))
        # What will actually be decoded (after draft mode, for a JPEG).
        _check_size(image.size, MAX_PIXELS)
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels() from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise _unsupported() from None
    return image


def _too_many_pixels() -> ValidationFailed:
    return ValidationFailed(
        {"photo": [f"image too large: at most {MAX_PIXELS:,} pixels"]}, code="image_too_large"
    )


def _check_size(size: tuple[int, int], limit: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise _unsupported()
    if width * height > limit:
        raise _too_many_pixels()


def _thumbnail_size(size: tuple[int, int]) -> tuple[int, int]:
    """The size the photo is scaled to: its longer side at most `MAX_SIDE`.
    Draft mode decodes no smaller than this."""
    width, height = size
    ratio = min(1.0, MAX_SIDE / max(width, height))
    return max(1, math.ceil(width * ratio)), max(1, math.ceil(height * ratio))


def _check_header(image: Image.Image) -> None:
    _check_size(image.size, MAX_JPEG_PIXELS if image.format == "JPEG" else MAX_PIXELS)


def process_photo(data: bytes) -> CleanPhoto:
    """Decode `data` and re-encode it without metadata. Raises
    `UnsupportedMedia` for anything that is not a decodable JPEG, PNG or WebP."""
    image = _decode(data)
    try:
        upright = ImageOps.exif_transpose(image)
        if upright.mode not in ("RGB", "L"):
            rgba = upright.convert("RGBA")
            # Transparent areas become white, not black, in a JPEG.
            background = Image.new("RGB", rgba.size, (255, 255, 255))
            background.paste(rgba, mask=rgba.getchannel("A"))
            upright = background
        upright.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        # A fresh image holds pixels only: no `info` (EXIF, ICC, text) to leak.
        clean = Image.new(upright.mode, upright.size)
        clean.paste(upright)
        out = io.BytesIO()
        clean.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    except (OSError, ValueError) as exc:
        raise _unsupported() from exc
    finally:
        image.close()
    return CleanPhoto(out.getvalue(), clean.width, clean.height)


def content_type_of(name: str) -> str:
    return CONTENT_TYPES.get(name[name.rfind("."):], "application/octet-stream")


def new_media_name(suffix: str = OUTPUT_SUFFIX) -> str:
    return secrets.token_hex(16) + suffix
