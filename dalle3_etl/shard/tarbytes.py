"""The bytes of a tar archive (stdlib only): `TarBytes`, the low level of `tarstream.TarReader`.

Bytes are read forward (`_take`, `_skip`) and, in seekable mode, at random (`pread`, `copy_range`: member
data copied later without disturbing the forward reading). Two modes:

* seekable (a regular file): reads go through a small read-ahead window with `os.pread` (one syscall
  usually covers a JSON member's header, its data and the next header); bytes that are not read are
  skipped by moving an offset, never read.
* stream (a pipe, an HTTP body, a gzip stream: only `.read()`): 1 MiB buffered reads, skipped bytes are
  read and discarded in chunks; memory stays bounded.

`TarReader` extends `TarBytes` (a base class, not an attribute: the header walk, the hot path, reads the
window and the offset without an indirection).
"""

from __future__ import annotations

import errno
import io
import os
import stat
from collections.abc import Callable

from dalle3_etl.shard.tarheader import TarFormatError

STREAM_CHUNK = 1 << 20  # stream mode read size
SEEK_WINDOW = 8 << 10  # seekable mode read-ahead window for headers and small member data
#: Use os.copy_file_range in `TarBytes.copy_range` (tests monkeypatch this to False to force the fallback).
USE_COPY_FILE_RANGE = hasattr(os, "copy_file_range")
COPY_CHUNK = 1 << 20  # pread/write fallback and copy_to chunk

_CFR_FALLBACK_ERRNOS = frozenset(
    e
    for e in (
        errno.EXDEV,
        errno.ENOSYS,
        errno.EINVAL,
        errno.EOPNOTSUPP,
        getattr(errno, "ENOTSUP", None),
        errno.EBADF,
    )  # EBADF: destination opened with O_APPEND; the fallback reports a real bad fd
    if e is not None
)


def read_full(f, n: int) -> bytes:
    """Read exactly n bytes from f, fewer only at EOF (pipes return short reads)."""
    data = f.read(n)
    if data is None:
        data = b""
    if len(data) >= n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = f.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _compression_wrappers() -> tuple[type, ...]:
    import bz2
    import gzip

    types: list[type] = [gzip.GzipFile, bz2.BZ2File]
    try:
        import lzma

        types.append(lzma.LZMAFile)
    except ImportError:  # pragma: no cover - python built without lzma
        pass
    return tuple(types)


def autodetect_seekable(f) -> bool:
    if isinstance(f, _compression_wrappers()):
        return False  # they claim seekable() but seeking decompresses; size needs a full pass
    try:
        if not f.seekable():
            return False
        f.tell()
        return True
    except (AttributeError, OSError, ValueError):
        return False


def _regular_file_fd(f) -> tuple[int, int] | None:
    """(fd, size) when f is backed by a regular file we can pread; else None."""
    if not hasattr(os, "pread"):
        return None
    raw = f.raw if isinstance(f, (io.BufferedReader, io.BufferedRandom)) else f
    if not isinstance(raw, io.FileIO):
        return None
    try:
        fd = raw.fileno()
        st = os.fstat(fd)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return fd, st.st_size


#: `os.open` flags of every output file: a new file, never an existing name truncated or replaced.
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL


def copy_fd_range(
    src_fd: int | None, offset: int, size: int, dst_fd: int, pread: Callable[[int, int], bytes], *, fast: bool = True
) -> tuple[int, bool]:
    """Copy `size` bytes of `src_fd` at `offset` to `dst_fd` at its current position: os.copy_file_range while it
    works (`fast`, and USE_COPY_FILE_RANGE: tests turn it off to force the portable path), then `pread(at, n)`
    and write in COPY_CHUNK pieces (`pread` raises, naming its input, where the bytes end). Returns (bytes
    copied, whether copy_file_range may be tried again on this input). Tar members and folder files share it."""
    done = 0
    if USE_COPY_FILE_RANGE and fast and src_fd is not None and size and hasattr(os, "copy_file_range"):
        try:
            while done < size:
                k = os.copy_file_range(src_fd, dst_fd, size - done, offset + done)
                if k == 0:
                    break  # the input shrank under us: `pread` reports it
                done += k
        except OSError as exc:
            if exc.errno not in _CFR_FALLBACK_ERRNOS:
                raise
            fast = False  # not again for this input
    while done < size:
        chunk = pread(offset + done, min(COPY_CHUNK, size - done))
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst_fd, view) :]
        done += len(chunk)
    return done, fast


