"""Completion records: `ShardRecord` reads every record an earlier version wrote and writes it again byte
for byte the same; a record that does not parse counts as no record."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dalle3_etl.store.layout import Layout
from dalle3_etl.store.records import ShardRecord, all_records, read_record, write_record

# Two record files exactly as the code before ShardRecord wrote them (a dict dumped with sorted keys and
# indent 2, at b27035e), from one conversion: a complete shard and a damaged one.
OLD_COMPLETE = b"""{
  "error": null,
  "notes": {
    "size_from_header": 1
  },
  "published": true,
  "rejects": {},
  "samples": 5,
  "settings": {
    "caption_fallbacks": [
      "long_caption",
      "short_caption2",
      "long_caption2",
      "original_prompt"
    ],
    "caption_field": "short_caption",
    "captions": true,
    "compression": "zstd",
    "fields": [],
    "flat": false,
    "images": true,
    "max_dimension": 65535,
    "max_json_bytes": 1048576,
    "max_pending": 10000,
    "parquet_name": "dalle3.parquet",
    "row_group_rows": 65536
  },
  "shard": "data-000000",
  "source": {
    "mtime_ns": 1796061906995670762,
    "path": "/tmp/store_fx/in/data-000000.tar",
    "size": 61440
  }
}"""

OLD_DAMAGED = b"""{
  "error": "/tmp/store_fx/in/data-000001.tar: truncated inside member '000008.jpg' data (needs 6466 bytes at offset 30720, file ends at 34233)",
  "notes": {},
  "published": true,
  "rejects": {
    "json_without_image": 1,
    "shard_unreadable": 1
  },
  "samples": 3,
  "settings": {
    "caption_fallbacks": [
      "long_caption",
      "short_caption2",
      "long_caption2",
      "original_prompt"
    ],
    "caption_field": "short_caption",
    "captions": true,
    "compression": "zstd",
    "fields": [],
    "flat": false,
    "images": true,
    "max_dimension": 65535,
    "max_json_bytes": 1048576,
    "max_pending": 10000,
    "parquet_name": "dalle3.parquet",
    "row_group_rows": 65536
  },
  "shard": "data-000001",
  "source": {
    "mtime_ns": 1796061907009144985,
    "path": "/tmp/store_fx/in/data-000001.tar",
    "size": 34233
  }
}"""


@pytest.fixture
def layout(tmp_path) -> Layout:
    layout = Layout(tmp_path / "out")
    layout.ensure()
    return layout


@pytest.mark.parametrize("old", [OLD_COMPLETE, OLD_DAMAGED], ids=["complete", "damaged"])
def test_a_record_written_before_shard_record_reads_back_and_writes_byte_identical(layout, old):
    sid = "data-000000" if old is OLD_COMPLETE else "data-000001"
    layout.record(sid).write_bytes(old)
    record = read_record(layout, sid)
    assert isinstance(record, ShardRecord) and record.shard == sid
    layout.record(sid).unlink()
    write_record(layout, record)
    assert layout.record(sid).read_bytes() == old
    assert ShardRecord.from_bytes(old).to_bytes() == old


def test_the_fields_of_an_old_record(layout):
    complete, damaged = ShardRecord.from_bytes(OLD_COMPLETE), ShardRecord.from_bytes(OLD_DAMAGED)
    assert (complete.samples, complete.rejects, complete.notes, complete.error, complete.published) == (
        5,
        {},
        {"size_from_header": 1},
        None,
        True,
    )
    assert not complete.damaged and complete.settings["parquet_name"] == "dalle3.parquet"
    assert complete.source == {
        "mtime_ns": 1796061906995670762,
        "path": "/tmp/store_fx/in/data-000000.tar",
        "size": 61440,
    }
    assert damaged.damaged and damaged.error.startswith("/tmp/store_fx/in/data-000001.tar: truncated")
    assert damaged.rejects == {"json_without_image": 1, "shard_unreadable": 1} and damaged.samples == 3


def test_an_update_writes_the_same_bytes_as_the_old_dict_update(layout):
    """publish_flat's update (fewer samples, a name_clash count, published) as the dict code made it."""
    import orjson

    old = orjson.loads(OLD_DAMAGED)
    old["samples"] -= 1
    old["rejects"]["name_clash"] = old["rejects"].get("name_clash", 0) + 1
    old["published"] = True
    record = ShardRecord.from_bytes(OLD_DAMAGED)
    record = replace(
        record,
        samples=record.samples - 1,
        published=True,
        rejects={**record.rejects, "name_clash": record.rejects.get("name_clash", 0) + 1},
    )
    assert record.to_bytes() == orjson.dumps(old, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


@pytest.mark.parametrize(
    "text",
    [
        OLD_COMPLETE[: len(OLD_COMPLETE) // 2],  # torn
        OLD_COMPLETE.replace(b'"notes"', b'"nites"'),  # a field missing
        b"[]",
        b"null",
        b"",
    ],
    ids=["torn", "missing-key", "list", "null", "empty"],
)
def test_a_record_that_does_not_parse_counts_as_no_record(layout, text):
    layout.record("data-000000").write_bytes(text)
    layout.record("data-000001").write_bytes(OLD_DAMAGED)
    assert read_record(layout, "data-000000") is None
    assert list(all_records(layout)) == ["data-000001"]
    assert read_record(layout, "data-000009") is None  # no file at all
