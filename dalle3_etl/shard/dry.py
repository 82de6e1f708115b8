"""One shard, dry (`convert --dry-run`): every sample decided exactly as `convert` decides it, nothing written.

The shard is read by the same `ShardConverter` loop (tar reading, pairing, `rows.parse_json`) and each
finished sample goes through the same `SampleWriter.finish` (size from the JSON or the image header, the
signature check, every reject and whatever else `finish` decides before its write step). Only the ends
differ, in `DrySampleWriter`: reject lines are counted, not written; the write step claims the sample's
file names in a `NameBook` (in memory, failing like the output's file system would) and counts the bytes it
would write; the row is counted by source and resolution instead of going to a parquet part. Streamed
image bodies are probed for their size as they go by instead of being staged. No staging folder is made:
OUT need not exist and is never touched.

Decisions that need every shard, in shard order (the `--flat` name claims at merge time; a cross-shard
dedup), are the driver's (`run.dry`): for them the result carries one `DryRow` per kept sample.
"""

from __future__ import annotations

import errno
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from dalle3_etl.settings import BASE_COLUMNS, Settings
from dalle3_etl.shard.convert import ProgressFn, ShardConverter, ShardResult
from dalle3_etl.shard.folderstream import FolderReader
from dalle3_etl.shard.rows import JsonInfo, Reason
from dalle3_etl.shard.samples import Entry
from dalle3_etl.shard.sinks import written_names
from dalle3_etl.shard.writer import ImageRef, SampleWriter
from dalle3_etl.sources.base import ShardSource
from dalle3_etl.store.inplace import unit_captions
from dalle3_etl.store.layout import Layout

#: How a row without a `source` is counted (as `stats` shows it).
NO_SOURCE = "(none)"
_FILENAME, _WIDTH, _HEIGHT, _SOURCE = (BASE_COLUMNS.index(c) for c in ("filename", "width", "height", "source"))


class DryRow(NamedTuple):
    """A kept sample, for the driver's decisions across shards (`run.dry`)."""

    filename: str  # relative to OUT/data, as in the parquet
    source: str
    resolution: str  # "WxH"
    image_bytes: int
    caption_bytes: int
    key: bytes | None  # the sample's --dedup key (`DrySampleWriter.row_key`), None without one


@dataclass
class DryResult(ShardResult):
    """A `ShardResult` (samples = rows a run would keep, rejects, notes, bytes_out) and what else a dry run shows."""

    sources: dict[str, int] = field(default_factory=dict)  # kept rows by source
    resolutions: dict[str, int] = field(default_factory=dict)  # kept rows by "WxH"
    image_bytes: int = 0
    caption_bytes: int = 0
    rows: list[DryRow] | None = None  # one per kept sample, in member order, when `rows_needed`


def rows_needed(settings: Settings) -> bool:
    """Whether the driver decides something about each kept sample across shards, so needs `DryRow`s:
    `--flat` names (claimed in shard order at merge time), `--dedup` keys (compared in shard order)."""
    return bool(settings.dedup) or (settings.flat and (settings.images or settings.captions))


class NameBook:
    """The file names a shard's samples take in its staging folder, kept in memory: claiming one fails as
    creating it there would (`FileTree`, `O_EXCL`): EEXIST for a name taken by a file or folder, ENOTDIR
    through a file, ENAMETOOLONG past the file system's name or path length. A sample whose names cannot
    all be claimed leaves none (the real writer removes its files and prunes its empty folders).

    Not modelled: a case-insensitive file system (macOS), where `Case.jpg` after `case.jpg` also clashes,
    and names a particular file system refuses (EILSEQ)."""

    def __init__(self, root: Path):
        self._prefix = len(os.fsencode(os.path.join(root, "")))
        self.name_max, self.path_max = _name_limits(root)
        self.files: set[str] = set()
        self.folders: set[str] = set()

    def claim(self, names: list[str]) -> None:
        files: list[str] = []
        folders: list[str] = []
        try:
            for name in names:
                parts = name.split("/")
                for depth in range(1, len(parts)):  # the folders on its way, top down
                    folder = "/".join(parts[:depth])
                    if folder not in self.folders:
                        self._check_new(folder)
                        self.folders.add(folder)
                        folders.append(folder)
                self._check_new(name)
                self.files.add(name)
                files.append(name)
        except OSError:
            self.files.difference_update(files)
            self.folders.difference_update(folders)
            raise

    def _check_new(self, relpath: str) -> None:
        """Raise the OSError creating `relpath` (a file or a folder) would raise."""
        encoded = os.fsencode(relpath)
        last = encoded[encoded.rfind(b"/") + 1 :]
        if self._prefix + len(encoded) >= self.path_max or len(last) > self.name_max:
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), relpath)
        if relpath in self.files or relpath in self.folders:
            raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), relpath)


