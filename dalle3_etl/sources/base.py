"""Where shards come from: local files, directories, globs (and the Hub, see `hub`).

A `ShardSource` is what a worker needs to read one shard: a unique shard id (the file stem, e.g.
``data-000000``), something it can open as a binary stream, its size for progress, and a fingerprint
that changes when the input changes (used by resume to redo a shard whose input changed).

The shard id names files and folders inside OUT, so it is checked when a source is made (`shard_id_problem`):
a name that is not usable there (``..tar`` gives ``.``, ``...tar`` gives ``..``) is refused with a
`SourceError` before anything is converted or removed.
"""

from __future__ import annotations

import glob
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from dalle3_etl.errors import UsageError

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
#: Longest shard id, in UTF-8 bytes. The id names `<id>.json`, `<id>.parquet`, `<id>.jsonl` and their temporaries
#: inside OUT; the longest, `.<id>.jsonl.tmp-<pid>`, is 22 bytes more than the id with a 10-digit pid, so 200
#: keeps every name under the 255-byte limit of file systems, with room to spare.
MAX_SHARD_ID_BYTES = 200
_ID_SEPARATOR_RE = re.compile(r"[/\\]")
_ID_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1
_DIGITS_RE = re.compile(r"(\d+)")


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
    if _ID_CONTROL_RE.search(shard_id):
        return "it holds a control character"
    try:
        nbytes = len(shard_id.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    if nbytes > MAX_SHARD_ID_BYTES:
        return f"it is {nbytes} bytes long (limit {MAX_SHARD_ID_BYTES})"
    return None


def _folded(shard_id: str) -> str:
    """The id as a case-insensitive, normalisation-insensitive file system (macOS, Windows) compares it."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", shard_id).casefold())


@dataclass(frozen=True)
class ShardSource:
    shard_id: str
    uri: str
    size: int
    fingerprint: dict = field(hash=False, compare=False)

    def __post_init__(self) -> None:
        problem = shard_id_problem(self.shard_id)
        if problem is not None:
            raise SourceError(f"{shown(self.uri)}: cannot use shard id {shown(self.shard_id)} (the file name without "
                              f"its tar suffix) to name its output: {problem}; rename the file")

    def open(self) -> BinaryIO:
        """Open for reading. Local files are seekable, so image bodies are seeked over."""
        return open(self.uri, "rb", buffering=0)


def local_source(path: Path) -> ShardSource:
    """A local shard, opened through the name given. The id comes from that name, not from where a link leads
    (a Hugging Face cache file ``snapshots/<rev>/data/data-000000.tar -> ../../blobs/<sha>`` is ``data-000000``).
    The fingerprint names the file itself (links resolved) with its size and mtime: a run resumes an output
    made before ids came from links, and a new snapshot linking the same blob is not converted again."""
    given = path.absolute()
    real = path.resolve()
    st = real.stat()
    return ShardSource(
        shard_id=shard_id_for(given.name),
        uri=str(given),
        size=st.st_size,
        fingerprint={"path": str(real), "size": st.st_size, "mtime_ns": st.st_mtime_ns},
    )


def _is_shard_file(path: Path) -> bool:
    return path.is_file() and path.name.endswith(SHARD_SUFFIXES)


def _shards_below(folder: Path) -> list[Path]:
    """Shard files below a folder, hidden names left out as a shell glob leaves them: macOS's `._data-000000.tar`
    resource forks, `.cache/` folders (the Hub's download cache) are no shards; links to folders not followed."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(p for name in filenames if not name.startswith(".")
                     and _is_shard_file(p := Path(dirpath) / name))
    return found


def _expand_local(arg: str) -> list[Path]:
    path = Path(arg).expanduser()
    if path.is_dir():
        found = _shards_below(path)
        if not found:
            raise SourceError(f"{arg}: directory contains no .tar shards")
        return found
    if path.is_file():
        return [path]
    if glob.has_magic(arg):
        found = [Path(p) for p in glob.glob(os.path.expanduser(arg), recursive=True)]
        found = [p for p in found if _is_shard_file(p)]
        if not found:
            raise SourceError(f"{arg}: pattern matches no .tar shards")
        return found
    raise SourceError(f"{arg}: no such file or directory")


def resolve_inputs(args: list[str]) -> list[ShardSource]:
    """Turn command-line inputs into shard sources, in natural shard-id order, each shard once.

    Raises SourceError naming the argument for anything that matches nothing, naming the file for a shard id
    that cannot name output (see `shard_id_problem`), and naming both files for two different files whose
    shard ids are the same, or differ only in letter case or Unicode normalisation (their outputs would collide,
    on macOS and Windows in the second case). The same file reached twice (two links to one blob) is one shard.
    """
    if not args:
        raise SourceError("no input given: pass shard files, directories or globs")
    by_id: dict[str, ShardSource] = {}
    found: list[ShardSource] = []
    hub_args = [arg for arg in args if arg.startswith("hf://")]
    if hub_args:
        from dalle3_etl.sources import hub  # imported lazily: only Hub inputs need the network client

        found.extend(hub.resolve_hub_inputs(hub_args))  # one commit per repo@revision for all arguments
    for arg in args:
        if not arg.startswith("hf://"):
            found.extend(local_source(p) for p in _expand_local(arg))
    for src in found:
        seen = by_id.get(src.shard_id)
        if seen is not None and seen.uri != src.uri and seen.fingerprint != src.fingerprint:
            raise SourceError(
                f"two inputs share shard id {shown(src.shard_id)}: {shown(seen.uri)} and {shown(src.uri)}; "
                "rename one (outputs are keyed by shard file name)"
            )
        if seen is None or natural_key(src.uri) < natural_key(seen.uri):  # the same file: one name, whatever the order
            by_id[src.shard_id] = src
    sources = sorted(by_id.values(), key=lambda s: natural_key(s.shard_id))
    folded: dict[str, ShardSource] = {}
    for src in sources:
        seen = folded.setdefault(_folded(src.shard_id), src)
        if seen is not src:
            raise SourceError(
                f"shard ids {shown(seen.shard_id)} ({shown(seen.uri)}) and {shown(src.shard_id)} ({shown(src.uri)}) "
                "differ only in letter case or Unicode normalisation: their outputs would be the same folder on "
                "macOS and Windows; rename one"
            )
    return sources
