"""Planning tasks (`run.tasks`): which shards are split, ranges recorded and kept, largest first, progress per shard."""

from __future__ import annotations

import gzip
import os
from dataclasses import replace
from pathlib import Path

import pytest

import dalle3_etl.run.tasks as tasks_mod
from dalle3_etl.devtools.synth import SynthSpec, write_corpus
from dalle3_etl.run.tasks import (
    TaskBook,
    _Split,
    plan_tasks,
    scan_many,
    scan_points,
    shard_ranges,
    splittable,
    tail_settings,
)
from dalle3_etl.settings import Settings
from dalle3_etl.shard.convert import ShardResult
from dalle3_etl.shard.taskconvert import task_key
from dalle3_etl.sources.base import ShardSource
from dalle3_etl.sources.hub.stream import HubShardSource
from dalle3_etl.sources.local import local_source
from dalle3_etl.store.layout import Layout
from dalle3_etl.store.tasks import TaskRange, read_plan


@pytest.fixture
def shards(tmp_path) -> list[ShardSource]:
    root = tmp_path / "in"
    write_corpus(root, SynthSpec(shards=3, per_shard=30, seed=2, image_bytes=1000))
    big = root / "data-000002.tar"  # the largest: two copies of a shard's samples (renamed) make it twice as big
    write_corpus(tmp_path / "more", SynthSpec(shards=1, per_shard=60, seed=3, image_bytes=1000, first_shard=2))
    os.replace(tmp_path / "more" / "data-000002.tar", big)
    return [local_source(p) for p in sorted(root.glob("*.tar"))]


def _layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "out")
    layout.ensure()
    return layout


class HubLike(ShardSource):
    pass


def test_only_plain_local_shards_without_dedup_or_flat_are_split(shards):
    src = shards[0]
    assert splittable(src, Settings())
    assert not splittable(HubLike(src.shard_id, src.uri, src.size, src.fingerprint), Settings())
    assert not splittable(src, Settings(dedup="md5_file_hash"))
    assert not splittable(src, Settings(flat=True))


def test_a_compressed_shard_stays_whole(shards, tmp_path):
    gz = tmp_path / "data-000009.tar.gz"
    gz.write_bytes(gzip.compress(Path(shards[0].uri).read_bytes()))
    assert shard_ranges(_layout(tmp_path), local_source(gz), Settings(task_bytes=5_000)) is None