def _name_limits(path: Path) -> tuple[int, int]:
    """(longest name, longest path incl. its NUL) of the file system `path` would be on (its nearest
    existing folder's)."""
    there = Path(path)
    while not there.exists() and there != there.parent:
        there = there.parent
    limits = []
    for name, default in (("PC_NAME_MAX", 255), ("PC_PATH_MAX", 4096)):
        try:
            limits.append(os.pathconf(there, name))
        except (OSError, ValueError):
            limits.append(default)
    return limits[0], limits[1]


class _NoLines:
    """Where a dry run's reject lines go: nowhere (`SampleWriter.reject` counts them first)."""

    def write(self, line: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class _CountedPart:
    """Stands in for the parquet part: each row is counted by the dry writer instead."""

    keys = None  # --dedup: the keys go to `DryRow.key`, for the driver
    places = None  # --webshart: a dry run writes no index

    def __init__(self, add) -> None:
        self.add = add

    def close(self) -> None:
        pass

    abort = close


class DrySampleWriter(SampleWriter):
    """`SampleWriter` deciding every sample the same way, writing nothing (see the module docstring)."""

    def __init__(self, shard_id: str, layout: Layout, settings: Settings, staging: Path):
        super().__init__(shard_id, layout, settings, staging)
        self.stage_streamed = False  # a streamed image is probed as it goes by; its body is never kept
        self.files = NameBook(layout.staged_files(shard_id))  # the real tree's names, in memory
        self.sources: Counter[str] = Counter()
        self.resolutions: Counter[str] = Counter()
        self.image_bytes = 0
        self.caption_bytes = 0
        self.rows: list[DryRow] | None = [] if rows_needed(settings) else None
        self._info: JsonInfo | None = None  # the sample being finished
        self._sample_bytes = (0, 0)  # (image, caption) bytes of the sample being finished
        self._ours: dict[str, bytes] | None = None  # --captions-in-place: the unit's journal (earlier runs' files)

    def _open_sinks(self) -> None:
        self._rejects_fh = _NoLines()
        self.part = _CountedPart(self._count_row)

    def finish(self, entry: Entry) -> None:
        self._info = entry.json.payload
        self._sample_bytes = (0, 0)
        super().finish(entry)

    def _write_sample(self, filename: str, ref: ImageRef, caption: str) -> int:
        """Claim the names the real write step creates; return the bytes it writes (image, caption file)."""
        in_place = self.settings.captions and self.settings.captions_in_place  # --link none: beside the images
        if in_place and isinstance(self.reader, FolderReader):  # a file already there is the real run's clash
            if self._ours is None:
                self._ours = unit_captions(self.layout, self.shard_id) or {}
            self.reader.check_caption_free(ref.offset, self._ours)
        self.files.claim(
            written_names(filename, self.images, self.captions)
        )  # under OUT/data (folderstream.data_files)
        image = ref.size if self.images else 0
        text = len(caption.encode("utf-8")) if self.captions or in_place else 0
        self._sample_bytes = (image, text)
        return image + text

    def row_key(self, info: JsonInfo) -> bytes | None:
        """The sample's `--dedup` key, compared across shards by the driver (`run.dry.DedupKeys`)."""
        return info.dedup_key

    def _list_repeat(self, line: dict) -> None:
        """A repeat within the shard: a `duplicate` the merge would write; counted."""
        self.counts[str(Reason.DUPLICATE)] += 1

    def _count_row(self, values: tuple) -> None:
        source = values[_SOURCE]
        source = NO_SOURCE if source is None else source
        resolution = f"{values[_WIDTH]}x{values[_HEIGHT]}"
        self.sources[source] += 1
        self.resolutions[resolution] += 1
        image, text = self._sample_bytes
        self.image_bytes += image
        self.caption_bytes += text
        if self.rows is not None:
            self.rows.append(DryRow(values[_FILENAME], source, resolution, image, text, self.row_key(self._info)))


class DryShardConverter(ShardConverter):
    """Reads a shard like `ShardConverter`, with a `DrySampleWriter`; no staging, no commit, no record."""

    def run(self) -> DryResult:
        start = time.monotonic()
        self.writer = writer = DrySampleWriter(self.shard_id, self.layout, self.settings, self.staging)
        error = self.read_all()
        return self.result(
            error,
            start,
            DryResult,
            sources=dict(sorted(writer.sources.items())),
            resolutions=dict(sorted(writer.resolutions.items())),
            image_bytes=writer.image_bytes,
            caption_bytes=writer.caption_bytes,
            rows=writer.rows,
        )


def dry_run_shard(src: ShardSource, out: Path, settings: Settings, progress: ProgressFn | None = None) -> DryResult:
    """Decide every sample of one shard as `convert_shard` into OUT would; write nothing (OUT is only a path:
    the names' lengths are those they would have there)."""
    return DryShardConverter(src, Layout(Path(out)), settings, progress).run()


__all__ = ["DryResult", "DryRow", "NO_SOURCE", "NameBook", "dry_run_shard", "rows_needed"]
