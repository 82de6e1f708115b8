"""`--flat`: every image directly in OUT/data, so two shards may carry the same name.

Files of a flat shard wait under the state folder until `publish_flat` moves them in, at merge time, in
shard order: the first shard to claim a name keeps it, a later one gets a `name_clash` reject and no row.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from dalle3_etl.settings import Settings
from dalle3_etl.shard.commit import same_file
from dalle3_etl.shard.rows import Reason
from dalle3_etl.shard.sinks import written_names
from dalle3_etl.store.crash import crash_point, fsync_file
from dalle3_etl.store.fsio import OwnershipError
from dalle3_etl.store.layout import Layout
from dalle3_etl.store.records import read_record, write_record


def _shard_files(filename: str, settings: Settings) -> list[str]:
    return written_names(filename, settings.images, settings.captions)


def _taken(layout: Layout, path: Path) -> bool:
    """The name exists, or cannot be created without going through a symlink (a user's, never followed) or
    below a file (another shard's)."""
    try:
        layout.fs.check(path)
    except OwnershipError:
        return True
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        return True
    return True


def publish_flat(layout: Layout, shard_id: str, settings: Settings) -> None:
    """Move a committed flat shard's files into OUT/data without overwriting; idempotent after a crash.

    Each file is hard-linked into OUT/data, then its staged name removed, so a crash leaves it in one
    place or both (the same inode, recognised on the next run). Which names clash is decided once
    and kept in `flat/<shard>/.dalle3-etl-clashes.json` until the record says `published`, so a
    re-run after a crash makes the same decision even though some files already moved.
    """
    record = read_record(layout, shard_id)
    if record is None or record.published:
        return
    table = pq.read_table(layout.part(shard_id))
    filenames = table.column("filename").to_pylist()
    ordered = _clashes(layout, shard_id, filenames, settings)
    clashes = set(ordered)
    _link_in(layout, shard_id, [f for f in filenames if f not in clashes], settings)
    if clashes:
        _drop_clashing_rows(layout, shard_id, table, [f not in clashes for f in filenames])
        _write_clash_rejects(layout, shard_id, ordered)
        record = replace(
            record,
            samples=record.samples - len(clashes),  # it still holds the conversion's counts
            rejects={**record.rejects, str(Reason.NAME_CLASH): record.rejects.get(Reason.NAME_CLASH, 0) + len(clashes)},
        )
    write_record(layout, replace(record, published=True))
    layout.fs.remove_tree(layout.flat_files(shard_id))


def _clashes(layout: Layout, shard_id: str, filenames: list[str], settings: Settings) -> list[str]:
    """The rows whose files are taken in OUT/data, in row order: decided once, journalled for a re-run."""
    src_root = layout.flat_files(shard_id)
    journal = layout.flat_clashes(shard_id)
    if journal.exists():
        return orjson.loads(journal.read_bytes())  # decided before a crash; the part may be filtered already
    ordered = []
    for filename in filenames:
        for name in _shard_files(filename, settings):
            src, dst = src_root / name, layout.data / name
            if src.exists() and _taken(layout, dst) and not same_file(src, dst):
                ordered.append(filename)
                break
    if ordered:
        src_root.mkdir(parents=True, exist_ok=True)
        layout.fs.write_atomic(journal, orjson.dumps(ordered))
    return ordered


def _link_in(layout: Layout, shard_id: str, filenames: list[str], settings: Settings) -> None:
    """Link each staged file into OUT/data (never over an existing name), then drop its staged name."""
    src_root = layout.flat_files(shard_id)
    moved = 0
    for filename in filenames:
        for name in _shard_files(filename, settings):
            src, dst = src_root / name, layout.data / name
            if not src.exists():
                continue  # moved before a crash
            if not same_file(src, dst):
                layout.fs.make_folders(dst.parent)
                layout.fs.link_new(src, dst)  # fails rather than overwrite
            moved += 1
            crash_point("publish", shard_id, moved)
            layout.fs.unlink(src)


def _drop_clashing_rows(layout: Layout, shard_id: str, table: pa.Table, keep: list[bool]) -> None:
    if all(keep):
        return  # already filtered by a run that crashed later
    tmp = layout.tmp(layout.part(shard_id))
    pq.write_table(table.filter(pa.array(keep)), tmp, compression="zstd")
    fsync_file(tmp)
    layout.fs.replace(tmp, layout.part(shard_id))
    crash_point("publish_part", shard_id)


def _write_clash_rejects(layout: Layout, shard_id: str, ordered: list[str]) -> None:
    rejects = layout.rejects(shard_id)
    lines = [
        line
        for line in rejects.read_bytes().splitlines(keepends=True)
        if orjson.loads(line).get("reason") != Reason.NAME_CLASH
    ]  # drop lines of a crashed publish
    lines += [
        orjson.dumps(
            {
                "shard": shard_id,
                "member": name,
                "reason": Reason.NAME_CLASH,
                "detail": f"data/{name} (or its caption file) is taken in OUT/data, by an earlier shard or a file "
                "or link that is not this run's (--flat)",
            }
        )
        + b"\n"
        for name in ordered
    ]
    layout.fs.write_atomic(rejects, b"".join(lines))


__all__ = ["publish_flat"]
