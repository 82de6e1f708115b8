"""The header-only scan (`shard.scan`): split points never cut a sample, and converting a shard in tasks cut at them
gives the bytes of the whole-shard conversion (ordered, unordered, GNU long names, pax headers, duplicates,
case-clashing names, lone members, members given up past `max_pending`)."""

from __future__ import annotations

import gzip
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
from dalle3_etl.shard.samples import classify
from dalle3_etl.shard.scan import ShardScan, choose_points, scan_tar

S = Settings()


def scan_bytes(raw: bytes, settings: Settings = S) -> ShardScan:
    return scan_tar(io.BytesIO(raw), len(raw), settings)


def headers(raw: bytes) -> list[tuple[int, str]]:
    """(first header offset, name) of each member, as tarfile sees them (long-name and pax headers included)."""
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        return [(ti.offset, ti.name) for ti in tf]


def assert_no_sample_cut(raw: bytes, points: tuple[int, ...]) -> None:
    members = headers(raw)
    starts = {off for off, _ in members}
    assert set(points) <= starts, "a point is not the first header of a member"
    for point in points:
        before = {classify(n)[0].casefold() for off, n in members if off < point and classify(n)[1]}
        after = {classify(n)[0].casefold() for off, n in members if off >= point and classify(n)[1]}
        assert not before & after, f"point {point} cuts the samples of {sorted(before & after)}"


def samples(keys, ext="jpg") -> list[tuple[str, bytes]]:
    return [m for k in keys for m in ((f"{k}.{ext}", img(nbytes=700)), (f"{k}.json", js()))]


def test_an_ordered_shard_may_be_cut_between_every_two_samples():
    raw = tar_bytes(samples([f"{i:03d}" for i in range(10)]))
    scan = scan_bytes(raw)
    assert scan.members == 20 and not scan.why_none
    members = headers(raw)
    assert scan.points == tuple(off for off, _ in members[2::2])  # before every image after the first sample
    assert_no_sample_cut(raw, scan.points)


def test_unordered_members_allow_a_point_only_where_nothing_waits():
    # a.jpg b.jpg a.json b.json | c.json c.jpg | d.jpg e.jpg e.json d.json
    m = {name: data for name, data in samples("abcde")}
    order = ["a.jpg", "b.jpg", "a.json", "b.json", "c.json", "c.jpg", "d.jpg", "e.jpg", "e.json", "d.json"]
    raw = tar_bytes([(n, m[n]) for n in order])
    scan = scan_bytes(raw)
    offsets = dict((n, off) for off, n in headers(raw))
    assert scan.points == (offsets["c.json"], offsets["d.jpg"])
    assert_no_sample_cut(raw, scan.points)


def test_gnu_long_names_and_pax_headers_point_at_their_first_header():
    long_a, long_b = "a" * 150, "ü" * 40 + "b"
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        raw = tar_bytes(samples(["x", long_a, long_b, "y"]), fmt)
        scan = scan_bytes(raw)
        assert len(scan.points) == 3, fmt
        assert_no_sample_cut(raw, scan.points)
        for point in scan.points:  # a meta header (long name / pax) or a plain header starts there
            assert raw[point + 156 : point + 157] in (b"L", b"x", b"0"), (fmt, point)


def test_a_repeated_key_or_a_clashing_name_keeps_its_members_in_one_task():
    # a duplicate member (a.jpg again), a case clash (B.jpg after b.jpg), a folder named like a sample's file
    members = samples(["a", "b", "d", "B"]) + [("a.png", img("png"))] + samples(["c.txt/x", "c", "e"])
    raw = tar_bytes(members)
    scan = scan_bytes(raw)
    offsets = [off for off, _ in headers(raw)]
    names = [n for _, n in headers(raw)]
    # a..a.png is one stretch (b and B clash inside it), then 'c.txt/x' and 'c' (clash on 'c.txt'), then e
    assert scan.points == (offsets[names.index("c.txt/x.jpg")], offsets[names.index("e.jpg")])
    assert_no_sample_cut(raw, scan.points)


