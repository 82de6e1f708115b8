"""Image width/height from the header bytes only (used when a JSON lacks them).

Pillow identifies the format and parses just the header on `Image.open`; nothing is decoded. The
caller hands us a file object positioned at the image's first byte (a view over the tar member, or a
staged file), so JPEGs whose SOF marker sits behind a large EXIF block are still measured.
"""

from __future__ import annotations

import io
import warnings
from typing import BinaryIO

from PIL import Image

FORMATS = ("JPEG", "PNG", "WEBP", "GIF")


def image_size(fp: BinaryIO) -> tuple[int, int] | None:
    """(width, height) from the header, or None when it cannot be read as JPEG/PNG/WebP/GIF."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(fp, formats=FORMATS) as im:
                width, height = im.size
    except Exception:  # Pillow raises many types for bad headers; all mean "unreadable"
        return None
    if width > 0 and height > 0:
        return int(width), int(height)
    return None


def image_size_from_bytes(data: bytes) -> tuple[int, int] | None:
    return image_size(io.BytesIO(data))


class RangeReader(io.RawIOBase):
    """A read-only, seekable view of `size` bytes at `offset` of a file, read with a `pread` callable."""

    def __init__(self, pread, offset: int, size: int):
        self._pread = pread
        self._offset = offset
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            pos += self._pos
        elif whence == io.SEEK_END:
            pos += self._size
        self._pos = max(0, min(pos, self._size))
        return self._pos

    def readinto(self, buf) -> int:
        n = min(len(buf), self._size - self._pos)
        if n <= 0:
            return 0
        data = self._pread(self._offset + self._pos, n)
        buf[: len(data)] = data
        self._pos += len(data)
        return len(data)


# Pillow refuses very large images by default ("decompression bomb"); we only read headers and
# enforce our own max_dimension, so the pixel-count guard would only hide legitimate sizes.
Image.MAX_IMAGE_PIXELS = None
