"""What every source of shards shares: the `ShardSource` type, its shard id and the checks on it, `SourceError`.

Where shards come from: `local` (files, folders, globs), `hub` (``hf://`` inputs); `resolve` turns command-line
arguments into sources through them. A `ShardSource` is what a worker needs to read one shard: a unique shard id (the file stem, e.g.
``data-000000``), something it can open as a binary stream, its size for progress, and a fingerprint
that changes when the input changes (used by resume to redo a shard whose input changed).

The shard id names files and folders inside OUT, so it is checked when a source is made (`shard_id_problem`):
a name that is not usable there (``..tar`` gives ``.``, ``...tar`` gives ``..``) is refused with a
`SourceError` before anything is converted or removed.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from typing import BinaryIO

from dalle3_etl.errors import UsageError

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
#: Longest shard id, in UTF-8 bytes. The id names `<id>.json`, `<id>.parquet`, `<id>.jsonl` and their temporaries
#: inside OUT; the longest, `.<id>.jsonl.tmp-<pid>`, is 22 bytes more than the id with a 10-digit pid, so 200
#: keeps every name under the 255-byte limit of file systems, with room to spare.
MAX_SHARD_ID_BYTES = 200
_ID_SEPARATOR_RE = re.compile(r"[/\\]")
#: Control characters (C0, DEL and C1): never in a shard id, nor in a member name (`shard.tarheader.resolve_name`).
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DIGITS_RE = re.compile(r"(\d+)")


def folder_identity(path: str | os.PathLike | None) -> tuple[int, int] | None:
    """(device, inode) of the folder `path` (a link to one followed), None when there is none: how the listing of
    an input folder knows OUT below it (`skip`: never listed, so an OUT made inside the folder it is made from is
    not an input of its own next run)."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


class SourceError(UsageError, ValueError):
    """An input argument names nothing usable (missing file, empty glob, duplicate shard id)."""


def shard_id_for(name: str) -> str:
    """Shard id = file name without its tar suffix ("data-000000.tar" -> "data-000000")."""
    base = name.rsplit("/", 1)[-1]
    for suffix in SHARD_SUFFIXES:
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def natural_key(text: str) -> tuple:
    """Sort key that orders "data-2" before "data-10". The order is total: texts equal as numbers ("data-1",
    "data-01") are ordered by their text, so the order never depends on the order they were listed in."""
    parts = _DIGITS_RE.split(text)  # text, digits, text, ... : the digit runs are at the odd places
    return tuple(int(part) if i % 2 else part for i, part in enumerate(parts)), text


def shown(text: str) -> str:
    """`text` quoted for a one-line message: characters that are not printable (control characters, line
    breaks) as escapes, and bytes of a file name that are not UTF-8 (surrogate escapes) as \\xNN."""
    if text.isprintable():
        return f"'{text}'"
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(repr(ch)[1:-1])
    return "'" + "".join(out) + "'"


def shard_id_problem(shard_id: str) -> str | None:
    """Why `shard_id` cannot name a shard's files and folders in OUT, or None when it can."""
    if not shard_id:
        return "it is empty"
    if shard_id in (".", ".."):
        return "'.' and '..' name folders that exist already"
    if shard_id.startswith("."):
        return "it starts with '.'"
    if _ID_SEPARATOR_RE.search(shard_id):
        return "it holds a path separator"
    if CONTROL_RE.search(shard_id):
        return "it holds a control character"
    try:
        nbytes = len(shard_id.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    if nbytes > MAX_SHARD_ID_BYTES:
        return f"it is {nbytes} bytes long (limit {MAX_SHARD_ID_BYTES})"
    return None


@dataclass(frozen=True)
class ShardSource:
    shard_id: str
    uri: str
    size: int
    fingerprint: dict = field(hash=False, compare=False)

    def __post_init__(self) -> None:
        problem = shard_id_problem(self.shard_id)
        if problem is not None:
            raise SourceError(
                f"{shown(self.uri)}: cannot use shard id {shown(self.shard_id)} (the file name without "
                f"its tar suffix) to name its output: {problem}; rename the file"
            )

    def open(self) -> BinaryIO:
        """Open for reading. Local files are seekable, so image bodies are seeked over."""
        return open(self.uri, "rb", buffering=0)
