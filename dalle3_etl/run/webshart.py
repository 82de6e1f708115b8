"""--webshart: train straight from the tars. One index per shard, `OUT/webshart/<shard>.json`, in the format of
the `webshart` package (SimpleTuner's `webshart` data backend), and its dataloader entry.

The workers keep, per row, where the image member's data is in the tar (the part's hidden `_offset`/`_length`
columns, `shard.sinks.WEBSHART_COLUMNS`). After the merge has decided the rows (filters, rejects and `--dedup`
duplicates are not in the parquet), each completed shard's index is built from its part: the rows the merged
parquet kept, in member order, with the parquet's caption (or with --extra-captions its list of captions) and
size. An index is written atomically and only when its bytes change.

SimpleTuner keeps caches of what the indexes say, and reads them before the indexes: webshart's metadata cache
(`<cache_dir>/metadata_cache/...`, per shard), SimpleTuner's bucket, caption and metadata caches (in `cache_dir`,
its webshart backend's `instance_data_dir`), and VAE latents keyed by `webshart://<shard number>/<sample
number>/<name>`, which another index or one more tar gives to another image. So the cache folders the entry names
are per generation of the indexes, `.../<digest of every index>`: a run that changes any index, or the set of
them, makes the entry point SimpleTuner at new, empty caches, and nothing it cached from other indexes is read
again (nor removed: those folders are SimpleTuner's files, and the summary names them for the user to delete).

The index format (webshart 0.4.6 to 0.6): `{"path": "<tar name>", "filesize": <tar bytes>,
"includes_image_geometry": true, "files": {"<member>": {"offset", "length", "width", "height", "aspect",
"captions"}}}`. webshart only reads plain tars at absolute offsets, finds `<name>.tar` files (lower case) in ONE
source folder and skips a tar without an index silently: `check_inputs` refuses anything else before any work.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from dalle3_etl.errors import UsageError
from dalle3_etl.settings import CAPTIONS_COLUMN, Settings
from dalle3_etl.shard.sinks import WEBSHART_COLUMNS
from dalle3_etl.sources.base import ShardSource, natural_key, shown
from dalle3_etl.sources.folder import FolderUnit
from dalle3_etl.sources.hub.keep import kept_path
from dalle3_etl.sources.hub.stream import HubShardSource
from dalle3_etl.store.crash import crash_point
from dalle3_etl.store.layout import Layout
from dalle3_etl.store.records import ShardRecord, all_records

BATCH_ROWS = 8192  # rows read at a time from a part or the parquet
#: First bytes of compressed data: webshart reads members at offsets of the file itself.
_COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))


@dataclass
class IndexOutcome:
    """What `write_indexes` did: shards whose index was (re)written, removed, and whose cache was cleared."""

    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    indexes: int = 0
    generation: str = ""  # the digest of the indexes, part of the name of the entry's cache folders


class WebshartError(UsageError):
    """Inputs that SimpleTuner's webshart backend cannot read as they are."""


def tar_location(src: ShardSource) -> Path | None:
    """Where the shard's tar is on disk (absolute, as given): a local file, or an `hf://` shard's kept copy."""
    if isinstance(src, HubShardSource):
        return kept_path(src.keep_dir, src.path_in_repo).absolute() if src.keep_dir else None
    return Path(src.uri).absolute()


