"""A safe, fast, streaming reader of tar members (stdlib only): `TarReader`.

(Some 440 lines: the member walk, its fast path and its general path stay in one module so the two paths
can be read side by side; the header format lives in `tarheader`, the byte access in `tarbytes`.)

`TarReader` walks a tar archive header by header without keeping a list of members, so memory does
not grow with the shard. It reads a regular file through `os.pread` (member bodies that are not read are
skipped by moving an offset; `pread` and `copy_range` give random access to member data later without
disturbing iteration) and anything else as a stream (see `tarbytes`). The header format (fields, names,
pax records, what makes a member unsafe) is `tarheader`'s; compressed archives are opened by
`tarcompress.open_tar`.

Meta records are bounded (``max_meta_bytes``, 1 MiB by default): the meta records chained before one
member (all of ``x``/``X``/``g``/``L``/``K`` between two members) may hold that many data bytes in total,
and the pax global headers of the whole archive that many too; past either cap the archive is damaged
(`TarFormatError`, before the header over the cap is read). Of every pax header only what is honoured is
kept, so a large global header costs nothing per member and memory stays flat.

Structural damage raises `TarFormatError` after every member before the damage has been yielded, so the
caller keeps the good samples.

Differences from tarfile, on purpose: names are normalised ('./a//b' -> 'a/b'); `Member.size` is 0 for
links, directories, devices and fifos (tarfile stores no data for them either, but reports the header's
size field); a pax global header applies to every later member (POSIX; tarfile applies it only to
members that have a local pax header too); a lone zero block followed by more data raises instead of
silently ending the archive; a file that ends without the end-of-archive marker raises.
"""

from __future__ import annotations

from collections.abc import Iterator

from dalle3_etl.shard.tarbytes import COPY_CHUNK, TarBytes
from dalle3_etl.shard.tarheader import (
    BLOCK,
    KIND_PROBLEMS,
    KINDS,
    META_NAMES,
    META_TYPES,
    NO_DATA_KINDS,
    PAX_LOCAL,
    POSIX_MAGIC,
    SPARSE,
    ZERO_BLOCK,
    Member,
    TarFormatError,
    checksum_ok,
    decode_name,
    header_size,
    header_sum,
    is_plain_name,
    nts,
    parse_pax,
    resolve_name,
)

__all__ = ["Member", "TarFormatError", "TarReader"]


