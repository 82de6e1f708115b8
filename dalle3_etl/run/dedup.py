"""`--dedup FIELD`: the first sample with a key is kept (shard order, then member order), every later one is a
`duplicate` reject naming it.

A worker cannot know the shards before its own, so it decides only within its shard: it writes the first
occurrence of a key as a row (its key in the part's hidden `_dedup` column) and lists later ones in the
shard's dups file, without files or row. Across shards the driver decides, at merge time, in shard order,
every run anew from the committed parts: so the result is always the one-run result, whatever the worker
count, executor, resume, or shards added later (even one that sorts first). `DedupMerger` does it for the
parts `PartMerger` merges, in the same pass:

- a row whose key an earlier merged row has is dropped from the parquet, its files are held back from
  OUT/data (`run.held`) and it gets a reject line; a held row that is a first occurrence again (an earlier
  shard was redone with other content) has its files moved back;
- a shard's own reject lines go to rejects.jsonl first, then its duplicate lines, in member order;
- `dedup.json` keeps, per shard, the rows dropped and the duplicates, for verify, status and stats.

`KeyTable` holds the keys seen, in arrays: 1.2 M keys take 28 MB (a Python set of the same 16-byte `bytes`
takes 92 MB; tests/run/test_dedup.py bounds the table with tracemalloc).
"""

from __future__ import annotations

import os
import shutil
import struct
from array import array
from bisect import bisect_right
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from dalle3_etl.run.held import hold_files
from dalle3_etl.settings import Settings
from dalle3_etl.shard.rows import Reason
from dalle3_etl.shard.sinks import column_array
from dalle3_etl.store.crash import crash_point
from dalle3_etl.store.layout import Layout

EMPTY = 0xFFFFFFFF  # "no first occurrence"; row numbers stay below it
_PAIR = struct.Struct("=QQ")  # a 16-byte key as two native 64-bit halves, as the part's buffer is read


class KeyTable:
    """16-byte keys -> the row number of their first occurrence, rows numbered from 0 in the order added.

    Every row's key is kept, in row order, in one array (`keys`: 16 bytes a row, copied a batch at a time)
    and an open-addressing index holds, for each distinct key, 1 + the row of its first occurrence (4 bytes a
    slot; linear probing; 0 is a free slot), rebuilt larger when 3/4 full. 1.2 M rows: 19 MB of keys and
    8 MB of index. The loop in `add_keys` is the driver's cost of --dedup (about 1 µs a row)."""

    def __init__(self, capacity: int = 1 << 17):
        self.keys = array("Q")
        self.size = 0  # distinct keys
        self._index(max(16, 1 << (capacity - 1).bit_length()))

    @property
    def rows(self) -> int:
        return len(self.keys) // 2

    @property
    def nbytes(self) -> int:
        return self.keys.itemsize * len(self.keys) + self.slots.itemsize * len(self.slots)

    def _index(self, capacity: int) -> None:
        """(Re)build the index with `capacity` slots from the first occurrences it holds."""
        old = getattr(self, "slots", ())
        self.mask = mask = capacity - 1
        self.limit = capacity * 3 // 4
        slots = array("I", [0]) * capacity
        keys = self.keys
        for n in old:
            if n:
                i = keys[2 * n - 2] & mask  # the low half: a hash's bits are uniform
                while slots[i]:
                    i = (i + 1) & mask
                slots[i] = n
        self.slots = slots

    def add_keys(self, data: bytes | memoryview, valid: list[bool] | None = None) -> list[tuple[int, int]]:
        """Add the keys of a batch (`data`: 16 bytes a row; `valid`: None when every row has a key, else False
        for a row without one). Returns (row in the batch, row of the first occurrence) of the rows whose key
        was added before."""
        keys = self.keys
        first = len(keys) // 2
        keys.frombytes(data)
        halves = memoryview(data).cast("B").cast("Q")
        seen = []
        slots, mask, limit, size = self.slots, self.mask, self.limit, self.size
        row = first - 1
        for lo, hi in zip(halves[::2], halves[1::2]):
            row += 1
            if valid is not None and not valid[row - first]:
                continue  # the field is missing: kept
            i = lo & mask
            while n := slots[i]:
                if keys[2 * n - 2] == lo and keys[2 * n - 1] == hi:
                    seen.append((row - first, n - 1))
                    break
                i = (i + 1) & mask
            else:
                slots[i] = row + 1
                size += 1
                if size > limit:  # 4 times larger while small: fewer rebuilds
                    self._index((mask + 1) * (4 if mask < 1 << 20 else 2))
                    slots, mask, limit = self.slots, self.mask, self.limit
        self.size = size
        return seen

    def get(self, key: bytes) -> int | None:
        """The row of the key's first occurrence, or None."""
        lo, hi = _PAIR.unpack(key)
        slots, keys, mask = self.slots, self.keys, self.mask
        i = lo & mask
        while n := slots[i]:
            if keys[2 * n - 2] == lo and keys[2 * n - 1] == hi:
                return n - 1
            i = (i + 1) & mask
        return None


