"""Per-shard completion records (`.dalle3-etl/shards/<id>.json`): read, written and listed in one place.

A shard is complete exactly when its record exists; the record is written last, atomically, after the
shard's part, rejects and files are in their final place.
"""

from __future__ import annotations

from typing import Any

import orjson

from dalle3_etl.store.layout import Layout


def read_record(layout: Layout, shard_id: str) -> dict[str, Any] | None:
    try:
        return orjson.loads(layout.record(shard_id).read_bytes())
    except FileNotFoundError:
        return None
    except orjson.JSONDecodeError:
        return None  # a torn record never happens with write_atomic; treat as incomplete anyway


def write_record(layout: Layout, shard_id: str, record: dict[str, Any]) -> None:
    layout.fs.write_atomic(layout.record(shard_id), orjson.dumps(record, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


def all_records(layout: Layout) -> dict[str, dict[str, Any]]:
    out = {}
    folder = layout.state / "shards"
    if folder.is_dir():
        for path in folder.glob("*.json"):
            rec = read_record(layout, path.stem)
            if rec is not None:
                out[path.stem] = rec
    return out