def _compression(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError:
        return None  # the run reports an unreadable shard as it does without --webshart
    return next((kind for magic, kind in _COMPRESSED if head.startswith(magic)), None)


def check_inputs(sources: list[ShardSource], layout: Layout, *, restart: bool) -> Path:
    """The folder holding every input tar; refuses (exit 2, before any work) what webshart cannot read."""
    folders: dict[Path, str] = {}
    for src in sources:
        if isinstance(src, FolderUnit):
            raise WebshartError(
                f"--webshart: {shown(src.uri)} is an extracted folder, not a tar: its images are files already, "
                "so convert it without --webshart (SimpleTuner reads them from OUT/data)"
            )
        where = tar_location(src)
        if where is None:
            raise WebshartError(
                f"--webshart: {shown(src.uri)} is streamed from the Hub; the index must point at a tar on disk: "
                "add --keep-tars DIR (the tars are kept there and indexed in place)"
            )
        if not where.name.endswith(".tar") or src.shard_id + ".tar" != where.name:
            raise WebshartError(
                f"--webshart: {shown(str(where))} is not a plain '<name>.tar' (webshart reads only uncompressed "
                "tars named *.tar, lower case); decompress or rename it first"
            )
        kind = _compression(where) if not isinstance(src, HubShardSource) else None
        if kind is not None:
            raise WebshartError(
                f"--webshart: {shown(str(where))} is {kind}-compressed; webshart reads members at offsets of the "
                "file itself: decompress it first"
            )
        folders.setdefault(where.parent, str(where))
    if not folders:
        raise WebshartError("--webshart: no input tar")
    if len(folders) > 1:
        first, second = list(folders.values())[:2]
        raise WebshartError(
            f"--webshart: the inputs are in {len(folders)} folders ({shown(first)}, {shown(second)}...); "
            "SimpleTuner's webshart backend reads ONE folder of tars: put them in one folder"
        )
    folder = next(iter(folders))
    before = read_tars(layout).get("source")
    if before and before != str(folder) and not restart:
        raise WebshartError(
            f"--webshart: {layout.out} indexes the tars in {shown(before)}, these are in {shown(str(folder))}; "
            "SimpleTuner reads ONE folder: use that folder, or --restart"
        )
    return folder


def read_tars(layout: Layout) -> dict[str, Any]:
    """{"source": the tars' folder, "tars": {shard id: tar name}} as the runs recorded it ({} before)."""
    try:
        return orjson.loads(layout.webshart_tars.read_bytes())
    except FileNotFoundError:
        return {}


def remember_tars(layout: Layout, folder: Path, sources: list[ShardSource]) -> None:
    """Record the folder and the tar name of each input shard (an index names its tar; entry and verify
    need the folder), before the shards are converted."""
    tars = read_tars(layout).get("tars", {})
    tars.update({src.shard_id: tar_location(src).name for src in sources})
    data = {"source": str(folder), "tars": dict(sorted(tars.items(), key=lambda kv: natural_key(kv[0])))}
    layout.fs.write_atomic(layout.webshart_tars, orjson.dumps(data, option=orjson.OPT_INDENT_2))


def cache_dir(layout: Layout, settings: Settings, generation: str) -> Path:
    """The entry's webshart `cache_dir` (webshart's metadata cache and SimpleTuner's bucket caches), under OUT, for
    the entry's `generation` (`run.entry.entry_generation`, which covers the indexes)."""
    return layout.cache("webshart", settings.simpletuner.id) / generation


def index_generation(layout: Layout) -> str:
    """The digest of the present indexes (`write_indexes` keeps it), "0" before any."""
    try:
        return layout.webshart_generation.read_text().strip() or "0"
    except FileNotFoundError:
        return "0"


def webshart_entry(layout: Layout, settings: Settings, out: Layout, generation: str) -> dict[str, Any]:
    """SimpleTuner's webshart image dataset (absolute paths; `out`: OUT where it is read from), without the
    sizes and caches every image entry has (`run.entry` adds them)."""
    st = settings.simpletuner
    source = read_tars(layout).get("source", "")
    return {
        "id": st.id,
        "type": "webshart",
        "dataset_type": "image",
        "source": source,
        "metadata": str(out.webshart_dir),
        "caption_strategy": "webshart",
        "metadata_backend": "webshart",
        "webshart": {"cache_dir": str(cache_dir(out, settings, generation)), "shard_cache_gb": 0},
    }


def _merged_names(layout: Layout, settings: Settings) -> Iterator[str]:
    """The merged parquet's filenames, in order (streamed)."""
    pf = pq.ParquetFile(layout.parquet(settings.parquet_name), pre_buffer=False)
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=["filename"], use_threads=False):
        yield from batch.column(0).to_pylist()