class DedupMerger:
    """Merges parts like `PartMerger` (`parts`), dropping duplicates first; writes rejects.jsonl and dedup.json.

    Same interface as `PartMerger` (add, finish, abort, merged), so `StreamingMerge` and `merge_parquet` use
    either. Rows are numbered in merge order as the parts hold them (before any is dropped): a shard's first
    row is `starts[i]`, which names the sample a duplicate points at."""

    def __init__(self, layout: Layout, settings: Settings, parts: Any):  # a run.merge.PartMerger (merge imports us)
        self.layout = layout
        self.settings = settings
        self.parts = parts
        self.table = KeyTable()
        self.ids: list[str] = []
        self.starts: list[int] = []
        self.counts: dict[str, dict[str, int]] = {}
        self._rejects_tmp = layout.tmp(layout.merged_rejects)
        self._rejects = open(self._rejects_tmp, "wb")

    @property
    def merged(self) -> list[str]:
        return self.parts.merged

    def add(self, shard_id: str) -> None:
        first = self.table.rows
        self.ids.append(shard_id)
        self.starts.append(first)
        dropped: list[tuple[int, int, str]] = []  # (row in the part, first occurrence, member)
        for batch in self.parts.batches(shard_id):
            self.parts.take(self._drop_seen(shard_id, batch, dropped))
        repeats = self._repeats(shard_id)  # (rows before it, first occurrence, member): no row, no files
        names = self._names({v for _, v, _ in dropped} | {v for _, v, _ in repeats})
        # member order: a repeat listed with `at` rows before it comes just before row `at` (stable sort)
        lines = sorted(
            [(row - first, 1, member, v) for row, v, member in dropped]
            + [(at, 0, member, v) for at, v, member in repeats],
            key=lambda line: line[:2],
        )
        hold_files(self.layout, self.settings, shard_id, [member for _, _, member in dropped])
        self._write_rejects(shard_id, [(member, names[v]) for _, _, member, v in lines])
        self.counts[shard_id] = {"dropped": len(dropped), "duplicates": len(lines)}
        self.parts.merged.append(shard_id)
        crash_point("dedup", shard_id)

    def _drop_seen(self, shard_id: str, batch: pa.RecordBatch, dropped: list) -> pa.RecordBatch:
        """The batch without its hidden key column and without the rows whose key was seen before."""
        first = self.table.rows
        keys = batch.column(batch.num_columns - 1)  # the hidden key column is last (`--fields _dedup` is a name too)
        data = keys.buffers()[1]
        data = memoryview(data)[keys.offset * 16 : (keys.offset + len(keys)) * 16] if len(keys) else b""
        valid = keys.is_valid().to_pylist() if keys.null_count else None
        seen = self.table.add_keys(data, valid)
        public = pa.RecordBatch.from_arrays(batch.columns[:-1], schema=self.parts.schema)
        if not seen:
            return public
        rows = [j for j, _ in seen]
        filenames = public.column("filename").take(column_array(rows, pa.int32())).to_pylist()
        prefix = f"{shard_id}/"
        for (j, v), filename in zip(seen, filenames):
            dropped.append((first + j, v, filename.removeprefix(prefix)))
        keep = sorted(set(range(batch.num_rows)) - set(rows))
        return public.take(column_array(keep, pa.int32()))

    def _repeats(self, shard_id: str) -> list[tuple[int, int, str]]:
        """The shard's samples left out by the worker as repeats of an earlier row of the shard: each key is
        in the table by now (that row's, or an earlier shard's)."""
        try:
            data = self.layout.dups(shard_id).read_bytes()
        except FileNotFoundError:
            return []
        out = []
        for line in data.splitlines():
            item = orjson.loads(line)
            v = self.table.get(bytes.fromhex(item["key"]))
            out.append((item["at"], EMPTY if v is None else v, item["member"]))
        return out

    def _names(self, rows: set[int]) -> dict[int, str]:
        """`shard/member` of each merged row number, read from the `filename` column of the parts holding them."""
        by_shard: dict[int, list[int]] = {}
        for v in rows:
            if v != EMPTY:
                by_shard.setdefault(bisect_right(self.starts, v) - 1, []).append(v)
        names = {EMPTY: "an earlier sample of this shard"}  # a dups file that does not match its part
        for i, wanted in by_shard.items():
            sid = self.ids[i]
            column = pq.read_table(self.layout.part(sid), columns=["filename"]).column("filename")
            wanted.sort()
            taken = column.take(column_array([v - self.starts[i] for v in wanted], pa.int32())).to_pylist()
            prefix = f"{sid}/"
            names.update({v: f"{sid}/{name.removeprefix(prefix)}" for v, name in zip(wanted, taken)})
        return names

    def _write_rejects(self, shard_id: str, lines: list[tuple[str, str]]) -> None:
        """The shard's own reject lines, then its duplicates' in member order."""
        try:
            with open(self.layout.rejects(shard_id), "rb") as fh:
                shutil.copyfileobj(fh, self._rejects)
        except FileNotFoundError:
            pass
        field = self.settings.dedup
        for member, kept in lines:
            line = {
                "shard": shard_id,
                "member": member,
                "reason": Reason.DUPLICATE,
                "detail": f"same {field} as {kept}",
            }
            self._rejects.write(orjson.dumps(line) + b"\n")

    def finish(self) -> int:
        """rejects.jsonl and dedup.json, then the parquet (`PartMerger.finish`). Returns the row count."""
        try:
            self._rejects.flush()
            os.fsync(self._rejects.fileno())
            self._rejects.close()
            self.layout.fs.replace(self._rejects_tmp, self.layout.merged_rejects)
            counts = {"field": self.settings.dedup, "keys": self.table.size, "shards": self.counts}
            self.layout.fs.write_atomic(self.layout.dedup_counts, orjson.dumps(counts, option=orjson.OPT_INDENT_2))
        except BaseException:
            self.abort()
            raise
        crash_point("merge", "rejects")
        return self.parts.finish()

    def abort(self) -> None:
        self._rejects.close()
        self.layout.fs.unlink(self._rejects_tmp)
        self.parts.abort()


def read_dedup_counts(layout: Layout) -> dict[str, dict[str, int]]:
    """Per shard, what the last --dedup merge decided: {"dropped": rows left out of the parquet, "duplicates":
    all its duplicate rejects}; {} without --dedup or before the first merge."""
    try:
        return orjson.loads(layout.dedup_counts.read_bytes()).get("shards", {})
    except FileNotFoundError:
        return {}


__all__ = ["DedupMerger", "KeyTable", "read_dedup_counts"]
