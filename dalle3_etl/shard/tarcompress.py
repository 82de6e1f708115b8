"""Opening a possibly-compressed tar archive: `open_tar` (gzip, bzip2, xz; zstd is refused with a hint).

The first bytes are sniffed; a compressed archive is read as a stream through `_Decompressed`, which turns
the decompressor's errors about damaged data into `TarFormatError`, so a damaged .tar.gz is reported like a
damaged .tar: the members before the damage are kept.
"""

from __future__ import annotations

from dalle3_etl.shard.tarbytes import COPY_CHUNK, autodetect_seekable, read_full
from dalle3_etl.shard.tarheader import TarFormatError
from dalle3_etl.shard.tarstream import TarReader

__all__ = ["open_tar"]


class _PeekedStream:
    """A read-only stream whose first bytes were already read: gives them back first."""

    def __init__(self, head: bytes, f):
        self._head = head
        self._f = f

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        head = self._head
        if head:
            if n is None or n < 0:
                self._head = b""
                return head + (self._f.read() or b"")
            if n <= len(head):
                self._head = head[n:]
                return head[:n]
            self._head = b""
            return head  # a short read, as streams may return
        return self._f.read(n)


def _is_data_error(exc: BaseException) -> bool:
    """True when a decompressor's exception is about the compressed data (not an I/O error of the source)."""
    import zlib

    kinds: list[type] = [EOFError, zlib.error]
    try:
        import gzip

        kinds.append(gzip.BadGzipFile)
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    try:
        import lzma

        kinds.append(lzma.LZMAError)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, tuple(kinds)):
        return True
    # bz2 reports damaged data as a plain OSError("Invalid data stream") without an errno
    return type(exc) is OSError and exc.errno is None


class _Decompressed:
    """A decompression wrapper whose errors about damaged compressed data become `TarFormatError`
    (so a damaged .tar.gz is reported like a damaged .tar: good members before the damage are kept)."""

    def __init__(self, wrapper, kind: str):
        self._w = wrapper
        self.kind = kind
        self.reader: TarReader | None = None

    def readable(self) -> bool:
        return True

    def _damaged(self, exc: BaseException) -> TarFormatError:
        offset, member, where = self.reader.damage_context() if self.reader is not None else (0, None, "")
        return TarFormatError(
            f"{self.kind} data is damaged after {offset} decompressed bytes ({where}): {exc or type(exc).__name__}",
            offset=offset,
            member=member,
        )

    # read1/readinto1: hand over what is decompressed as soon as it is, so the members before a damage
    # are yielded (a full read(1 MiB) would raise and drop up to 1 MiB decompressed before the damage).
    def read(self, n: int = -1) -> bytes:
        try:
            return self._w.read1(n) if n is not None and n > 0 else self._w.read(n)
        except Exception as exc:
            if _is_data_error(exc):
                raise self._damaged(exc) from exc
            raise

    def readinto(self, buf) -> int:
        try:
            return self._w.readinto1(buf)
        except Exception as exc:
            if _is_data_error(exc):
                raise self._damaged(exc) from exc
            raise

    def drain(self) -> None:
        """Read to the end of the compressed stream (what follows the tar's end marker is padding), so a
        cut or corrupted trailer (CRC, length) is reported instead of passing unnoticed."""
        while self.read(COPY_CHUNK):
            pass

    def close(self) -> None:
        self._w.close()


def open_tar(fileobj, *, max_meta_bytes: int = 1 << 20) -> TarReader:
    """A TarReader for fileobj, decompressing gzip (also bzip2/xz) transparently in stream mode.

    Sniffs the first bytes; on a non-seekable stream they are given back through a peek buffer. Damaged
    compressed data raises `TarFormatError` like a damaged tar."""
    seekable = autodetect_seekable(fileobj)
    if seekable:
        pos = fileobj.tell()
        head = read_full(fileobj, 6)
        fileobj.seek(pos)
        src = fileobj
    else:
        head = read_full(fileobj, 6)
        src = _PeekedStream(head, fileobj)
    wrapper = None
    kind = ""
    if head[:2] == b"\x1f\x8b":
        import gzip

        wrapper, kind = gzip.GzipFile(fileobj=src, mode="rb"), "gzip"
    elif head[:3] == b"BZh" and head[3:4].isdigit():
        import bz2

        wrapper, kind = bz2.BZ2File(src, mode="rb"), "bzip2"
    elif head[:6] == b"\xfd7zXZ\x00":
        import lzma

        wrapper, kind = lzma.LZMAFile(src, mode="rb"), "xz"
    elif head[:4] == b"\x28\xb5\x2f\xfd":
        raise TarFormatError("zstd-compressed archive: not supported, decompress it first (zstd -d)", offset=0)
    if wrapper is not None:
        stream = _Decompressed(wrapper, kind)
        reader = TarReader(stream, seekable=False, max_meta_bytes=max_meta_bytes)
        stream.reader = reader
        reader.adopt(stream)
        return reader
    return TarReader(src, seekable=seekable, max_meta_bytes=max_meta_bytes)
