"""Guessed split points (`shard.probe`): found near each target without a scan, at the start of a sample in tars
that keep a sample's members together (what the full scan allows), and not guessed at all where the head of the
shard shows that guessing would fail."""

from __future__ import annotations

import io
import tarfile
from dataclasses import replace

import pytest
from badinput_helpers import img, js, tar_bytes
from hypothesis import given
from hypothesis import strategies as st

from dalle3_etl.devtools.synth import SynthSpec, write_corpus
from dalle3_etl.settings import Settings
from dalle3_etl.shard.probe import probe_points
from dalle3_etl.shard.samples import classify
from dalle3_etl.shard.scan import key_token, key_tokens, name_token, scan_tar

S = Settings()


def probe(raw: bytes, task_bytes: int) -> tuple[int, ...] | None:
    return probe_points(io.BytesIO(raw), len(raw), replace(S, task_bytes=task_bytes))


def allowed(raw: bytes) -> set[int]:
    return set(scan_tar(io.BytesIO(raw), len(raw), S).points)


@pytest.mark.parametrize("seed,json_first,tasks", [(1, 0.0, 4), (2, 0.5, 7), (3, 1.0, 12), (4, 0.5, 30)])
def test_points_guessed_in_written_shards_are_points_the_full_scan_allows(tmp_path, seed, json_first, tasks):
    write_corpus(tmp_path, SynthSpec(shards=1, per_shard=150, seed=seed, image_bytes=900, json_first_ratio=json_first))
    raw = (tmp_path / "data-000000.tar").read_bytes()
    points = probe(raw, len(raw) // tasks)
    assert points is not None and len(points) == tasks - 1  # one near each target
    assert set(points) <= allowed(raw)
    size = len(raw)
    for k, point in enumerate(points, 1):  # near its target: a few samples after it at most
        assert 0 <= point - size * k // tasks < 4 * size // 150


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_names_are_cut_before_their_long_name_or_pax_record(fmt):
    stem = "x" * 120  # over ustar's 100 bytes: a GNU long-name record or a pax header before each member
    members = [m for i in range(60) for m in ((f"{stem}{i:03d}.jpg", img(nbytes=700)), (f"{stem}{i:03d}.json", js()))]
    raw = tar_bytes(members, fmt)
    points = probe(raw, len(raw) // 5)
    assert points is not None and len(points) == 4
    assert set(points) <= allowed(raw)


def test_an_unordered_shard_is_left_to_the_full_scan():
    keys = [f"k{i:03d}" for i in range(80)]
    members = [(f"{k}.json", js()) for k in keys] + [(f"{k}.jpg", img(nbytes=700)) for k in keys]
    raw = tar_bytes(members)
    assert probe(raw, len(raw) // 4) is None  # nothing is free at its start: every guess would fail
    assert allowed(raw) == set()


def test_a_small_shard_stays_whole_and_a_shard_without_headers_to_find_is_scanned():
    raw = tar_bytes([m for i in range(10) for m in ((f"s{i}.jpg", img(nbytes=700)), (f"s{i}.json", js()))])
    assert probe(raw, len(raw)) == ()
    v7 = bytearray(raw)  # no ustar magic anywhere: nothing to guess at, the scan decides
    for off in range(0, len(v7) - 512, 512):
        if v7[off + 257 : off + 262] == b"ustar":
            v7[off + 257 : off + 265] = bytes(8)
            v7[off + 148 : off + 156] = b"%06o\0 " % (sum(v7[off : off + 148]) + 256 + sum(v7[off + 156 : off + 512]))
    assert probe(bytes(v7), len(v7) // 4) is None


def test_a_tar_inside_a_member_may_be_guessed_into(tmp_path):
    """A header in a member's data looks like any other: the guess lands there, and only the tasks can tell."""
    inner = tar_bytes([(f"in{i:03d}.jpg", img(nbytes=700)) for i in range(200)])
    outer = [m for i in range(10) for m in ((f"s{i}.jpg", img(nbytes=700)), (f"s{i}.json", js()))]
    outer.append(("payload.bin", inner))
    outer += [m for i in range(10, 20) for m in ((f"s{i}.jpg", img(nbytes=700)), (f"s{i}.json", js()))]
    raw = tar_bytes(outer)
    points = probe(raw, len(raw) // 2)
    assert points is not None and len(points) == 1
    assert points[0] not in allowed(raw)  # inside payload.bin


@given(st.text(alphabet="aAbÉé./_x-", min_size=1, max_size=12), st.sampled_from(["jpg", "JSON", "txt", "png"]))
def test_a_keys_token_is_the_token_of_every_member_name_with_that_key(stem, ext):
    name = f"{stem}.{ext}"
    key, role, _ = classify(name, frozenset({"txt"}))
    if role is not None:
        assert key_token(key) == name_token(name)


@given(st.lists(st.text(alphabet="aAbÉéẞß./_x-\udcff\x00", max_size=8), max_size=30))
def test_a_tasks_tokens_are_the_key_tokens(keys):
    assert key_tokens(keys) == [key_token(k) for k in keys]


def test_a_compressed_shard_is_not_guessed_into(tmp_path):
    import gzip

    raw = tar_bytes([m for i in range(60) for m in ((f"s{i}.jpg", img(nbytes=700)), (f"s{i}.json", js()))])
    packed = gzip.compress(raw)
    assert probe(packed, len(packed) // 4) is None  # the scan decides, and finds no point in a stream either
    assert scan_tar(io.BytesIO(packed), len(packed), S).points == ()
