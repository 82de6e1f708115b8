"""Synthetic images: valid JPEG/PNG of a given size, padded with random bytes to about a given size (JPEG
padding in COM segments before the SOF marker, optionally led by a decoy SOF; PNG padding in a private
chunk), and the size/format mix of the corpus."""

from __future__ import annotations

import hashlib
import io
import random
import struct
import zlib
from functools import cache

_DALLE_SIZES = ((1024, 1024), (1792, 1024), (1024, 1792))
_OTHER_SIZES = ((512, 768), (1344, 768), (896, 1152), (2048, 2048), (768, 512), (1152, 896))
_SIZE_CHOICES = _DALLE_SIZES + _OTHER_SIZES
_SIZE_WEIGHTS = (60, 14, 14) + (2,) * len(_OTHER_SIZES)  # 88 % DALLE-3 sizes, 12 % others

_EXT_CHOICES = ("jpg", "jpeg", "png")
_EXT_WEIGHTS = (70, 10, 20)
_FORMAT_OF_EXT = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png"}


def _norm_fmt(fmt: str) -> str:
    f = fmt.lower().lstrip(".")
    if f in ("jpg", "jpeg"):
        return "jpeg"
    if f == "png":
        return "png"
    raise ValueError(f"unsupported image format {fmt!r} (jpeg/jpg/png)")


@cache
def _base_image(fmt: str, width: int, height: int, progressive: bool) -> tuple[bytes, str]:
    """Encode a solid-colour image once per (format, size, progressive); return (bytes, md5 of its pixels)."""
    from PIL import Image  # imported lazily: the converter does not need Pillow to import this module

    colour = ((width * 7 + height) % 256, (width + height * 3) % 256, (width ^ height) % 256)
    img = Image.new("RGB", (width, height), colour)
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.save(buf, "JPEG", quality=50, optimize=True, progressive=progressive)
    else:
        img.save(buf, "PNG")
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        pil_md5 = hashlib.md5(im.tobytes()).hexdigest()
    return data, pil_md5


def _jpeg_insert_point(data: bytes) -> int:
    """Offset just after SOI and the APP0/APPn segments that Pillow writes first (before DQT/SOF)."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF and 0xE0 <= data[pos + 1] <= 0xEF:
        (seglen,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        pos += 2 + seglen
    return pos


def _jpeg_com_segments(payload: bytes) -> bytes:
    out = bytearray()
    for i in range(0, len(payload), 65533):
        chunk = payload[i : i + 65533]
        out += b"\xff\xfe" + struct.pack(">H", len(chunk) + 2) + chunk
    return bytes(out)


def _png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def make_image(
    fmt: str,
    width: int,
    height: int,
    nbytes: int,
    rng: random.Random,
    *,
    progressive: bool = False,
    decoy: bool = False,
    tag: bytes = b"",
) -> bytes:
    """A valid image of the given format and size, padded to about ``nbytes`` with random bytes.

    ``fmt``: "jpeg"/"jpg"/"png".  JPEG padding goes into COM segments placed BEFORE the DQT/SOF markers
    (a header reader must walk the segments); with ``decoy=True`` the padding starts with a byte sequence
    that looks like an SOF0 marker of a wrong size (like an EXIF thumbnail would).  PNG padding goes into a
    private ancillary chunk ``paDd`` before IEND.  ``tag`` is put first in the padding (use it to make
    bytes unique).  At least 16 random bytes are always added, so two calls never return the same bytes.
    The result opens with Pillow and ``Image.open(...).size == (width, height)``.
    """
    f = _norm_fmt(fmt)
    base, _ = _base_image(f, int(width), int(height), bool(progressive) and f == "jpeg")
    return _pad_image(f, base, nbytes, rng, decoy=decoy, tag=tag, width=width, height=height)


def _pad_image(
    f: str, base: bytes, nbytes: int, rng: random.Random, *, decoy: bool, tag: bytes, width: int, height: int
) -> bytes:
    if f == "jpeg":
        head = b""
        if decoy:
            # Looks like "FF C0 len 8 H W 3 ..." with a wrong size (e.g. a thumbnail's SOF).
            head = b"\xff\xc0\x00\x11\x08" + struct.pack(">HH", max(1, height // 8), max(1, width // 8)) + b"\x03"
        overhead = len(base) + 4 * (1 + max(0, nbytes - len(base)) // 65533)
        nrand = max(16, nbytes - overhead - len(tag) - len(head))
        payload = tag + head + rng.randbytes(nrand)
        at = _jpeg_insert_point(base)
        return base[:at] + _jpeg_com_segments(payload) + base[at:]
    # PNG: IEND chunk is the last 12 bytes.
    nrand = max(16, nbytes - len(base) - 12 - len(tag))
    payload = tag + rng.randbytes(nrand)
    assert base[-12:-8] == b"\x00\x00\x00\x00" and base[-8:-4] == b"IEND"
    return base[:-12] + _png_chunk(b"paDd", payload) + base[-12:]
