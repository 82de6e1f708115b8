"""Merge the committed shards into ONE parquet (what SimpleTuner reads) and one rejects.jsonl.

Parts are streamed batch by batch in shard order and re-cut into row groups of a fixed size, so the
bytes depend only on the rows: not on worker count, executor, or which run converted which shard.
Both outputs are written to a temporary name and renamed into place.

With `--flat` every image lives directly in OUT/data, so two shards may carry the same name. Files of
a flat shard wait under the state folder until `publish_flat` moves them in, here, in shard order:
the first shard to claim a name keeps it, a later one gets a `name_clash` reject and no row.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from dalle3_etl.records import Reason
from dalle3_etl.settings import Settings
from dalle3_etl.sinks import caption_relpath, parquet_writer, schema_for
from dalle3_etl.state import Layout, read_record, remove_path, write_atomic, write_record


def _shard_files(filename: str, settings: Settings) -> list[str]:
    names = []
    if settings.images:
        names.append(filename)
    if settings.captions:
        names.append(caption_relpath(filename))
    return names


def publish_flat(layout: Layout, shard_id: str, settings: Settings) -> None:
    """Move a committed flat shard's files into OUT/data without overwriting; idempotent after a crash."""
    record = read_record(layout, shard_id)
    if record is None or record.get("published"):
        return
    src_root = layout.flat_files(shard_id)
    table = pq.read_table(layout.part(shard_id))
    keep = []
    clashes = []
    for filename in table.column("filename").to_pylist():
        names = _shard_files(filename, settings)
        pending = [n for n in names if (src_root / n).exists()]
        if any((layout.data / n).exists() for n in pending):
            clashes.append(filename)
            keep.append(False)
            continue
        for name in pending:
            dst = layout.data / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(src_root / name, dst)  # fails rather than overwrite
            os.unlink(src_root / name)
        keep.append(True)
    if clashes:
        kept = table.filter(pa.array(keep))
        tmp = layout.part(shard_id).with_name(f".{shard_id}.parquet.tmp")
        pq.write_table(kept, tmp, compression="zstd")
        os.replace(tmp, layout.part(shard_id))
        lines = [
            orjson.dumps({"shard": shard_id, "member": name, "reason": Reason.NAME_CLASH,
                          "detail": f"{name} (or its caption file) already exists in {layout.data} (--flat)"})
            for name in clashes
        ]
        rejects = layout.rejects(shard_id)
        write_atomic(rejects, rejects.read_bytes() + b"".join(line + b"\n" for line in lines))
        record["samples"] -= len(clashes)
        record["rejects"][Reason.NAME_CLASH] = record["rejects"].get(Reason.NAME_CLASH, 0) + len(clashes)
    record["published"] = True
    write_record(layout, shard_id, record)
    remove_path(src_root)


def unpublish_flat(layout: Layout, shard_id: str, settings: Settings) -> None:
    """Remove the files a flat shard moved into OUT/data (before that shard is redone)."""
    part = layout.part(shard_id)
    if not part.exists():
        return
    src_root = layout.flat_files(shard_id)
    for filename in pq.read_table(part, columns=["filename"]).column("filename").to_pylist():
        for name in _shard_files(filename, settings):
            if not (src_root / name).exists():
                (layout.data / name).unlink(missing_ok=True)


def merge_parquet(layout: Layout, shard_ids: list[str], settings: Settings) -> int:
    schema = schema_for(settings)
    final = layout.out / settings.parquet_name
    tmp = final.with_name(f".{final.name}.tmp")
    rows = 0
    group = settings.row_group_rows
    writer = parquet_writer(tmp, schema, settings.compression)
    try:
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        for sid in shard_ids:
            for batch in pq.ParquetFile(layout.part(sid)).iter_batches(batch_size=group):
                pending.append(batch)
                pending_rows += batch.num_rows
                while pending_rows >= group:
                    table = pa.Table.from_batches(pending, schema=schema)
                    writer.write_table(table.slice(0, group), row_group_size=group)
                    rest = table.slice(group)
                    pending = rest.to_batches()
                    pending_rows = rest.num_rows
                    rows += group
        if pending_rows:
            writer.write_table(pa.Table.from_batches(pending, schema=schema), row_group_size=group)
            rows += pending_rows
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(tmp, final)
    return rows


def merge_rejects(layout: Layout, shard_ids: list[str]) -> int:
    final = layout.out / "rejects.jsonl"
    tmp = final.with_name(f".{final.name}.tmp")
    count = 0
    with open(tmp, "wb") as out:
        for sid in shard_ids:
            path = layout.rejects(sid)
            if path.exists():
                with open(path, "rb") as fh:
                    for line in fh:
                        out.write(line)
                        count += 1
    os.replace(tmp, final)
    return count


def merge(layout: Layout, shard_ids: list[str], settings: Settings) -> int:
    """Publish flat shards in order, then write dalle3.parquet and rejects.jsonl. Returns the row count."""
    if settings.flat:
        for sid in shard_ids:
            publish_flat(layout, sid, settings)
    merge_rejects(layout, shard_ids)
    return merge_parquet(layout, shard_ids, settings)


__all__ = ["merge", "merge_parquet", "merge_rejects", "publish_flat", "unpublish_flat"]
