"""A safe, fast, streaming reader of tar members (stdlib only).

`TarReader` walks a tar archive header by header without keeping a list of members, so memory does
not grow with the shard. Two modes:

* seekable (a regular file): headers are read through a small read-ahead window with `os.pread`
  (one syscall usually covers a JSON member's header, its data and the next header); member bodies
  that are not read are skipped by moving an offset, never read. `pread` and `copy_range` give random
  access to member data later without disturbing iteration.
* stream (a pipe, an HTTP body, a gzip stream: only `.read()`): 1 MiB buffered reads, unread data
  is read and discarded in chunks; memory stays bounded.

Formats: v7, ustar (prefix field), GNU (``L``/``K`` long names, base-256 numbers, old sparse headers
are skipped over) and pax (``x``/``g`` records; ``path``, ``linkpath`` and ``size`` are honoured).
Meta records (``x``, ``g``, ``X``, ``L``, ``K``) describe the next member and are never yielded.

Meta records are bounded (``max_meta_bytes``, 1 MiB by default): the meta records chained before one
member (all of ``x``/``X``/``g``/``L``/``K`` between two members) may hold that many data bytes in total,
and the pax global headers of the whole archive that many too; past either cap the archive is damaged
(`TarFormatError`, before the header over the cap is read). Of every pax header only what is honoured is
kept (``path``, ``linkpath``, ``size`` and whether a ``GNU.sparse.*`` key is present), so a large global
header costs nothing per member and memory stays flat.

Every member carries `problem`: ``None`` when it is safe to use, else a short reason (absolute name,
``..``, link, device...). Structural damage raises `TarFormatError` after every member before the
damage has been yielded, so the caller keeps the good samples.

Differences from tarfile, on purpose: names are normalised ('./a//b' -> 'a/b'); `Member.size` is 0 for
links, directories, devices and fifos (tarfile stores no data for them either, but reports the header's
size field); a pax global header applies to every later member (POSIX; tarfile applies it only to
members that have a local pax header too); a lone zero block followed by more data raises instead of
silently ending the archive; a file that ends without the end-of-archive marker raises.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
from dataclasses import dataclass
from typing import Iterator
from zlib import adler32

__all__ = ["TarFormatError", "Member", "TarReader", "open_tar", "USE_COPY_FILE_RANGE"]

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
#: Use os.copy_file_range in `TarReader.copy_range` (tests monkeypatch this to False to force the fallback).
USE_COPY_FILE_RANGE = hasattr(os, "copy_file_range")
COPY_CHUNK = 1 << 20  # pread/write fallback and copy_to chunk
STREAM_CHUNK = 1 << 20  # stream mode read size
SEEK_WINDOW = 8 << 10  # seekable mode read-ahead window for headers and small member data

_CFR_FALLBACK_ERRNOS = frozenset(
    e for e in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", None),
                errno.EBADF)  # EBADF: destination opened with O_APPEND; the fallback reports a real bad fd
    if e is not None
)

_KINDS = {
    b"0": "file", b"\0": "file", b"7": "file",
    b"1": "hardlink", b"2": "symlink", b"3": "chardev", b"4": "blockdev", b"5": "dir", b"6": "fifo",
}
# tarfile (and GNU tar) store no data blocks for these types, whatever the size field says.
_NO_DATA_KINDS = frozenset(("hardlink", "symlink", "chardev", "blockdev", "dir", "fifo"))
_KIND_PROBLEMS = {
    "symlink": "symlink member", "hardlink": "hardlink member",
    "chardev": "device member", "blockdev": "device member", "fifo": "fifo member",
}
_PAX_LOCAL = (b"x", b"X")  # 'X': Solaris extended header, same format
_META_TYPES = frozenset((b"x", b"X", b"g", b"L", b"K"))
_META_NAMES = {b"x": "pax header", b"X": "pax header", b"g": "pax global header",
               b"L": "GNU long-name record", b"K": "GNU long-link record"}
_POSIX_MAGIC = b"ustar\x0000"
# The pax keywords a member's resolution reads; `_parse_pax` keeps only these. Any GNU.sparse.* keyword is
# kept as `_SPARSE` (only its presence matters: the member is refused as sparse).
_PAX_HONOURED = frozenset((b"path", b"linkpath", b"size"))
_SPARSE_PREFIX = b"GNU.sparse."
_SPARSE = b"GNU.sparse.*"
_CTRL_RE = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE_RE = re.compile(r"[A-Za-z]:")
# A name `_resolve_name` would return unchanged with no problem: ASCII, no empty component, no backslash,
# control character or ':' (drive). Components starting with '.' ('.', '..', '.x') take the full path.
_PLAIN_NAME_RE = re.compile(r"[A-Za-z0-9_+\-.,=@~% ]+(?:/[A-Za-z0-9_+\-.,=@~% ]+)*")


class TarFormatError(Exception):
    """Tar structure broken; reading the shard cannot continue past `offset`.

    `member` is the name of the member whose data or header was being read when the damage was found,
    when known; the message also names the last good member before a damaged header.
    """

    def __init__(self, message: str, *, offset: int, member: str | None = None):
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.member = member

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # keyword-only arguments: make it survive pickling (multiprocessing)
        return (_rebuild_error, (type(self), self.message, self.offset, self.member))


def _rebuild_error(cls, message, offset, member):
    return cls(message, offset=offset, member=member)


@dataclass(slots=True)
class Member:
    name: str  # resolved and normalised name (see module doc)
    size: int  # bytes of data stored in the archive for this member
    offset: int  # absolute offset of the member's data in the archive
    kind: str  # 'file' | 'dir' | 'symlink' | 'hardlink' | 'chardev' | 'blockdev' | 'fifo' | 'other'
    linkname: str = ""
    problem: str | None = None  # None if safe; else a short human reason why this member must not be used


# -- header field helpers --------------------------------------------------------------------------

def _nts(field: bytes) -> bytes:
    """Bytes up to the first NUL."""
    i = field.find(0)
    return field if i < 0 else field[:i]


def _nti(field: bytes) -> int:
    """A numeric header field: octal text (NUL/space padded) or GNU base-256 (first byte 0x80 / 0xff).

    Raises ValueError when the field is neither (same rules as tarfile.nti)."""
    first = field[0] if field else 0
    if first == 0x80 or first == 0xFF:
        n = int.from_bytes(field[1:], "big")
        if first == 0xFF:
            n -= 1 << (8 * (len(field) - 1))
        return n
    i = field.find(0)
    if i >= 0:
        field = field[:i]
    field = field.strip()
    if not field:
        return 0
    return int(field, 8)


def _header_sum(block: bytes) -> int:
    """Unsigned byte sum of a header with its checksum field taken as 8 spaces (what the field holds).

    adler32's low half is 1 + (byte sum mod 65521); each slice is short enough (<= 257 bytes) for
    the sum to be exact."""
    return (adler32(block[:148]) & 0xFFFF) + (adler32(block[156:400]) & 0xFFFF) \
        + (adler32(block[400:]) & 0xFFFF) - 3 + 256


def _checksum_ok(block: bytes) -> bool:
    """Header checksum check (unsigned, or the signed variant some old tars wrote)."""
    try:
        stored = _nti(block[148:156])
    except ValueError:
        return False
    unsigned = _header_sum(block)
    if stored == unsigned:
        return True
    high = sum(1 for b in block[:148] if b > 127) + sum(1 for b in block[156:] if b > 127)
    return stored == unsigned - 256 * high


def _decode(raw: bytes) -> tuple[str, bool]:
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", "surrogateescape"), False


def _is_plain_name(name: str) -> bool:
    """A name `_resolve_name` returns unchanged with no problem (for a file): see `_PLAIN_NAME_RE`."""
    return (len(name) <= 4096 and name[:1] != "." and "/." not in name
            and _PLAIN_NAME_RE.fullmatch(name) is not None)


def _resolve_name(name: str, utf8_ok: bool, kind: str) -> tuple[str, str | None]:
    """Normalise a member name ('./a//b' -> 'a/b') and say why it is unsafe, if it is."""
    if kind != "dir" and utf8_ok and _is_plain_name(name):
        return name, None  # the common case: a plain relative name (same result as below)
    absolute = name.startswith("/") or _DRIVE_RE.match(name) is not None
    parts = name.split("/")
    if not absolute and ("" in parts or "." in parts):
        parts = [p for p in parts if p and p != "."]
        name = "/".join(parts)
        if not name and kind == "dir":
            name = "."  # the archive root ('./'), as written by `tar -C dir .`
    if kind == "dir":
        return name, None  # the caller ignores directories
    if not utf8_ok:
        return name, "name is not valid UTF-8"
    if not name:
        return name, "empty name"
    if absolute:
        return name, "absolute name"
    if ".." in parts:
        return name, "name has a '..' component"
    if "\\" in name:
        return name, "name contains a backslash"
    if _CTRL_RE.search(name) is not None:
        return name, "name contains a control character"
    # The total bounds memory. A component over the file system's limit (255 bytes on most) is not a
    # problem of the tar: writing it fails (a `name_unusable` reject), and parquet-only runs keep it.
    nbytes = len(name) if name.isascii() else len(name.encode("utf-8", "surrogateescape"))
    if nbytes > 4096:
        return name, f"name is {nbytes} bytes long (limit 4096)"
    return name, None


def _parse_pax(data: bytes, where: int, describe: str) -> dict[bytes, bytes]:
    """Parse pax records '<len> <key>=<value>\\n' (every record is checked) and return the honoured ones
    (`_PAX_HONOURED`, and `_SPARSE` for any GNU.sparse.* keyword): at most four, whatever the header holds.
    `where` is the archive offset of `data`."""
    out: dict[bytes, bytes] = {}
    pos = 0
    n = len(data)
    while pos < n:
        if data[pos] == 0 and data.count(0, pos) == n - pos:
            break  # NUL padding after the last record (written by some tools)
        sp = data.find(b" ", pos, pos + 21)
        digits = data[pos:sp] if sp > pos else b""
        if not digits.isdigit():
            raise TarFormatError(f"malformed pax record at offset {where + pos} ({describe}): "
                                 f"no decimal length", offset=where + pos)
        length = int(digits)
        end = pos + length
        eq = data.find(b"=", sp + 1, end)
        if end > n or length <= sp - pos + 2 or data[end - 1] != 0x0A or eq <= sp + 1:
            raise TarFormatError(f"malformed pax record at offset {where + pos} ({describe}): "
                                 f"record of length {length} is not '<key>=<value>\\n' within the header",
                                 offset=where + pos)
        key = data[sp + 1:eq]
        if key in _PAX_HONOURED:
            out[key] = data[eq + 1:end - 1]
        elif key.startswith(_SPARSE_PREFIX):
            out[_SPARSE] = b""
        pos = end
    return out


def _read_full(f, n: int) -> bytes:
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


def _autodetect_seekable(f) -> bool:
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


# -- the reader ------------------------------------------------------------------------------------

class TarReader:
    """Iterate the members of a tar archive; see the module doc.

    Offsets (`Member.offset`, `pread`, `copy_range`, `TarFormatError.offset`) are absolute offsets in
    the file object (a seekable file object may start the archive at its current position; a stream
    counts from 0). `position` is the number of archive bytes consumed or skipped so far.
    """

    def __init__(self, fileobj, *, seekable: bool | None = None, max_meta_bytes: int = 1 << 20):
        """`max_meta_bytes` caps the data of the meta records before one member (in total) and of the pax
        global headers of the whole archive (in total); see the module doc."""
        self._f = fileobj
        self.max_meta_bytes = max_meta_bytes
        if seekable is None:
            seekable = _autodetect_seekable(fileobj)
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
        self._data_end = self._start  # end of the current member's data
        self._next_hdr = self._start  # offset of the next header
        self._member: Member | None = None
        self._last_name: str | None = None
        self._global_pax: dict[bytes, bytes] = {}  # the honoured records of the global headers so far
        self._global_bytes = 0  # data bytes of the pax global headers so far
        self._done = False
        self._cfr_ok = True
        self._owned: list = []  # wrappers created by open_tar, closed by close()

    # -- public API ---------------------------------------------------------------------------------

    @property
    def position(self) -> int:
        return self._cur - self._start

    def __iter__(self) -> Iterator[Member]:
        nxt = self._next
        while True:
            member = nxt()
            if member is None:
                return
            yield member

    def read(self, n: int = -1) -> bytes:
        """Up to n (all remaining if n < 0) bytes of the current member's data."""
        remaining = self._data_end - self._cur
        if remaining <= 0 or n == 0:
            return b""
        if n is None or n < 0 or n > remaining:
            n = remaining
        if self.seekable:
            data = self._window_read(self._cur, n)
            self._cur += len(data)
        else:
            data = self._stake(n)
        if len(data) < n:
            self._raise_truncated_data()
        return data

    def copy_to(self, dst) -> int:
        """Copy the rest of the current member's data into a writable binary file object."""
        total = 0
        while True:
            chunk = self.read(COPY_CHUNK)
            if not chunk:
                return total
            written = dst.write(chunk)
            if written is not None and written < len(chunk):  # raw file objects may write short
                view = memoryview(chunk)[written:]
                while view:
                    w = dst.write(view)
                    view = view[w:]
            total += len(chunk)

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
            raise TarFormatError(f"cannot copy {size} bytes at offset {offset}: the archive ends at {self._size}",
                                 offset=offset)
        done = 0
        if USE_COPY_FILE_RANGE and self._cfr_ok and self._fd is not None and size:
            try:
                while done < size:
                    k = os.copy_file_range(self._fd, dst_fd, size - done, offset + done)
                    if k == 0:
                        break  # file shrank under us: the fallback reports it
                    done += k
            except OSError as exc:
                if exc.errno not in _CFR_FALLBACK_ERRNOS:
                    raise
                self._cfr_ok = False  # don't try again for this archive
        while done < size:
            chunk = self._raw_pread(offset + done, min(COPY_CHUNK, size - done))
            if not chunk:
                raise TarFormatError(f"cannot copy {size} bytes at offset {offset}: the archive ends at "
                                     f"{offset + done}", offset=offset + done)
            view = memoryview(chunk)
            while view:
                view = view[os.write(dst_fd, view):]
            done += len(chunk)
        return done

    def close(self) -> None:
        """Close decompression wrappers created by open_tar (never the caller's file object)."""
        for obj in self._owned:
            obj.close()
        self._owned.clear()

    def __enter__(self) -> TarReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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
        return _read_full(self._f, n)

    def _window_read(self, off: int, n: int) -> bytes:
        """Seekable: n bytes at off (fewer at EOF), from the read-ahead window when possible."""
        i = off - self._win_off
        w = self._win
        if i >= 0 and i + n <= len(w):
            return w[i:i + n]
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

    # -- errors ---------------------------------------------------------------------------------------

    def _after(self) -> str:
        return f"after member {self._last_name!r}" if self._last_name is not None else "before any member"

    def _raise_truncated_data(self) -> None:
        m = self._member
        assert m is not None
        end = self._cur
        where = "file" if self.seekable else "stream"
        raise TarFormatError(f"truncated inside member {m.name!r} data (needs {m.size} bytes at offset "
                             f"{m.offset}, {where} ends at {end})", offset=end, member=m.name)

    # -- the header walk ------------------------------------------------------------------------------

    def _advance(self) -> None:
        """Move from wherever the caller left the current member to the next header."""
        target = self._next_hdr
        if self.seekable:
            if target > self._size:  # data was checked when the member was yielded: only padding is missing
                raise TarFormatError(f"archive ends inside the padding after member {self._last_name!r} "
                                     f"(next header expected at offset {target}, file ends at {self._size}); "
                                     f"truncated?", offset=self._size, member=None)
            self._cur = target
            return
        need = target - self._cur
        if need > 0 and self._sskip(need) < need:
            if self._cur < self._data_end:
                self._raise_truncated_data()
            raise TarFormatError(f"archive ends inside the padding after member {self._last_name!r} "
                                 f"(next header expected at offset {target}, stream ends at {self._cur}); "
                                 f"truncated?", offset=self._cur, member=None)

    def _next(self) -> Member | None:
        if self._done:
            return None
        if self._cur != self._next_hdr:
            self._advance()
        self._member = None
        if self.seekable and not self._global_pax:
            member = self._next_plain()
            if member is not None:
                return member
        take = self._take
        pax: dict[bytes, bytes] | None = None
        longname: bytes | None = None
        longlink: bytes | None = None
        meta_type: bytes | None = None  # last meta record seen for this member
        meta_off = -1
        chained = 0  # data bytes of the meta records read for this member
        while True:
            hoff = self._cur
            i = hoff - self._win_off  # seekable fast path: the header is in the read-ahead window
            if self.seekable and i >= 0 and i + BLOCK <= len(self._win):
                block = self._win[i:i + BLOCK]
                self._cur = hoff + BLOCK
            else:
                block = take(BLOCK)
            if len(block) < BLOCK:
                self._eof_at_header(hoff, len(block), meta_type, meta_off)
            if block == ZERO_BLOCK:
                self._end_marker(hoff, meta_type, meta_off)
                return None
            if not _checksum_ok(block):
                self._bad_header(hoff, block, meta_type)
            tf = block[156:157]
            try:
                field = block[124:136]
                size = int(field[:11], 8) if field[11] == 0 and field[0] != 0x80 else _nti(field)
            except ValueError:
                try:
                    size = _nti(field)
                except ValueError:
                    size = -1
            if size < 0:
                raise TarFormatError(f"invalid size field in header at offset {hoff} ({self._after()})",
                                     offset=hoff)
            if tf in _META_TYPES:
                what = _META_NAMES[tf]
                chained += size
                if tf == b"g":
                    self._global_bytes += size
                self._check_meta_caps(what, hoff, size, chained)
                data = take(size)
                if len(data) < size or self._skip(-size % BLOCK) < -size % BLOCK:
                    raise TarFormatError(f"truncated inside {what} at offset {hoff} (needs {size} bytes, "
                                         f"archive ends at {self._cur}; {self._after()})", offset=self._cur)
                if tf in _PAX_LOCAL or tf == b"g":
                    records = _parse_pax(data, hoff + BLOCK, f"{what} at offset {hoff}, {self._after()}")
                    if tf == b"g":
                        self._global_pax.update(records)
                    elif pax is None:
                        pax = records
                    else:
                        pax.update(records)
                elif tf == b"L":
                    longname = _nts(data)
                else:
                    longlink = _nts(data)
                if tf != b"g":
                    meta_type = tf
                    if meta_off < 0:
                        meta_off = hoff
                continue
            break
        return self._make_member(hoff, block, tf, size, pax, longname, longlink)

    def _check_meta_caps(self, what: str, hoff: int, size: int, chained: int) -> None:
        """Raise before reading a meta record that would take its member's chain or the archive's global
        headers over `max_meta_bytes` (see the module doc)."""
        cap = self.max_meta_bytes
        if size > cap:
            raise TarFormatError(f"{what} at offset {hoff} is {size} bytes, more than the "
                                 f"{cap} allowed ({self._after()})", offset=hoff)
        if chained > cap:
            raise TarFormatError(f"{what} at offset {hoff} brings the meta records before one member to {chained} "
                                 f"bytes, more than the {cap} allowed ({self._after()})", offset=hoff)
        if self._global_bytes > cap:
            raise TarFormatError(f"{what} at offset {hoff} brings the pax global headers of the archive to "
                                 f"{self._global_bytes} bytes, more than the {cap} allowed ({self._after()})",
                                 offset=hoff)

    def _next_plain(self) -> Member | None:
        """The common member, fast: seekable, no pax global record in force (the caller checks
        `_global_pax`, which holds only honoured records: a global header of comments leaves it empty), a
        regular file ('0' or NUL type) with a plain ASCII name (see `_PLAIN_NAME_RE`), octal size and a
        valid checksum.

        Gives exactly what `_next` + `_make_member` would (tests/shard/test_tarstream.py checks both paths
        against tarfile); returns None, having consumed nothing, for anything else."""
        hoff = self._cur
        block = self._window_read(hoff, BLOCK)  # consumes nothing: `_cur` moves only on success
        if len(block) < BLOCK:
            return None
        tf = block[156]
        if tf != 48 and tf != 0:  # '0' or NUL: a regular file
            return None
        chk = block[148:156]
        size_field = block[124:136]
        if chk[6:8] != b"\0 " or size_field[11] != 0 or size_field[0] == 0x80:
            return None
        try:
            stored = int(chk[:6], 8)
            size = int(size_field[:11], 8)
        except ValueError:
            return None
        if stored != _header_sum(block):  # the signed variant and other odd fields: the general path
            return None
        if block[345] and block[257:265] == _POSIX_MAGIC:
            return None  # a ustar prefix: the general path joins it
        nul = block.find(0, 0, 100)
        raw = block[:nul] if nul >= 0 else block[:100]
        if not raw.isascii():
            return None
        name = raw.decode("ascii")
        if not _is_plain_name(name):  # also refuses a v7 directory ('name/')
            return None
        offset = hoff + BLOCK
        if size < 0 or offset + size > self._size:
            return None  # the general path raises the error
        return self._enter(Member(name, size, offset, "file", "", None))

    def _enter(self, member: Member) -> Member:
        """Make `member` the current one: its data starts at the read position."""
        offset = member.offset
        self._cur = offset
        self._data_end = offset + member.size
        self._next_hdr = offset + ((member.size + BLOCK - 1) & ~(BLOCK - 1))
        self._member = member
        self._last_name = member.name
        return member

    def _make_member(self, hoff, block, tf, size, pax, longname, longlink) -> Member:
        if self._global_pax:
            pax = {**self._global_pax, **pax} if pax else self._global_pax
        # name: pax path > GNU long name > ustar prefix + name
        raw = pax.get(b"path") if pax else None
        if not raw:
            raw = longname
            if not raw:
                raw = _nts(block[:100])
                if block[345] and block[257:265] == _POSIX_MAGIC:
                    raw = _nts(block[345:500]) + b"/" + raw
        kind = _KINDS.get(tf, "other")
        if kind == "file" and tf == b"\0" and raw.endswith(b"/"):
            kind = "dir"  # old v7 tars: a directory is a regular file whose name ends with '/'
        name, utf8_ok = _decode(raw)
        if pax and b"size" in pax:
            value = pax[b"size"]
            if not value.isdigit():
                raise TarFormatError(f"malformed pax size {value[:40]!r} for member {name!r} (header at offset "
                                     f"{hoff})", offset=hoff, member=name)
            size = int(value)
        offset = hoff + BLOCK
        if tf == b"S" and block[482]:  # old GNU sparse: extension headers follow the header
            while True:
                ext = self._take(BLOCK)
                if len(ext) < BLOCK:
                    raise TarFormatError(f"truncated inside GNU sparse header of member {name!r} at offset "
                                         f"{offset}", offset=self._cur, member=name)
                offset += BLOCK
                if not ext[504]:
                    break
        if kind in _NO_DATA_KINDS:
            size = 0
        name, problem = _resolve_name(name, utf8_ok, kind)
        kind_problem = _KIND_PROBLEMS.get(kind)
        if kind_problem is not None:
            problem = kind_problem
        elif kind == "other":
            problem = f"unsupported member type {tf.decode('latin-1')!r}"
        elif pax and problem is None and kind == "file" and _SPARSE in pax:
            problem = "sparse member (not supported)"
        if kind == "symlink" or kind == "hardlink":
            linkraw = pax.get(b"linkpath") if pax else None
            linkname = _decode(linkraw or longlink or _nts(block[157:257]))[0]
        else:
            linkname = ""
        member = Member(name, size, offset, kind, linkname, problem)
        if self.seekable and offset + size > self._size:
            raise TarFormatError(f"truncated inside member {name!r} data (needs {size} bytes at offset {offset}, "
                                 f"file ends at {self._size})", offset=self._size, member=name)
        return self._enter(member)

    def _eof_at_header(self, hoff: int, got: int, meta_type: bytes | None, meta_off: int) -> None:
        if got == 0:
            if hoff == self._start and self._last_name is None and meta_type is None:
                raise TarFormatError("empty file: not a tar archive", offset=hoff)
            if meta_type is not None:
                raise TarFormatError(f"archive ends at offset {hoff} right after the {_META_NAMES[meta_type]} at "
                                     f"offset {meta_off}; the member it describes is missing; truncated?",
                                     offset=hoff)
            raise TarFormatError(f"archive ends without end-of-archive marker; truncated? (at offset {hoff}, "
                                 f"{self._after()})", offset=hoff)
        raise TarFormatError(f"truncated inside header at offset {hoff} (only {got} of {BLOCK} bytes; "
                             f"{self._after()})", offset=hoff)

    def _end_marker(self, hoff: int, meta_type: bytes | None, meta_off: int) -> None:
        if meta_type is not None:
            raise TarFormatError(f"end-of-archive marker at offset {hoff} right after the {_META_NAMES[meta_type]} "
                                 f"at offset {meta_off}; the member it describes is missing", offset=hoff)
        nxt = self._take(BLOCK)
        if nxt and nxt.count(0) != len(nxt):
            raise TarFormatError(f"lone zero block at offset {hoff} followed by more data ({self._after()}); "
                                 f"the archive is damaged or was concatenated", offset=hoff)
        self._done = True
        self._member = None
        for owned in self._owned:
            if isinstance(owned, _Decompressed):
                owned.drain()  # read the compressed stream to its end: its checksum is verified there

    def _bad_header(self, hoff: int, block: bytes, meta_type: bytes | None) -> None:
        if hoff == self._start and self._last_name is None and meta_type is None:
            hint = ""
            if block[:2] == b"\x1f\x8b":
                hint = " (looks gzip-compressed: open it with open_tar)"
            elif block[:4] == b"\x28\xb5\x2f\xfd":
                hint = " (looks zstd-compressed: decompress it first)"
            raise TarFormatError(f"not a tar archive: bad header checksum at offset {hoff}{hint}", offset=hoff)
        raise TarFormatError(f"bad header checksum at offset {hoff} ({self._after()}): corrupted or non-tar data",
                             offset=hoff)


# -- opening possibly-compressed archives ---------------------------------------------------------

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
        reader = self.reader
        offset = reader._cur if reader is not None else 0
        member = reader._member.name if reader is not None and reader._member is not None else None
        where = ""
        if reader is not None:
            where = f"inside member {member!r}" if member is not None else reader._after()
        return TarFormatError(f"{self.kind} data is damaged after {offset} decompressed bytes ({where}): "
                              f"{exc or type(exc).__name__}", offset=offset, member=member)

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
    seekable = _autodetect_seekable(fileobj)
    if seekable:
        pos = fileobj.tell()
        head = _read_full(fileobj, 6)
        fileobj.seek(pos)
        src = fileobj
    else:
        head = _read_full(fileobj, 6)
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
        reader._owned.append(stream)
        return reader
    return TarReader(src, seekable=seekable, max_meta_bytes=max_meta_bytes)
