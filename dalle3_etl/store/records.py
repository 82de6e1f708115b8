"""Per-shard completion records (`.dalle3-etl/shards/<id>.json`): `ShardRecord`, read, written and listed here.

A shard is complete exactly when its record exists; the record is written last, atomically, after the
shard's part, rejects and files are in their final place. A record file that does not parse (torn, not a
JSON object, a field missing) counts as no record: the shard is redone.

On disk a record is the JSON object of its fields, keys sorted, indented by 2, no newline at the end; an
output written by an earlier version reads back and writes again byte for byte the same.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import orjson

from dalle3_etl.store.layout import Layout


@dataclass(frozen=True)
class ShardRecord:
    """What a completed shard left in OUT, as its record says. Update with `dataclasses.replace`."""

    shard: str
    source: dict[str, Any]  # the input's fingerprint (path, size, mtime...): a changed input is redone
    settings: dict[str, Any]  # the output-changing settings it was converted with
    samples: int  # rows in its part
    rejects: dict[str, int]  # by reason
    notes: dict[str, int]  # not rejects: size_from_header, other_members...
    error: str | None  # damaged: the tar could not be read to the end (the samples before it are kept)
    published: bool  # --flat: its files are moved into OUT/data (always true without --flat)

    @property
    def damaged(self) -> bool:
        return bool(self.error)

    def to_bytes(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    @classmethod
    def from_bytes(cls, data: bytes) -> ShardRecord | None:
        """The record in `data`, or None when it does not parse as one."""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None  # a torn record never happens with write_atomic; treat as incomplete anyway
        names = [f.name for f in fields(cls)]
        if not isinstance(obj, dict) or any(name not in obj for name in names):
            return None
        return cls(**{name: obj[name] for name in names})


def read_record(layout: Layout, shard_id: str) -> ShardRecord | None:
    try:
        return ShardRecord.from_bytes(layout.record(shard_id).read_bytes())
    except FileNotFoundError:
        return None


def write_record(layout: Layout, record: ShardRecord) -> None:
    layout.fs.write_atomic(layout.record(record.shard), record.to_bytes())


def all_records(layout: Layout) -> dict[str, ShardRecord]:
    """Every completed shard's record, by shard id."""
    out = {}
    for shard_id in sorted(layout.record_ids()):
        rec = read_record(layout, shard_id)
        if rec is not None:
            out[shard_id] = rec
    return out
