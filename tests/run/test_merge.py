"""merge: the parquet merged while the run goes on is byte for byte the one merged at the end."""

from __future__ import annotations

import dataclasses
import hashlib

import pyarrow.parquet as pq
import pytest
from conftest import convert

from dalle3_etl.run import merge as merge_mod
from dalle3_etl.run.merge import PartMerger, StreamingMerge, merge_parquet
from dalle3_etl.settings import Settings
from dalle3_etl.sources.base import natural_key
from dalle3_etl.store.layout import Layout
from dalle3_etl.store.records import all_records

SMALL_GROUPS = dataclasses.replace(Settings(), row_group_rows=7)  # groups that straddle part boundaries


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _reference(layout: Layout, settings: Settings) -> tuple[str, int]:
    done = sorted(all_records(layout), key=natural_key)
    rows = merge_parquet(layout, done, settings)
    return _sha(layout.out / settings.parquet_name), rows


@pytest.fixture
def layout(converted_copy):
    return Layout(converted_copy[0])


def _stream_every_shard(layout: Layout, settings: Settings) -> tuple[StreamingMerge, list[str]]:
    shards = sorted(all_records(layout), key=natural_key)
    streaming = StreamingMerge(layout, settings, complete=[], todo=shards)
    for sid in shards:
        streaming.settle(sid)
    return streaming, shards


@pytest.mark.parametrize("settings", [Settings(), SMALL_GROUPS], ids=["default", "groups-of-7"])
@pytest.mark.parametrize("arrival", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_streaming_in_any_arrival_order_gives_the_same_bytes(layout, settings, arrival):
    want, want_rows = _reference(layout, settings)
    shards = sorted(all_records(layout), key=natural_key)
    streaming = StreamingMerge(layout, settings, complete=[], todo=shards)
    for i in arrival:
        streaming.settle(shards[i])
        ready = 0  # a part is merged only once every shard before it is settled
        while ready < 3 and ready in arrival[: arrival.index(i) + 1]:
            ready += 1
        assert streaming.merged == shards[:ready]
    (layout.out / settings.parquet_name).unlink()
    assert streaming.finish(shards) == want_rows
    assert _sha(layout.out / settings.parquet_name) == want


def test_row_groups_have_the_fixed_size_across_parts(layout):
    streaming, shards = _stream_every_shard(layout, SMALL_GROUPS)
    rows = streaming.finish(shards)
    meta = pq.ParquetFile(layout.out / SMALL_GROUPS.parquet_name).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sum(sizes) == rows and all(n == 7 for n in sizes[:-1]) and 0 < sizes[-1] <= 7


def test_shards_complete_before_the_run_and_a_failed_shard(layout):
    """Earlier shards merge at once; a shard that failed this run (no record) is left out, in order."""
    settings = SMALL_GROUPS
    shards = sorted(all_records(layout), key=natural_key)
    failed = shards[1]
    layout.record(failed).unlink()  # as a failed conversion leaves it: no record
    want, want_rows = _reference(layout, settings)
    streaming = StreamingMerge(layout, settings, complete=[shards[0], shards[2]], todo=[failed])
    assert streaming.merged == []  # nothing is merged before the first result
    streaming.settle(failed)
    assert streaming.merged == [shards[0], shards[2]]
    (layout.out / settings.parquet_name).unlink()
    assert streaming.finish([shards[0], shards[2]]) == want_rows
    assert _sha(layout.out / settings.parquet_name) == want


def test_a_different_final_set_is_merged_again_from_scratch(layout):
    streaming, shards = _stream_every_shard(layout, SMALL_GROUPS)
    layout.record(shards[0]).unlink()  # the set of complete shards changed after it was merged
    want, want_rows = _reference(layout, SMALL_GROUPS)
    (layout.out / SMALL_GROUPS.parquet_name).unlink()
    assert streaming.finish(shards[1:]) == want_rows
    assert _sha(layout.out / SMALL_GROUPS.parquet_name) == want


def test_an_error_while_streaming_does_not_stop_the_run(layout, monkeypatch):
    """A merge error during the run (full disk...) stops the streaming only; the end merges as usual."""
    shards = sorted(all_records(layout), key=natural_key)
    want, want_rows = _reference(layout, SMALL_GROUPS)
    calls = []

    def failing_add(self, shard_id):
        calls.append(shard_id)
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(PartMerger, "add", failing_add)
        streaming = StreamingMerge(layout, SMALL_GROUPS, complete=[], todo=shards)
        streaming.settle(shards[0])  # does not raise
        streaming.settle(shards[1])
    assert calls == [shards[0]] and not streaming.active
    assert not list(layout.out.glob(".*.tmp"))  # the half-written parquet is gone
    (layout.out / SMALL_GROUPS.parquet_name).unlink()
    assert streaming.finish(shards) == want_rows
    assert _sha(layout.out / SMALL_GROUPS.parquet_name) == want


def test_a_run_merges_while_converting(corpus, tmp_path, monkeypatch):
    """In a real run, parts are merged as results come in: at the end only the last group is written."""
    root, _ = corpus
    finished_at = []
    added = []
    real_add = PartMerger.add
    real_merge_parquet = merge_mod.merge_parquet

    def add(self, shard_id):
        added.append(shard_id)
        return real_add(self, shard_id)

    def merge_parquet_spy(*args, **kwargs):
        finished_at.append("from scratch")
        return real_merge_parquet(*args, **kwargs)

    monkeypatch.setattr(PartMerger, "add", add)
    monkeypatch.setattr(merge_mod, "merge_parquet", merge_parquet_spy)
    summary = convert([root], tmp_path / "a", workers=2)
    assert summary.exit_code == 0
    assert added == sorted(added, key=natural_key) and len(added) == 3
    assert finished_at == []  # nothing merged again at the end
    monkeypatch.undo()
    one_go = convert([root], tmp_path / "b", workers=1)
    assert one_go.rows == summary.rows
    assert _sha(tmp_path / "a" / "dalle3.parquet") == _sha(tmp_path / "b" / "dalle3.parquet")