class TarBytes:
    """An archive's bytes from a file object: `_take` and `_skip` move forward from `_cur`, the offset of
    the next unconsumed byte (absolute in the file object: a seekable one may start the archive at its
    current position, `_start`; a stream counts from 0); `pread` and `copy_range` read at any offset."""

    def __init__(self, fileobj, seekable: bool | None):
        self._f = fileobj
        if seekable is None:
            seekable = autodetect_seekable(fileobj)
        self.seekable = bool(seekable)
        self._fd: int | None = None
        self._size = -1
        self._start = 0
        if self.seekable:
            self._start = fileobj.tell()
            fdsize = _regular_file_fd(fileobj)
            if fdsize is not None:
                self._fd, self._size = fdsize
            else:
                self._size = fileobj.seek(0, os.SEEK_END)
                fileobj.seek(self._start)
        self._win = b""  # seekable: read-ahead window ...
        self._win_off = 0  # ... starting at this offset
        self._sbuf = b""  # stream: buffered bytes ...
        self._spos = 0  # ... of which those before this index are consumed
        self._scratch: memoryview | None = None
        self._cur = self._start  # offset of the next unconsumed archive byte
        self._cfr_ok = True  # os.copy_file_range worked, or was not tried yet

    @property
    def position(self) -> int:
        """Archive bytes consumed or skipped so far."""
        return self._cur - self._start

    def pread(self, offset: int, n: int) -> bytes:
        """Random-access read of up to n archive bytes at offset (seekable only; iteration unaffected)."""
        self._need_seekable("pread")
        if offset < 0 or n < 0:
            raise ValueError("offset and n must be >= 0")
        return self._raw_pread(offset, n)

    def copy_range(self, offset: int, size: int, dst_fd: int) -> int:
        """Copy `size` archive bytes at `offset` to the open fd `dst_fd` at its current position.

        Uses os.copy_file_range when available (falls back to a pread/write loop in 1 MiB chunks,
        also on EXDEV/ENOSYS/EINVAL/EOPNOTSUPP). Raises TarFormatError if the archive is too short."""
        self._need_seekable("copy_range")
        if offset < 0 or size < 0:
            raise ValueError("offset and size must be >= 0")
        if offset + size > self._size:
            raise TarFormatError(
                f"cannot copy {size} bytes at offset {offset}: the archive ends at {self._size}", offset=offset
            )

        def pread(at: int, n: int) -> bytes:
            chunk = self._raw_pread(at, n)
            if not chunk:
                raise TarFormatError(
                    f"cannot copy {size} bytes at offset {offset}: the archive ends at {at}", offset=at
                )
            return chunk

        done, self._cfr_ok = copy_fd_range(self._fd, offset, size, dst_fd, pread, fast=self._cfr_ok)
        return done

    def place(self, offset: int, dst: str, created: list[str], size: int) -> None:
        """The image member of `size` bytes at `offset` as the new file `dst` (EEXIST when the name is taken),
        appended to `created` once it exists. `folderstream.FolderReader.place` links a folder's file instead."""
        fd = os.open(dst, NEW_FILE, 0o644)
        created.append(dst)
        try:
            self.copy_range(offset, size, fd)
        finally:
            os.close(fd)

    # -- low level I/O ------------------------------------------------------------------------------

    def _need_seekable(self, what: str) -> None:
        if not self.seekable:
            raise io.UnsupportedOperation(f"{what} needs a seekable archive (this one is read as a stream)")

    def _raw_pread(self, off: int, n: int) -> bytes:
        if self._fd is not None:
            data = os.pread(self._fd, n, off)
            if len(data) >= n or not data:
                return data
            parts = [data]
            got = len(data)
            while got < n:
                more = os.pread(self._fd, n - got, off + got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            return b"".join(parts)
        self._f.seek(off)
        return read_full(self._f, n)

    def _window_read(self, off: int, n: int) -> bytes:
        """Seekable: n bytes at off (fewer at EOF), from the read-ahead window when possible."""
        i = off - self._win_off
        w = self._win
        if i >= 0 and i + n <= len(w):
            return w[i : i + n]
        if n > SEEK_WINDOW // 2:
            return self._raw_pread(off, n)
        w = self._win = self._raw_pread(off, SEEK_WINDOW)
        self._win_off = off
        return w[:n]

    def _stake(self, n: int) -> bytes:
        """Stream: take n bytes (fewer at EOF) and advance."""
        buf = self._sbuf
        pos = self._spos
        end = pos + n
        if end <= len(buf):
            self._spos = end
            self._cur += n
            return buf[pos:end]
        parts = [buf[pos:]] if pos < len(buf) else []
        got = len(buf) - pos
        self._sbuf = b""
        self._spos = 0
        read = self._f.read
        while got < n:
            need = n - got
            data = read(need if need >= STREAM_CHUNK else STREAM_CHUNK)
            if not data:
                break
            if len(data) > need:
                parts.append(data[:need])
                self._sbuf = data
                self._spos = need
                got = n
                break
            parts.append(data)
            got += len(data)
        self._cur += got
        return b"".join(parts)

    def _sskip(self, n: int) -> int:
        """Stream: skip n bytes by reading and discarding; returns bytes skipped (fewer at EOF)."""
        avail = len(self._sbuf) - self._spos
        if n <= avail:
            self._spos += n
            self._cur += n
            return n
        skipped = avail
        self._sbuf = b""
        self._spos = 0
        need = n - avail
        readinto = getattr(self._f, "readinto", None)
        while need > 0:
            if need >= STREAM_CHUNK and readinto is not None:
                if self._scratch is None:
                    self._scratch = memoryview(bytearray(STREAM_CHUNK))
                k = readinto(self._scratch) or 0
            else:
                data = self._f.read(STREAM_CHUNK)
                k = len(data) if data else 0
                if k > need:  # keep the tail: it holds the next header(s)
                    self._sbuf = data
                    self._spos = need
                    k = need
            if k == 0:
                break
            need -= k
            skipped += k
        self._cur += skipped
        return skipped

    def _take(self, n: int) -> bytes:
        if self.seekable:
            data = self._window_read(self._cur, n)
            self._cur += len(data)
            return data
        return self._stake(n)

    def _skip(self, n: int) -> int:
        if self.seekable:
            k = max(0, min(n, self._size - self._cur))
            self._cur += k
            return k
        return self._sskip(n)