def test_ranges_are_recorded_and_kept_by_a_later_run_with_another_task_size(shards, tmp_path):
    layout, src = _layout(tmp_path), shards[0]
    ranges = shard_ranges(layout, src, Settings(task_bytes=src.size // 4))
    assert ranges is not None and len(ranges) == 4
    assert ranges[0].start == 0 and ranges[-1].end is None
    assert [r.end for r in ranges[:-1]] == [r.start for r in ranges[1:]]
    assert shard_ranges(layout, src, Settings(task_bytes=src.size // 2)) == ranges  # kept
    assert shard_ranges(layout, src, Settings(task_bytes=10 * src.size)) == ranges  # kept, even above the size
    changed = replace(src, fingerprint={**src.fingerprint, "mtime_ns": 1})
    assert read_plan(layout, src.shard_id, changed.fingerprint) is None
    assert shard_ranges(layout, changed, Settings(task_bytes=10 * src.size)) is None  # input changed: planned anew
    assert not layout.shard_tasks(src.shard_id).exists()


def test_tasks_run_largest_first_and_ties_in_shard_order(shards, tmp_path):
    layout = _layout(tmp_path)
    small = shards[0].size
    todo, book = plan_tasks(layout, list(reversed(shards)), Settings(task_bytes=small // 2))
    lengths = [t.part.length(t.source.size) if t.part else t.source.size for t in todo]
    assert lengths == sorted(lengths, reverse=True)
    assert {t.source.shard_id for t in todo} == {s.shard_id for s in shards}
    assert all(t.part is not None for t in todo)  # every shard is 1.5x the task size or more
    keys = [(-n, t.source.shard_id, t.part.index) for n, t in zip(lengths, todo)]
    assert keys == sorted(keys)  # equal lengths: shard order, then task order
    assert set(book.split) == {s.shard_id for s in shards}


def test_the_smallest_shards_up_to_a_round_of_tasks_get_tasks_four_times_finer(shards, tmp_path):
    task_bytes = shards[0].size // 2
    by_size = sorted(shards, key=lambda s: s.size)
    sums = [sum(s.size for s in by_size[: i + 1]) for i in range(len(by_size))]
    for workers in range(1, 11):
        chosen = tail_settings(shards, Settings(task_bytes=task_bytes), workers)
        round_ = workers * task_bytes  # the smallest shards whose sizes add up to at most a round of tasks
        expected = {s.shard_id for s, total in zip(by_size, sums) if total <= round_} if workers > 1 else set()
        assert set(chosen) == expected, workers
        assert workers < 10 or expected == {s.shard_id for s in shards}  # ~2 + 2 + 4 task_bytes
        assert all(s.task_bytes == task_bytes // 4 for s in chosen.values())
    assert tail_settings(shards, Settings(task_bytes=task_bytes, dedup="md5_file_hash"), 8) == {}  # never split
    assert tail_settings(shards, Settings(task_bytes=task_bytes), 8, {by_size[0].shard_id}).keys() == {
        s.shard_id for s in by_size[1:]
    }  # an hf:// shard kept whole is left out
    hub = HubShardSource("data-000009", "hf://x/data/data-000009.tar", by_size[0].size // 2, {}, path_in_repo="data")
    chosen = tail_settings([*shards, hub], Settings(task_bytes=task_bytes), 10)
    assert set(chosen) == {s.shard_id for s in shards}  # the smallest, an hf:// shard, keeps task_bytes (read twice)

    layout = _layout(tmp_path)
    todo, _ = plan_tasks(layout, shards, Settings(task_bytes=task_bytes, workers=3))
    counts = {s.shard_id: sum(1 for t in todo if t.source.shard_id == s.shard_id) for s in shards}
    assert counts[by_size[0].shard_id] == round(by_size[0].size / (task_bytes // 4))  # ~8 instead of 2
    assert counts[by_size[-1].shard_id] == round(by_size[-1].size / task_bytes)
    lengths = [t.part.length(t.source.size) for t in todo]
    assert lengths == sorted(lengths, reverse=True)


def test_progress_is_summed_per_shard_and_never_goes_past_a_finished_task(tmp_path):
    src = ShardSource("data-000000", "/nowhere/data-000000.tar", 300, {})
    book = TaskBook(_layout(tmp_path), Settings())
    book.split["data-000000"] = entry = _Split(
        src, [TaskRange(0, 3, 0, 100), TaskRange(1, 3, 100, 200), TaskRange(2, 3, 200, None)], submitted=3
    )
    seen: list[tuple[str, int, int]] = []
    report = book.progress(lambda sid, b, s: seen.append((sid, b, s)))
    report(task_key("data-000000", 0), 40, 2)
    report(task_key("data-000000", 1), 30, 1)
    assert seen[-1] == ("data-000000", 70, 3)
    done = ShardResult("data-000000", ok=True, samples=5, bytes_in=100, part=0)
    assert book.settle(done) is None  # tasks still out
    report(task_key("data-000000", 0), 60, 3)  # late: ignored
    assert seen[-1] == ("data-000000", 70, 3)
    report(task_key("data-000000", 2), 10, 1)
    assert seen[-1] == ("data-000000", 100 + 30 + 10, 5 + 1 + 1)
    report("data-000001", 7, 1)  # a whole shard goes through unchanged
    assert seen[-1] == ("data-000001", 7, 1)
    failed = ShardResult("data-000000", ok=False, failure="boom")  # a worker died: no index
    assert book.settle(failed) is None
    last = book.settle(ShardResult("data-000000", ok=True, samples=1, bytes_in=100, part=2))
    assert last is not None and not last.ok and last.failure == "boom"  # the shard fails, redone next run
    assert entry.results[0].ok


def test_shards_scanned_in_a_pool_get_the_ranges_of_a_serial_scan(shards, tmp_path, monkeypatch):
    monkeypatch.setattr(tasks_mod, "probe_local", lambda src, settings: None)  # the full scan, in a pool
    settings = Settings(task_bytes=shards[0].size // 3)
    serial = {s.shard_id: scan_points(s, settings) for s in shards}
    assert all(len(points) >= 2 for points in serial.values())
    assert scan_many(shards, replace(settings, workers=2)) == serial
    layout = _layout(tmp_path)
    todo, _ = plan_tasks(layout, shards, replace(settings, workers=2))
    assert {t.source.shard_id for t in todo} == set(serial)
    for src in shards:
        ranges = read_plan(layout, src.shard_id, src.fingerprint)
        assert ranges is not None and [r.start for r in ranges[1:]] == list(serial[src.shard_id])