def test_no_point_after_a_pax_global_header():
    raw_before = tar_bytes(samples(["a", "b"]))[:-1024]  # without its end-of-archive marker
    glob = meta_record(b"g", pax_data([(b"comment", b"made by a test")]))
    rest = tar_bytes(samples(["c", "d", "e"]))
    raw = raw_before + glob + rest
    scan = scan_bytes(raw)
    assert scan.points == (headers(raw_before + rest)[2][0],)  # between a and b only


def test_compressed_and_damaged_shards_have_no_point():
    raw = tar_bytes(samples(["a", "b", "c"]))
    gz = scan_bytes(gzip.compress(raw))
    assert gz.points == () and "compressed" in gz.why_none
    cut = scan_bytes(raw[: len(raw) // 2])
    assert cut.points == () and "damaged" in cut.why_none


def test_choose_points_evens_tasks_and_keeps_small_shards_whole():
    scan = ShardScan(size=10_000, members=100, points=tuple(range(100, 10_000, 100)))
    assert choose_points(scan, 10_000) == ()
    assert choose_points(scan, 7_000) == ()  # under 1.5x: whole
    assert choose_points(scan, 2_500) == (2_500, 5_000, 7_500)
    assert choose_points(ShardScan(10_000, 3, (9_900,)), 1_000) == (9_900,)  # the only candidate
    assert choose_points(ShardScan(10_000, 3, ()), 1_000) == ()


# -- the split conversion equals the whole one -------------------------------------------------------------

KEYS = ["a", "A", "b", "c", "c.v2", "d/x", "d", "É", "é", "l" * 120]
member_st = st.tuples(st.sampled_from(KEYS), st.sampled_from(["jpg", "png", "JPG", "json", "json", "txt"]))


def _tree(out: Path) -> dict:
    state = ".dalle3-etl/"
    keep = (f"{state}shards/", f"{state}parts/", f"{state}rejects/")
    return {k: v for k, v in tree(out).items() if (not k.startswith(state) or k.startswith(keep)) and "/cache" not in k}


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    members=st.lists(member_st, min_size=2, max_size=24),
    ordered_prefix=st.integers(0, 8),
    fmt=st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]),
    task_bytes=st.integers(1_500, 6_000),
    max_pending=st.sampled_from([1, 2, 10_000]),
    caption_field=st.sampled_from(["short_caption", ".txt"]),  # .txt: text members are a third role (img2dataset)
    guess=st.booleans(),  # False: the points are this scan's (else guessed by shard.probe, checked by the tasks)
)
def test_split_conversion_equals_the_whole_one(
    tmp_path_factory, members, ordered_prefix, fmt, task_bytes, max_pending, caption_field, guess
):
    listed = samples([f"s{i}" for i in range(ordered_prefix)])
    for key, ext in members:
        data = js() if ext == "json" else b"a caption" if ext == "txt" else img("png" if ext == "png" else "jpeg")
        listed.append((f"{key}.{ext}", data))
    root = tmp_path_factory.mktemp("hyp")
    (root / "in").mkdir()
    (root / "in" / "data-000000.tar").write_bytes(tar_bytes(listed, fmt))
    whole, split = root / "whole", root / "split"
    opts = {"workers": 1, "max_pending": max_pending, "caption_field": caption_field}
    convert([root / "in"], whole, **opts)
    with pytest.MonkeyPatch.context() as mp:
        if not guess:
            mp.setattr(tasks_mod, "probe_local", lambda src, s: None)
        convert([root / "in"], split, task_bytes=task_bytes, **opts)
    got, want = _tree(split), _tree(whole)
    got.pop("multidatabackend.json"), want.pop("multidatabackend.json")
    assert got == want


@pytest.mark.parametrize("ratio", [0.0, 0.5, 1.0])
def test_synth_shards_are_split_without_cutting_a_sample(tmp_path, ratio):
    from dalle3_etl.devtools.synth import SynthSpec, write_corpus

    write_corpus(tmp_path, SynthSpec(shards=1, per_shard=40, image_bytes=500, json_first_ratio=ratio))
    raw = (tmp_path / "data-000000.tar").read_bytes()
    scan = scan_bytes(raw)
    assert len(scan.points) >= 30
    assert_no_sample_cut(raw, scan.points)
