"""Where shards come from: local files, directories, globs (and the Hub, see `hub`).

A `ShardSource` is what a worker needs to read one shard: a unique shard id (the file stem, e.g.
``data-000000``), something it can open as a binary stream, its size for progress, and a fingerprint
that changes when the input changes (used by resume to redo a shard whose input changed).
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_DIGITS_RE = re.compile(r"(\d+)")


class SourceError(ValueError):
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


@dataclass(frozen=True)
class ShardSource:
    shard_id: str
    uri: str
    size: int
    fingerprint: dict = field(hash=False, compare=False)

    def open(self) -> BinaryIO:
        """Open for reading. Local files are seekable, so image bodies are seeked over."""
        return open(self.uri, "rb", buffering=0)


def local_source(path: Path) -> ShardSource:
    path = path.resolve()
    st = path.stat()
    return ShardSource(
        shard_id=shard_id_for(path.name),
        uri=str(path),
        size=st.st_size,
        fingerprint={"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns},
    )


def _is_shard_file(path: Path) -> bool:
    return path.is_file() and path.name.endswith(SHARD_SUFFIXES)


def _expand_local(arg: str) -> list[Path]:
    path = Path(arg).expanduser()
    if path.is_dir():
        found = [p for p in path.rglob("*") if _is_shard_file(p)]
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

    Raises SourceError naming the argument for anything that matches nothing, and for two different
    files that would share one shard id (their outputs would collide).
    """
    if not args:
        raise SourceError("no input given: pass shard files, directories or globs")
    by_id: dict[str, ShardSource] = {}
    found: list[ShardSource] = []
    hub_args = [arg for arg in args if arg.startswith("hf://")]
    if hub_args:
        from dalle3_etl import hub  # imported lazily: only Hub inputs need the network client

        found.extend(hub.resolve_hub_inputs(hub_args))  # one commit per repo@revision for all arguments
    for arg in args:
        if not arg.startswith("hf://"):
            found.extend(local_source(p) for p in _expand_local(arg))
    for src in found:
        seen = by_id.get(src.shard_id)
        if seen is not None and seen.uri != src.uri:
            raise SourceError(
                f"two inputs share shard id {src.shard_id!r}: {seen.uri} and {src.uri}; "
                "rename one (outputs are keyed by shard file name)"
            )
        by_id[src.shard_id] = src
    return sorted(by_id.values(), key=lambda s: natural_key(s.shard_id))