class TarReader(TarBytes):
    """Iterate the members of a tar archive; see the module doc.

    Offsets (`Member.offset`, `pread`, `copy_range`, `TarFormatError.offset`) are absolute offsets in
    the file object (a seekable file object may start the archive at its current position; a stream
    counts from 0). `position` is the number of archive bytes consumed or skipped so far.
    """

    def __init__(
        self, fileobj, *, seekable: bool | None = None, max_meta_bytes: int = 1 << 20, stop_at: int | None = None
    ):
        """`max_meta_bytes` caps the data of the meta records before one member (in total) and of the pax
        global headers of the whole archive (in total); see the module doc. `stop_at`: the iteration ends,
        without an end-of-archive marker, at the first member whose first header is at or past this offset
        (a task's byte range, `run.tasks`)."""
        super().__init__(fileobj, seekable)
        self.max_meta_bytes = max_meta_bytes
        self._stop_at = stop_at
        self._data_end = self._start  # end of the current member's data
        self._next_hdr = self._start  # offset of the next header
        self._member: Member | None = None
        self._last_name: str | None = None
        self._global_pax: dict[bytes, bytes] = {}  # the honoured records of the global headers so far
        self._global_bytes = 0  # data bytes of the pax global headers so far
        self._done = False
        self._owned: list = []  # decompression streams created by open_tar: drained at the end, closed by close()

    # -- public API ---------------------------------------------------------------------------------

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

    def close(self) -> None:
        """Close decompression wrappers created by open_tar (never the caller's file object)."""
        for obj in self._owned:
            obj.close()
        self._owned.clear()

    def __enter__(self) -> TarReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def next_header(self) -> int:
        """Offset of the first header block (meta records included) of the member after the current one."""
        return self._next_hdr

    @property
    def saw_global_header(self) -> bool:
        """Whether a pax global header was read so far (its records carry over to every later member)."""
        return self._global_bytes > 0

    def adopt(self, stream) -> None:
        """Own a decompression stream (`tarcompress.open_tar`): drained at the end-of-archive marker (its
        checksum is verified there), closed by `close`."""
        self._owned.append(stream)

    def damage_context(self) -> tuple[int, str | None, str]:
        """(offset, member name or None, where in words) of the read position, for damage found below the
        reader (in the decompressed stream) to be reported like the reader's own."""
        m = self._member
        if m is None:
            return self._cur, None, self._after()
        return self._cur, m.name, f"inside member {m.name!r}"

    # -- errors ---------------------------------------------------------------------------------------

    def _after(self) -> str:
        return f"after member {self._last_name!r}" if self._last_name is not None else "before any member"

    def _raise_truncated_data(self) -> None:
        m = self._member
        assert m is not None
        end = self._cur
        where = "file" if self.seekable else "stream"
        raise TarFormatError(
            f"truncated inside member {m.name!r} data (needs {m.size} bytes at offset "
            f"{m.offset}, {where} ends at {end})",
            offset=end,
            member=m.name,
        )

    # -- the header walk ------------------------------------------------------------------------------

    def _advance(self) -> None:
        """Move from wherever the caller left the current member to the next header."""
        target = self._next_hdr
        if self.seekable:
            if target > self._size:  # data was checked when the member was yielded: only padding is missing
                raise TarFormatError(
                    f"archive ends inside the padding after member {self._last_name!r} "
                    f"(next header expected at offset {target}, file ends at {self._size}); "
                    f"truncated?",
                    offset=self._size,
                    member=None,
                )
            self._cur = target
            return
        need = target - self._cur
        if need > 0 and self._sskip(need) < need:
            if self._cur < self._data_end:
                self._raise_truncated_data()
            raise TarFormatError(
                f"archive ends inside the padding after member {self._last_name!r} "
                f"(next header expected at offset {target}, stream ends at {self._cur}); "
                f"truncated?",
                offset=self._cur,
                member=None,
            )

    def _next(self) -> Member | None:
        """The next member (None at the end): its meta records are read and applied on the way, never yielded."""
        if self._done:
            return None
        if self._stop_at is not None and self._next_hdr >= self._stop_at:
            self._done = True
            return None
        if self._cur != self._next_hdr:
            self._advance()
        self._member = None
        if self.seekable and not self._global_pax:
            member = self._next_plain()
            if member is not None:
                return member
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
                block = self._win[i : i + BLOCK]
                self._cur = hoff + BLOCK
            else:
                block = self._take(BLOCK)
            if len(block) < BLOCK:
                self._eof_at_header(hoff, len(block), meta_type, meta_off)
            if block == ZERO_BLOCK:
                self._end_marker(hoff, meta_type, meta_off)
                return None
            if not checksum_ok(block):
                self._bad_header(hoff, block, meta_type)
            tf = block[156:157]
            size = header_size(block)
            if size < 0:
                raise TarFormatError(f"invalid size field in header at offset {hoff} ({self._after()})", offset=hoff)
            if tf in META_TYPES:
                chained += size
                data = self._read_meta(tf, hoff, size, chained)
                if tf in PAX_LOCAL or tf == b"g":
                    records = parse_pax(data, hoff + BLOCK, f"{META_NAMES[tf]} at offset {hoff}, {self._after()}")
                    if tf == b"g":
                        self._global_pax.update(records)
                    elif pax is None:
                        pax = records
                    else:
                        pax.update(records)
                elif tf == b"L":
                    longname = nts(data)
                else:
                    longlink = nts(data)
                if tf != b"g":
                    meta_type = tf
                    if meta_off < 0:
                        meta_off = hoff
                continue
            break
        return self._make_member(hoff, block, tf, size, pax, longname, longlink)

    def _read_meta(self, tf: bytes, hoff: int, size: int, chained: int) -> bytes:
        """The data of the meta record whose header is at `hoff`, its padding skipped; the caps are checked
        before it is read (`chained`: the data bytes of this member's meta records, this one included)."""
        what = META_NAMES[tf]
        if tf == b"g":
            self._global_bytes += size
        self._check_meta_caps(what, hoff, size, chained)
        data = self._take(size)
        if len(data) < size or self._skip(-size % BLOCK) < -size % BLOCK:
            raise TarFormatError(
                f"truncated inside {what} at offset {hoff} (needs {size} bytes, "
                f"archive ends at {self._cur}; {self._after()})",
                offset=self._cur,
            )
        return data

    def _check_meta_caps(self, what: str, hoff: int, size: int, chained: int) -> None:
        """Raise before reading a meta record that would take its member's chain or the archive's global
        headers over `max_meta_bytes` (see the module doc)."""
        cap = self.max_meta_bytes
        if size > cap:
            raise TarFormatError(
                f"{what} at offset {hoff} is {size} bytes, more than the {cap} allowed ({self._after()})", offset=hoff
            )
        if chained > cap:
            raise TarFormatError(
                f"{what} at offset {hoff} brings the meta records before one member to {chained} "
                f"bytes, more than the {cap} allowed ({self._after()})",
                offset=hoff,
            )
        if self._global_bytes > cap:
            raise TarFormatError(
                f"{what} at offset {hoff} brings the pax global headers of the archive to "
                f"{self._global_bytes} bytes, more than the {cap} allowed ({self._after()})",
                offset=hoff,
            )

    def _next_plain(self) -> Member | None:
        """The common member, fast: seekable, no pax global record in force (the caller checks
        `_global_pax`, which holds only honoured records: a global header of comments leaves it empty), a
        regular file ('0' or NUL type) with a plain ASCII name (see `tarheader.is_plain_name`), octal size and a
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
        if stored != header_sum(block):  # the signed variant and other odd fields: the general path
            return None
        if block[345] and block[257:265] == POSIX_MAGIC:
            return None  # a ustar prefix: the general path joins it
        nul = block.find(0, 0, 100)
        raw = block[:nul] if nul >= 0 else block[:100]
        if not raw.isascii():
            return None
        name = raw.decode("ascii")
        if not is_plain_name(name):  # also refuses a v7 directory ('name/')
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

    # 61 lines: the general path's one pass from a header to a Member, held to tarfile and to `_next_plain` by
    # the tests; kept whole so the two paths can be read side by side.
    def _make_member(self, hoff, block, tf, size, pax, longname, longlink) -> Member:
        if self._global_pax:
            pax = {**self._global_pax, **pax} if pax else self._global_pax
        # name: pax path > GNU long name > ustar prefix + name
        raw = pax.get(b"path") if pax else None
        if not raw:
            raw = longname
            if not raw:
                raw = nts(block[:100])
                if block[345] and block[257:265] == POSIX_MAGIC:
                    raw = nts(block[345:500]) + b"/" + raw
        kind = KINDS.get(tf, "other")
        if kind == "file" and tf == b"\0" and raw.endswith(b"/"):
            kind = "dir"  # old v7 tars: a directory is a regular file whose name ends with '/'
        name, utf8_ok = decode_name(raw)
        if pax and b"size" in pax:
            value = pax[b"size"]
            if not value.isdigit():
                raise TarFormatError(
                    f"malformed pax size {value[:40]!r} for member {name!r} (header at offset {hoff})",
                    offset=hoff,
                    member=name,
                )
            size = int(value)
        offset = hoff + BLOCK
        if tf == b"S" and block[482]:  # old GNU sparse: extension headers follow the header
            while True:
                ext = self._take(BLOCK)
                if len(ext) < BLOCK:
                    raise TarFormatError(
                        f"truncated inside GNU sparse header of member {name!r} at offset {offset}",
                        offset=self._cur,
                        member=name,
                    )
                offset += BLOCK
                if not ext[504]:
                    break
        if kind in NO_DATA_KINDS:
            size = 0
        name, problem = resolve_name(name, utf8_ok, kind)
        kind_problem = KIND_PROBLEMS.get(kind)
        if kind_problem is not None:
            problem = kind_problem
        elif kind == "other":
            problem = f"unsupported member type {tf.decode('latin-1')!r}"
        elif pax and problem is None and kind == "file" and SPARSE in pax:
            problem = "sparse member (not supported)"
        if kind == "symlink" or kind == "hardlink":
            linkraw = pax.get(b"linkpath") if pax else None
            linkname = decode_name(linkraw or longlink or nts(block[157:257]))[0]
        else:
            linkname = ""
        member = Member(name, size, offset, kind, linkname, problem)
        if self.seekable and offset + size > self._size:
            raise TarFormatError(
                f"truncated inside member {name!r} data (needs {size} bytes at offset {offset}, "
                f"file ends at {self._size})",
                offset=self._size,
                member=name,
            )
        return self._enter(member)

    def _eof_at_header(self, hoff: int, got: int, meta_type: bytes | None, meta_off: int) -> None:
        if got == 0:
            if hoff == self._start and self._last_name is None and meta_type is None:
                raise TarFormatError("empty file: not a tar archive", offset=hoff)
            if meta_type is not None:
                raise TarFormatError(
                    f"archive ends at offset {hoff} right after the {META_NAMES[meta_type]} at "
                    f"offset {meta_off}; the member it describes is missing; truncated?",
                    offset=hoff,
                )
            raise TarFormatError(
                f"archive ends without end-of-archive marker; truncated? (at offset {hoff}, {self._after()})",
                offset=hoff,
            )
        raise TarFormatError(
            f"truncated inside header at offset {hoff} (only {got} of {BLOCK} bytes; {self._after()})", offset=hoff
        )

    def _end_marker(self, hoff: int, meta_type: bytes | None, meta_off: int) -> None:
        if meta_type is not None:
            raise TarFormatError(
                f"end-of-archive marker at offset {hoff} right after the {META_NAMES[meta_type]} "
                f"at offset {meta_off}; the member it describes is missing",
                offset=hoff,
            )
        nxt = self._take(BLOCK)
        if nxt and nxt.count(0) != len(nxt):
            raise TarFormatError(
                f"lone zero block at offset {hoff} followed by more data ({self._after()}); "
                f"the archive is damaged or was concatenated",
                offset=hoff,
            )
        self._done = True
        self._member = None
        for owned in self._owned:
            owned.drain()  # read the compressed stream to its end: its checksum is verified there

    def _bad_header(self, hoff: int, block: bytes, meta_type: bytes | None) -> None:
        if hoff == self._start and self._last_name is None and meta_type is None:
            hint = ""
            if block[:2] == b"\x1f\x8b":
                hint = " (looks gzip-compressed: open it with open_tar)"
            elif block[:4] == b"\x28\xb5\x2f\xfd":
                hint = " (looks zstd-compressed: decompress it first)"
            raise TarFormatError(f"not a tar archive: bad header checksum at offset {hoff}{hint}", offset=hoff)
        raise TarFormatError(
            f"bad header checksum at offset {hoff} ({self._after()}): corrupted or non-tar data", offset=hoff
        )
