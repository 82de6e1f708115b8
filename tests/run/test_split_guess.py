"""Guessed split points are checked before a shard is put together (`run.tasks.split_fails`): whatever the guess,
even inside a member's data, the output is the whole shard's; a guess the full scan allows holds (no redo); one
that does not hold has the shard converted again whole, said in the run's notices and kept by later runs."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from badinput_helpers import img, js, meta_record, pax_data, tar_bytes
from conftest import convert, tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dalle3_etl.run import tasks as tasks_mod
from dalle3_etl.settings import Settings
from dalle3_etl.shard.scan import scan_tar
from dalle3_etl.store.layout import Layout

SID = "data-000000"


def _published(out: Path) -> dict:
    state = ".dalle3-etl/"
    keep = (f"{state}shards/", f"{state}parts/", f"{state}rejects/")
    files = {k: v for k, v in tree(out).items() if (not k.startswith(state) or k.startswith(keep))}
    files.pop("multidatabackend.json", None)
    return files


def _pair(key: str) -> list[tuple[str, bytes]]:
    return [(f"{key}.jpg", img(nbytes=700)), (f"{key}.json", js())]


def _convert_with(root: Path, raw: bytes, points, workers: int = 1, **opts):
    """Whole, then split at exactly `points` (the guess), into root/whole and root/split."""
    (root / "in").mkdir(parents=True)
    (root / "in" / f"{SID}.tar").write_bytes(raw)
    convert([root / "in"], root / "whole", workers=1, **opts)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tasks_mod, "probe_local", lambda src, s: tuple(points))
        summary = convert([root / "in"], root / "split", workers=workers, task_bytes=1024, **opts)
    return summary


KEYS = ["a", "A", "b", "c", "c.v2", "d/x", "d", "É", "é", "l" * 120]
member_st = st.tuples(st.sampled_from(KEYS), st.sampled_from(["jpg", "png", "JPG", "json", "json", "txt"]))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    members=st.lists(member_st, min_size=2, max_size=20),
    ordered_prefix=st.integers(0, 6),
    fmt=st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]),
    picks=st.lists(st.integers(1, 10**6), min_size=1, max_size=4),
    at_members=st.booleans(),
    max_pending=st.sampled_from([1, 10_000]),
    caption_field=st.sampled_from(["short_caption", ".txt"]),
)
def test_whatever_the_guess_the_output_is_the_whole_shards(
    tmp_path_factory, members, ordered_prefix, fmt, picks, at_members, max_pending, caption_field
):
    listed = [m for i in range(ordered_prefix) for m in _pair(f"s{i}")]
    for key, ext in members:
        data = js() if ext == "json" else b"a caption" if ext == "txt" else img("png" if ext == "png" else "jpeg")
        listed.append((f"{key}.{ext}", data))
    raw = tar_bytes(listed, fmt)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        starts = [ti.offset for ti in tf][1:]
    if at_members and starts:  # first headers of members: some hold, some cut a sample or a name
        points = sorted({starts[p % len(starts)] for p in picks})
    else:  # any block: inside data, a long-name record's header, the end-of-archive marker, its padding
        points = sorted({512 * (1 + p % (len(raw) // 512 - 1)) for p in picks})
    opts = {"max_pending": max_pending, "caption_field": caption_field}
    summary = _convert_with(tmp_path_factory.mktemp("guess"), raw, points, **opts)
    root = summary.out.parent
    assert _published(root / "split") == _published(root / "whole")
    free = set(scan_tar(io.BytesIO(raw), len(raw), Settings(**opts)).points)
    if set(points) <= free:
        assert not summary.redone_whole  # the checks are not stricter than the scan


def _global_header_tar() -> bytes:
    """Samples, a pax global header of comments after the third, more samples (built by hand: tarfile cannot)."""
    head = tar_bytes([m for i in range(3) for m in _pair(f"s{i:02d}")])[:-1024].rstrip(b"\0")
    head += bytes(-len(head) % 512)
    tail = tar_bytes([m for i in range(3, 40) for m in _pair(f"s{i:02d}")])
    return head + meta_record(b"g", pax_data([(b"comment", b"made by hand")])) + tail


def _cases() -> dict[str, tuple[bytes, str]]:
    pairs = [m for i in range(40) for m in _pair(f"s{i:02d}")]
    late = pairs[:10] + [pairs[11]] + pairs[12:] + [pairs[10]]  # s05.json waits for its image until the end
    dup = pairs + [("s03.json", js("again"))]  # a duplicate the whole shard rejects
    damaged = bytearray(tar_bytes(pairs))
    with tarfile.open(fileobj=io.BytesIO(bytes(damaged))) as tf:
        victim = [ti.offset for ti in tf][30]
    damaged[victim + 148 : victim + 156] = b"0000000\0"  # a bad checksum in the first half
    return {
        "late partner": (tar_bytes(late), "waits for its partner"),
        "duplicate": (tar_bytes(dup), "also in an earlier task"),
        "global header": (_global_header_tar(), "pax global header"),
        "damage": (bytes(damaged), "could not be read"),
    }


@pytest.mark.parametrize("case", ["late partner", "duplicate", "global header", "damage"])
@pytest.mark.parametrize("workers", [1, 2])
def test_a_guess_that_does_not_hold_has_the_shard_converted_again_whole(tmp_path, case, workers):
    raw, why = _cases()[case]
    tasks_mod_probe = tasks_mod.probe_local
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / f"{SID}.tar").write_bytes(raw)
    from dalle3_etl.sources.local import local_source

    points = tasks_mod_probe(local_source(tmp_path / "probe" / f"{SID}.tar"), Settings(task_bytes=len(raw) // 3))
    assert points, "the probe guessed nothing: the case tests nothing"
    summary = _convert_with(tmp_path, raw, points, workers=workers)
    assert _published(tmp_path / "split") == _published(tmp_path / "whole")
    assert list(summary.redone_whole) == [SID] and why in summary.redone_whole[SID]
    assert any("converted again whole" in line for line in summary.notices())
    plan = Layout(tmp_path / "split").task_plan(SID)
    assert plan.exists() and b'"points":[]' in plan.read_bytes()  # later runs convert it whole too


def test_a_shard_recorded_whole_after_a_failed_guess_stays_whole_in_later_runs(tmp_path):
    from dalle3_etl.shard.convert import source_fingerprint
    from dalle3_etl.sources.local import local_source
    from dalle3_etl.store.tasks import tasks_done, write_plan

    raw = tar_bytes([m for i in range(40) for m in _pair(f"s{i:02d}")])
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / f"{SID}.tar").write_bytes(raw)
    src = local_source(tmp_path / "in" / f"{SID}.tar")
    layout = Layout(tmp_path / "out")
    layout.ensure()
    write_plan(layout, SID, source_fingerprint(src), ())  # what TaskBook.redo_whole leaves
    settings = Settings(task_bytes=len(raw) // 4)
    assert tasks_mod.shard_ranges(layout, src, settings) is None
    todo, book = tasks_mod.plan_tasks(layout, [src], settings)
    assert [t.part for t in todo] == [None] and not book.split
    assert tasks_done(layout, SID) is None  # `status` shows no "0 of 1 parts done"
