"""An extracted folder (the old recipe's `tar xf` output) as units that look like shards: `folder_units`.

A folder argument holding image files and no tar shards is an extracted folder. Its files are listed once, in the
driver, with `os.scandir` (hidden names skipped like a folder of shards: `.DS_Store`, `._x.jpg`, `.cache/`; OUT
too when it lies inside; symlinks to folders never followed), sorted by (sample key, extension) so the members of a sample are adjacent,
and cut into units of `unit_samples` keys: a sample's members are never split. Unit ``k`` of folder ``NAME`` has
the shard id ``NAME-00000k``; it is converted, recorded and resumed exactly like a shard.

Memory: a 1.2 M-file folder as 1.2 M Python objects costs over 150 MB. Here the listing is sorted in chunks of
`CHUNK` names, each written to an anonymous temporary file (an external sort: removed by the system when closed,
nothing is written in OUT or the folder), merged from there, and each unit keeps its names as ONE blob
(``key NUL ext NUL key NUL ext ...``, about 25 bytes a file). A worker gets its unit's blob only. The unit's
fingerprint is a blake2b digest of its files' names, sizes and mtimes: any change to any of them (a file added,
removed, rewritten, touched) redoes that unit and only that one.

The listing records each file's kind: a symlink (in the folder, to anything) or a special file is listed, so that
the worker reports it as a reject naming it; it is never opened or followed.
"""

from __future__ import annotations

import hashlib
import heapq
import marshal
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dalle3_etl.settings import Settings
from dalle3_etl.sources.base import SHARD_SUFFIXES, ShardSource, SourceError, shown

#: Names sorted at once in memory before they are packed into one blob (bounds the driver's memory).
CHUNK = 1 << 14
_BLOCK = 512  # records packed (and read back while merging) together: ~20 KB a block
#: Default samples per unit (`--unit-samples`, declared in `Settings`): a DALLE-3 shard holds about 15 k samples;
#: 10 k keeps a unit's parquet part and record as cheap as a shard's, and a 1.2 M-sample folder gives 120 units.
UNIT_SAMPLES = Settings.unit_samples
_IMAGE_EXTS = frozenset((b"jpg", b"jpeg", b"png", b"webp", b"gif", b"bmp", b"tif", b"tiff"))
_TAR_SUFFIXES = tuple(s.encode() for s in SHARD_SUFFIXES)
KIND_FILE, KIND_LINK, KIND_OTHER = b"f", b"l", b"o"


@dataclass(frozen=True)
class FolderUnit(ShardSource):
    """A unit of an extracted folder: `root` the folder (absolute), `names` the unit's files as one blob of
    ``relative key NUL extension NUL kind`` triples, NUL-separated (bytes: names need not be UTF-8)."""

    root: str = ""
    names: bytes = b""

    def open(self):
        """The folder, opened as a directory (the worker opens each file below it without following a link)."""
        return _DirHandle(self.root)

    def files(self) -> Iterator[tuple[bytes, bytes]]:
        """(relative path, kind) of each file of the unit, in unit order."""
        parts = self.names.split(b"\0")
        for i in range(0, len(parts) - 2, 3):
            key, ext, kind = parts[i], parts[i + 1], parts[i + 2]
            yield (key + b"." + ext if ext else key), kind


class _DirHandle:
    def __init__(self, root: str):
        self.root = root
        self.fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
        self.on_close = None  # set by the reader of the unit's files

    def close(self) -> None:
        if self.on_close is not None:
            self.on_close()
            self.on_close = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> _DirHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class FolderScan:
    """What a folder holds: whether it has tar shards, an image file (one, named), and the sorted listing chunks."""

    tars: str | None = None
    image: str | None = None
    chunks: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) of each sorted chunk in `spill`
    spill: Any = None  # the anonymous temporary file holding the chunks


def _split_name(name: bytes) -> tuple[bytes, bytes]:
    dot = name.rfind(b".")
    slash = name.rfind(b"/")
    if dot <= slash + 1:
        return name, b""
    return name[:dot], name[dot + 1 :]


