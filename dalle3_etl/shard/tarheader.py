"""The tar header format: field decoding, checksum, member names (resolution and safety), pax records.

Formats: v7, ustar (prefix field), GNU (``L``/``K`` long names, base-256 numbers, old sparse headers
are skipped over) and pax (``x``/``g`` records; ``path``, ``linkpath`` and ``size`` are honoured).
Meta records (``x``, ``g``, ``X``, ``L``, ``K``) describe the next member and are never yielded. Of every
pax header only what is honoured is kept (``path``, ``linkpath``, ``size`` and whether a ``GNU.sparse.*``
key is present): see `parse_pax`.

Every member carries `problem`: ``None`` when it is safe to use, else a short reason (absolute name,
``..``, link, device...): see `resolve_name` and `KIND_PROBLEMS`.

Names are normalised ('./a//b' -> 'a/b'), unlike tarfile. `TarFormatError` (structural damage) and
`Member` are defined here, below the reader (`tarstream`) and the decompressors (`tarcompress`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from zlib import adler32

from dalle3_etl.sources.base import CONTROL_RE

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)

KINDS = {
    b"0": "file",
    b"\0": "file",
    b"7": "file",
    b"1": "hardlink",
    b"2": "symlink",
    b"3": "chardev",
    b"4": "blockdev",
    b"5": "dir",
    b"6": "fifo",
}
# tarfile (and GNU tar) store no data blocks for these types, whatever the size field says.
NO_DATA_KINDS = frozenset(("hardlink", "symlink", "chardev", "blockdev", "dir", "fifo"))
KIND_PROBLEMS = {
    "symlink": "symlink member",
    "hardlink": "hardlink member",
    "chardev": "device member",
    "blockdev": "device member",
    "fifo": "fifo member",
}
PAX_LOCAL = (b"x", b"X")  # 'X': Solaris extended header, same format
META_TYPES = frozenset((b"x", b"X", b"g", b"L", b"K"))
META_NAMES = {
    b"x": "pax header",
    b"X": "pax header",
    b"g": "pax global header",
    b"L": "GNU long-name record",
    b"K": "GNU long-link record",
}
POSIX_MAGIC = b"ustar\x0000"
# The pax keywords a member's resolution reads; `parse_pax` keeps only these. Any GNU.sparse.* keyword is
# kept as `SPARSE` (only its presence matters: the member is refused as sparse).
_PAX_HONOURED = frozenset((b"path", b"linkpath", b"size"))
_SPARSE_PREFIX = b"GNU.sparse."
SPARSE = b"GNU.sparse.*"
_DRIVE_RE = re.compile(r"[A-Za-z]:")
# A name `resolve_name` would return unchanged with no problem: ASCII, no empty component, no backslash,
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
    """One member of the archive, as `tarstream.TarReader` yields it."""

    name: str  # resolved and normalised name (see module doc)
    size: int  # bytes of data stored in the archive for this member
    offset: int  # absolute offset of the member's data in the archive
    kind: str  # 'file' | 'dir' | 'symlink' | 'hardlink' | 'chardev' | 'blockdev' | 'fifo' | 'other'
    linkname: str = ""
    problem: str | None = None  # None if safe; else a short human reason why this member must not be used


# -- header fields ---------------------------------------------------------------------------------


def nts(field: bytes) -> bytes:
    """Bytes up to the first NUL."""
    i = field.find(0)
    return field if i < 0 else field[:i]


def nti(field: bytes) -> int:
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


def header_sum(block: bytes) -> int:
    """Unsigned byte sum of a header with its checksum field taken as 8 spaces (what the field holds).

    adler32's low half is 1 + (byte sum mod 65521); each slice is short enough (<= 257 bytes) for
    the sum to be exact."""
    return (
        (adler32(block[:148]) & 0xFFFF) + (adler32(block[156:400]) & 0xFFFF) + (adler32(block[400:]) & 0xFFFF) - 3 + 256
    )


def checksum_ok(block: bytes) -> bool:
    """Header checksum check (unsigned, or the signed variant some old tars wrote)."""
    try:
        stored = nti(block[148:156])
    except ValueError:
        return False
    unsigned = header_sum(block)
    if stored == unsigned:
        return True
    high = sum(1 for b in block[:148] if b > 127) + sum(1 for b in block[156:] if b > 127)
    return stored == unsigned - 256 * high


def header_size(block: bytes) -> int:
    """The size field of a header: octal (the common case, fast) or GNU base-256; -1 when it is neither."""
    field = block[124:136]
    try:
        return int(field[:11], 8) if field[11] == 0 and field[0] != 0x80 else nti(field)
    except ValueError:
        try:
            return nti(field)
        except ValueError:
            return -1


# -- member names ----------------------------------------------------------------------------------


def decode_name(raw: bytes) -> tuple[str, bool]:
    """(text, whether `raw` was valid UTF-8); bytes that are not are kept as surrogate escapes."""
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", "surrogateescape"), False


def is_plain_name(name: str) -> bool:
    """A name `resolve_name` returns unchanged with no problem (for a file): see `_PLAIN_NAME_RE`."""
    return len(name) <= 4096 and name[:1] != "." and "/." not in name and _PLAIN_NAME_RE.fullmatch(name) is not None


def resolve_name(name: str, utf8_ok: bool, kind: str) -> tuple[str, str | None]:
    """Normalise a member name ('./a//b' -> 'a/b') and say why it is unsafe, if it is."""
    if kind != "dir" and utf8_ok and is_plain_name(name):
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
    if CONTROL_RE.search(name) is not None:
        return name, "name contains a control character"
    # The total bounds memory. A component over the file system's limit (255 bytes on most) is not a
    # problem of the tar: writing it fails (a `name_unusable` reject), and parquet-only runs keep it.
    nbytes = len(name) if name.isascii() else len(name.encode("utf-8", "surrogateescape"))
    if nbytes > 4096:
        return name, f"name is {nbytes} bytes long (limit 4096)"
    return name, None


# -- pax records ------------------------------------------------------------------------------------


def parse_pax(data: bytes, where: int, describe: str) -> dict[bytes, bytes]:
    """Parse pax records '<len> <key>=<value>\\n' (every record is checked) and return the honoured ones
    (`_PAX_HONOURED`, and `SPARSE` for any GNU.sparse.* keyword): at most four, whatever the header holds.
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
            raise TarFormatError(
                f"malformed pax record at offset {where + pos} ({describe}): no decimal length", offset=where + pos
            )
        length = int(digits)
        end = pos + length
        eq = data.find(b"=", sp + 1, end)
        if end > n or length <= sp - pos + 2 or data[end - 1] != 0x0A or eq <= sp + 1:
            raise TarFormatError(
                f"malformed pax record at offset {where + pos} ({describe}): "
                f"record of length {length} is not '<key>=<value>\\n' within the header",
                offset=where + pos,
            )
        key = data[sp + 1 : eq]
        if key in _PAX_HONOURED:
            out[key] = data[eq + 1 : end - 1]
        elif key.startswith(_SPARSE_PREFIX):
            out[SPARSE] = b""
        pos = end
    return out