def index_bytes(layout: Layout, settings: Settings, shard_id: str, tar: dict[str, Any], kept) -> bytes:
    """The shard's index: the part's rows the merge kept (`kept(filename)`), in member order."""
    caption = CAPTIONS_COLUMN if settings.extra_captions else "caption"
    columns = ["filename", caption, "width", "height", *WEBSHART_COLUMNS]  # names no --fields column takes
    prefix = len(shard_id) + 1
    entries: list[bytes] = []  # `"<member>":{...}` each: the JSON is made piece by piece, not as a dict of dicts
    part = pq.ParquetFile(layout.part(shard_id), pre_buffer=False)
    dumps = orjson.dumps
    for batch in part.iter_batches(batch_size=BATCH_ROWS, columns=columns, use_threads=False):
        for name, captions, width, height, offset, length in zip(*(c.to_pylist() for c in batch.columns)):
            if kept(name):
                entry = {"offset": offset, "length": length, "width": width, "height": height}
                entry.update(aspect=width / height, captions=captions)
                entries.append(dumps(name[prefix:]) + b":" + dumps(entry))
    head = dumps({"path": tar["name"], "filesize": tar["size"], "includes_image_geometry": True})
    return head[:-1] + b',"files":{' + b",".join(entries) + b"}}"


def _tar_size(layout: Layout, source: str, name: str, record: ShardRecord | None) -> int:
    """The tar's size as it was converted (its record's fingerprint), else as it is now."""
    size = (record.source or {}).get("size") if record is not None else None
    return size if isinstance(size, int) else os.stat(os.path.join(source, name)).st_size


def write_indexes(layout: Layout, settings: Settings, done: list[str]) -> IndexOutcome:
    """Write the index of every completed shard (`done`, in shard order) whose bytes change; remove those of
    shards no longer complete; clear webshart's cache of each rewritten one."""
    outcome = IndexOutcome()
    tars = read_tars(layout)
    source = tars.get("source", "")
    records = all_records(layout)
    names = _merged_names(layout, settings)
    head = next(names, None)

    def kept(name: str) -> bool:
        nonlocal head
        if name != head:
            return False  # left out by the merge (a --dedup duplicate)
        head = next(names, None)
        return True

    layout.webshart_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    for sid in done:
        name = tars.get("tars", {}).get(sid, f"{sid}.tar")
        tar = {"name": name, "size": _tar_size(layout, source, name, records.get(sid))}
        data = index_bytes(layout, settings, sid, tar, kept)
        digest.update(orjson.dumps([sid, hashlib.sha256(data).hexdigest()]))
        outcome.indexes += 1
        pa.default_memory_pool().release_unused()  # the driver's peak RSS is the merge's, not this
        path = layout.webshart_index(sid)
        try:
            if path.read_bytes() == data:
                continue
        except FileNotFoundError:
            pass
        layout.fs.write_atomic(path, data)
        crash_point("webshart", sid)
        outcome.written.append(sid)
    if head is not None:
        raise RuntimeError(f"--webshart: the parquet row {head!r} is in no completed shard's part")
    for sid in sorted(layout.known_ids() - set(done), key=natural_key):
        if layout.fs.unlink(layout.webshart_index(sid)):
            outcome.removed.append(sid)
    generation = digest.hexdigest()[:16]
    if generation != index_generation(layout):  # part of the name of the entry's caches (run.entry)
        layout.fs.write_atomic(layout.webshart_generation, generation.encode())
    outcome.generation = generation
    return outcome


def webshart_lines(outcome: IndexOutcome, out: Path) -> list[str]:
    """The summary's lines about the indexes: where, how many rewritten, which removed."""
    lines = [f"  indexes:    {Layout(out).webshart_dir} ({outcome.indexes}, {len(outcome.written)} written this run)"]
    if outcome.removed:
        lines.append(f"  indexes removed (shard no longer complete): {', '.join(outcome.removed)}")
    return lines


__all__ = [
    "IndexOutcome",
    "WebshartError",
    "cache_dir",
    "check_inputs",
    "index_generation",
    "index_bytes",
    "read_tars",
    "remember_tars",
    "tar_location",
    "webshart_entry",
    "webshart_lines",
    "write_indexes",
]
