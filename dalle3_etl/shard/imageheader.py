"""Image width/height from the header bytes only (used when a JSON lacks them), and the signature check.

Pillow identifies the format and parses just the header on `Image.open`; nothing is decoded. WebP is
the exception: Pillow reads a whole WebP file to open it, so its canvas size is read here from the
first 30 bytes (the same fields Pillow's own size check reads).

The converter probes a view of the image member's first `PROBE_LIMIT` bytes, whatever the source:
`probe_range` for a seekable tar or a staged copy (random access by `pread`), `probe_stream` for a
member streaming past (a .tar.gz, a pipe). Both show Pillow the same bytes through the same steps
(`_probe`), so a sample gets the same result from every source; a JPEG whose SOF marker sits behind a
large EXIF or comment block is measured from a stream as from a file.

`signature_problem` checks an image member's first bytes against the format its extension names
(magic bytes only, no decoding).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from typing import BinaryIO

from PIL import Image

FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF")  # opened with Pillow; WebP is read here (see above)
#: How far into an image member a header is looked for (the probe's memory bound: see `probe_stream`).
PROBE_LIMIT = 16 << 20
PROBE_READ_BYTES = 64 * 1024  # one read usually holds the whole header, even behind EXIF
SIGNATURE_BYTES = 16  # what `signature_problem` needs to see

#: Format each image extension (lower case) names, and the signatures (magic bytes) of each format.
EXT_FORMAT = {
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "png": "PNG",
    "webp": "WebP",
    "gif": "GIF",
    "bmp": "BMP",
    "tif": "TIFF",
    "tiff": "TIFF",
}
_MAGIC = {
    "JPEG": (b"\xff\xd8\xff",),
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "WebP": (b"RIFF",),
    "GIF": (b"GIF87a", b"GIF89a"),
    "BMP": (b"BM",),
    "TIFF": (b"II*\x00", b"MM\x00*"),
}
_EXT_MAGIC = {ext: _MAGIC[fmt] for ext, fmt in EXT_FORMAT.items()}


def _has_signature(fmt: str, head: bytes) -> bool:
    return head.startswith(_MAGIC[fmt]) and (fmt != "WebP" or head[8:12] == b"WEBP")


def sniff(head: bytes) -> str | None:
    """The image format whose signature `head` starts with, or None."""
    for fmt in _MAGIC:
        if _has_signature(fmt, head):
            return fmt
    return None


def signature_problem(ext: str, head: bytes) -> str | None:
    """None when `head` (the member's first `SIGNATURE_BYTES`) starts with the signature of the format
    extension `ext` (lower case, in EXT_FORMAT) names; else what is wrong, for a reject's detail."""
    if head.startswith(_EXT_MAGIC[ext]) and (ext != "webp" or head[8:12] == b"WEBP"):
        return None
    if not head:
        return "the image member is empty (0 bytes)"
    seen = sniff(head)
    looks = f"they are a {seen} signature" if seen else f"they begin {head[:12]!r}, no image signature"
    return f"its first bytes are not a {EXT_FORMAT[ext]} signature as the extension '.{ext}' says: {looks}"


def _webp_size(head: bytes) -> tuple[int, int] | None:
    """Canvas size of a WebP from its first 30 bytes (lossy 'VP8 ', lossless 'VP8L', extended 'VP8X')."""
    if len(head) < 30:
        return None
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


def image_size(fp: BinaryIO) -> tuple[int, int] | None:
    """(width, height) from the header of the image `fp` holds (from its position 0), or None when it
    cannot be read as JPEG/PNG/WebP/GIF/BMP/TIFF."""
    try:
        head = fp.read(30)
        if _has_signature("WebP", head):
            size = _webp_size(head)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(fp, formats=FORMATS) as im:  # seeks back to 0 itself
                    size = im.size
    except Exception:  # Pillow raises many types for bad headers; all mean "unreadable"
        return None
    if size is not None and size[0] > 0 and size[1] > 0:
        return int(size[0]), int(size[1])
    return None


def image_size_from_bytes(data: bytes) -> tuple[int, int] | None:
    return image_size(io.BytesIO(data))


class RangeReader(io.RawIOBase):
    """A read-only, seekable view of `size` bytes at `offset` of a file, read with a `pread` callable.

    An exception from `pread` is kept in `failure` (Pillow would turn it into "unreadable")."""

    def __init__(self, pread, offset: int, size: int):
        self._pread = pread
        self._offset = offset
        self._size = size
        self._pos = 0
        self.failure: Exception | None = None

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
        try:
            data = self._pread(self._offset + self._pos, n)
        except Exception as exc:
            self.failure = exc
            raise
        buf[: len(data)] = data
        self._pos += len(data)
        return len(data)


class StreamView(RangeReader):
    """A seekable view of the next `size` bytes of a forward-only stream (`read(n)`, e.g. a tar member
    being streamed), for Pillow. Bytes are taken from the stream only as far as the view is read (in
    `PROBE_READ_BYTES` steps) and kept, so Pillow may seek back; `head` holds bytes already taken."""

    def __init__(self, read: Callable[[int], bytes], size: int, head: bytes = b""):
        super().__init__(self._pread_kept, 0, size)
        self._read = read
        self._kept = bytearray(head)

    def _pread_kept(self, offset: int, n: int) -> bytes:
        end = offset + n
        kept = self._kept
        if end > len(kept):
            want = min(self._size, max(end, len(kept) + PROBE_READ_BYTES)) - len(kept)
            kept += self._read(want)
        return kept[offset:end]


def probe_range(pread: Callable[[int, int], bytes], offset: int, size: int) -> tuple[int, int] | None:
    """Header size of the image of `size` bytes at `offset` of a random-access file (`pread`)."""
    limit = min(size, PROBE_LIMIT)
    first = pread(offset, min(limit, PROBE_READ_BYTES))
    return _probe(first, limit, lambda: RangeReader(pread, offset, limit))


def probe_stream(read: Callable[[int], bytes], size: int, head: bytes = b"") -> tuple[int, int] | None:
    """Header size of the image of `size` bytes streaming past (`read`; `head`: its first bytes, already
    read). Reads only as far as Pillow needs; the caller skips the rest.

    Memory: the bytes read, at most min(size, PROBE_LIMIT) (64 KiB for usual headers), plus what Pillow
    keeps of the header it parsed (JPEG APP/COM segments: at most as much again)."""
    limit = min(size, PROBE_LIMIT)
    first = head + read(max(0, min(limit, PROBE_READ_BYTES) - len(head)))
    return _probe(first, limit, lambda: StreamView(read, limit, first))


def _probe(first: bytes, limit: int, view: Callable[[], RangeReader]) -> tuple[int, int] | None:
    """The same steps for every source, so every source gives the same answer: Pillow parses `first` (the
    image's first PROBE_READ_BYTES) from memory, fast, as nearly every header is there; when that fails
    and the image goes on, it reads a `view` of the image's first `limit` bytes as far as it needs. An
    error reading the view is raised, not taken for "unreadable"."""
    found = image_size(io.BytesIO(first))
    if found is None and len(first) < limit:
        fp = view()
        found = image_size(io.BufferedReader(fp, buffer_size=PROBE_READ_BYTES))  # Pillow's small reads, in C
        if fp.failure is not None:
            raise fp.failure
    return found


# Pillow refuses very large images by default ("decompression bomb"); we only read headers and
# enforce our own max_dimension, so the pixel-count guard would only hide legitimate sizes.
Image.MAX_IMAGE_PIXELS = None