def _record(rel: bytes, kind: bytes, st: os.stat_result | None) -> bytes:
    """One listing record, ``key NUL ext NUL kind NUL stamp``, with the kind and the stat for the fingerprint.
    Records sort as plain bytes in (key, extension) order: NUL is below every byte of a name, and no two files
    share both key and extension, so a comparison is always decided before the kind."""
    key, ext = _split_name(rel)
    stamp = b"%d:%d" % (st.st_size, st.st_mtime_ns) if st is not None else b"-"
    return b"%s\0%s\0%s\0%s" % (key, ext, kind, stamp)


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _walk(root: bytes, skip: tuple[int, int] | None = None) -> Iterator[tuple[bytes, os.DirEntry]]:
    """(relative path, entry) of every non-hidden entry below `root` that is not a folder; folders are walked
    (not through symlinks), depth first, one open directory at a time. `skip` (`base.folder_identity` of OUT):
    that folder is not walked."""
    todo = [b""]
    while todo:
        rel = todo.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as entries:
            for entry in entries:
                if entry.name.startswith(b"."):
                    continue
                name = rel + b"/" + entry.name if rel else entry.name
                if entry.is_dir(follow_symlinks=False):
                    if skip is None or _identity(entry.stat(follow_symlinks=False)) != skip:
                        todo.append(name)
                else:
                    yield name, entry


def scan_folder(path: Path, skip_txt: bool = False, skip: tuple[int, int] | None = None) -> FolderScan:
    """List `path` (see the module doc): sorted chunks of records, and what kinds of inputs it holds.
    `skip_txt` (--captions-in-place): `.txt` files are not listed, so the caption files the tool writes there
    change no unit (a user's `<stem>.txt` already there is found when the caption is written: `name_clash`).
    `skip`: a folder below that is not listed (OUT made inside the folder: `base.folder_identity`)."""
    scan = FolderScan(spill=tempfile.TemporaryFile())
    pending: list[bytes] = []
    for rel, entry in _walk(os.fsencode(path), skip):
        low = rel.lower()
        if skip_txt and low.endswith(b".txt"):
            continue
        st = entry.stat(follow_symlinks=False)
        if scan.tars is None and low.endswith(_TAR_SUFFIXES):
            scan.tars = os.fsdecode(rel)  # a link to a tar too: a Hub cache snapshot's shards are links
        if stat.S_ISLNK(st.st_mode):
            kind = KIND_LINK
        elif stat.S_ISREG(st.st_mode):
            kind = KIND_FILE
            if scan.image is None and _split_name(low)[1] in _IMAGE_EXTS:
                scan.image = os.fsdecode(rel)
        else:
            kind = KIND_OTHER
        pending.append(_record(rel, kind, st))
        if len(pending) >= CHUNK:
            _spill(scan, pending)
            pending = []
    if pending:
        _spill(scan, pending)
    return scan


def _spill(scan: FolderScan, records: list[bytes]) -> None:
    blob = _pack(records)
    scan.chunks.append((scan.spill.tell(), len(blob)))
    scan.spill.write(blob)


def _pack(records: list[bytes]) -> bytes:
    """Sorted records as one blob: blocks of `_BLOCK` records, each a `marshal`ed list behind its length (4 bytes),
    so reading them back is a call in C per block, not Python per record (names may hold any byte but NUL and
    '/': no separator would do). The blob lives in this process's anonymous file only."""
    records.sort()  # as (key, extension): see `_record`
    blocks = (marshal.dumps(records[i : i + _BLOCK]) for i in range(0, len(records), _BLOCK))
    return b"".join(len(b).to_bytes(4, "little") + b for b in blocks)


def _unpack(fd: int, start: int, length: int) -> Iterator[bytes]:
    """The records of the chunk at `start` in the spill file, a block at a time."""
    at, end = start, start + length
    while at < end:
        n = int.from_bytes(os.pread(fd, 4, at), "little")
        yield from marshal.loads(os.pread(fd, n, at + 4))
        at += 4 + n


def _units(scan: FolderScan, unit_samples: int) -> Iterator[tuple[bytes, str, int, int]]:
    """(names blob, digest, files, bytes) of each unit, in order, from the sorted chunks."""
    scan.spill.flush()
    fd = scan.spill.fileno()
    merged = heapq.merge(*(_unpack(fd, start, length) for start, length in scan.chunks))
    names: list[bytes] = []
    digest = hashlib.blake2b(digest_size=16)
    keys = size = 0
    last_key = None
    for record in merged:
        key, ext, kind, stamp = record.split(b"\0", 3)
        if key != last_key:
            if keys == unit_samples:
                yield b"\0".join(names), digest.hexdigest(), len(names) // 3, size
                names, digest, keys, size = [], hashlib.blake2b(digest_size=16), 0, 0
            keys += 1
            last_key = key
        names += (key, ext, kind)
        digest.update(record + b"\n")
        if stamp != b"-":
            size += int(stamp.split(b":")[0])
    if names:
        yield b"\0".join(names), digest.hexdigest(), len(names) // 3, size


def folder_units(path: Path, scan: FolderScan, unit_samples: int = UNIT_SAMPLES) -> list[FolderUnit]:
    """The units of the extracted folder `path` (see the module doc)."""
    root = os.path.abspath(path)
    name = os.path.basename(root.rstrip(os.sep)) or "folder"
    units = []
    for k, (names, digest, files, size) in enumerate(_units(scan, unit_samples)):
        units.append(
            FolderUnit(
                shard_id=f"{name}-{k:06d}",
                uri=root,
                size=size,
                fingerprint={"folder": root, "unit_samples": unit_samples, "files": files, "digest": digest},
                root=root,
                names=names,
            )
        )
    scan.spill.close()
    return units


def expand_folder(
    arg: str, path: Path, unit_samples: int, skip_txt: bool = False, skip: tuple[int, int] | None = None
) -> list[FolderUnit] | None:
    """The units of a folder argument that is an extracted folder; None for a folder of tar shards. `skip`: a
    folder below it that is not listed (OUT: `base.folder_identity`).

    A folder holding both tar shards and image files is refused: which of them to convert cannot be guessed
    (converting both would give every sample twice, as often the tars are the folder's source)."""
    scan = scan_folder(path, skip_txt, skip)
    if scan.tars is not None or scan.image is None:
        scan.spill.close()
    if scan.tars is not None and scan.image is not None:
        raise SourceError(
            f"{arg}: holds both tar shards ({shown(scan.tars)}) and image files ({shown(scan.image)}); pass the "
            "shards (a glob such as 'DIR/*.tar') or a folder holding only the extracted files"
        )
    if scan.tars is not None or scan.image is None:
        return None
    return folder_units(path, scan, unit_samples)


def check_folder_inputs(sources: list[ShardSource], link: str, out: Path) -> str | None:
    """Refuse `--link` with tar inputs (exit 2, before any work); with an extracted folder and hard links, the
    note to print once when OUT is on another file system than the folder (its images are copied), else None."""
    roots = sorted({s.root for s in sources if isinstance(s, FolderUnit)})
    if link != "hard" and any(not isinstance(s, FolderUnit) for s in sources):
        raise SourceError(
            f"--link {link}: only for an extracted folder (images and JSON files); tar shards are always read "
            "and their images copied: leave out --link"
        )
    if link == "none" and len(roots) > 1:
        raise SourceError(
            f"--link none: one extracted folder at a time ({shown(roots[0])} and {shown(roots[1])} given); the "
            "dataset entry's instance_data_dir points at it"
        )
    if link != "hard" or not roots:
        return None
    target = Path(out).absolute()
    while not target.exists() and target != target.parent:
        target = target.parent
    dev = os.stat(target).st_dev
    other = [r for r in roots if os.stat(r).st_dev != dev]
    if not other:
        return None
    return (
        f"note: {shown(other[0])} is on another file system than {shown(str(out))}: its images are copied, "
        "not hard-linked (--link hard needs one file system)"
    )
