"""Fuzz: valid small shards with random bytes corrupted and cut at random offsets.

Whatever the damage, a conversion must end (no hang), never raise, never turn a bad input into a "failed"
shard (that is for output I/O errors), never write outside OUT, and leave an OUT whose images each have
exactly one row and a caption file. The seekable-file and stream paths must keep the same rows."""

from __future__ import annotations

import gzip
import os
import signal
import tarfile
import tempfile
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
from badinput_helpers import check_output, img, js, member_offsets, snapshot, source, tar_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dalle3_etl.run.pipeline import run_convert
from dalle3_etl.settings import Settings
from dalle3_etl.shard.rows import REASONS

HARD_LIMIT_S = 20  # a single example taking this long is a hang
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "120"))  # e.g. FUZZ_EXAMPLES=5000 for a longer hunt


def _base_members() -> list:
    return [
        ("a.json", js(caption="first\nsample")),
        ("a.jpg", img()),
        ("b.png", img("png", 30, 20)),
        ("b.json", js(width=...)),  # size from the PNG header
        ("dir/" + "long" * 40 + ".jpg", img()),
        ("dir/" + "long" * 40 + ".json", js()),  # GNU long name / pax path
        ("caf\u00e9.jpeg", img(w=20, h=10)),
        ("caf\u00e9.json", js(width="?")),  # non-ASCII, header size
        ("e.jpg", img()),
        ("e.json", js()),
    ]


def _variants() -> dict[str, bytes]:
    members = _base_members()
    gnu = tar_bytes(members, tarfile.GNU_FORMAT)
    return {"gnu": gnu, "pax": tar_bytes(members, tarfile.PAX_FORMAT), "gzip": gzip.compress(gnu, mtime=0)}


VARIANTS = _variants()
HEADERS = {
    name: sorted(h for h, _ in member_offsets(data).values()) for name, data in VARIANTS.items() if name != "gzip"
}
HEADERS["gzip"] = [0]


@st.composite
def damage(draw):
    variant = draw(st.sampled_from(sorted(VARIANTS)))
    data = bytearray(VARIANTS[variant])
    n = len(data)
    near_header = st.builds(lambda h, i: min(n - 1, h + i), st.sampled_from(HEADERS[variant]), st.integers(0, 511))
    flips = draw(st.lists(st.tuples(st.one_of(st.integers(0, n - 1), near_header), st.integers(0, 255)), max_size=6))
    for offset, value in flips:
        data[offset] = value
    cut = draw(st.one_of(st.none(), st.integers(0, n)))
    if cut is not None:
        data = data[:cut]
    return variant, bytes(data)


@contextmanager
def hard_limit(seconds: int):
    def on_alarm(signum, frame):
        raise TimeoutError(f"conversion still running after {seconds} s: hang")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def rows_of(out: Path) -> list[tuple]:
    import pyarrow.parquet as pq

    return [
        (r["filename"], r["caption"], r["width"], r["height"])
        for r in pq.read_table(out / "dalle3.parquet").to_pylist()
    ]


def test_variants_convert_cleanly(tmp_path):
    for name, data in VARIANTS.items():
        path = tmp_path / f"{name}.tar"
        path.write_bytes(data)
        summary = run_convert([source(path)], tmp_path / f"out-{name}", Settings(workers=1))
        assert summary.exit_code == 0 and summary.rows == 5, name


@pytest.fixture(scope="module")
def arena(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@settings(
    max_examples=EXAMPLES,
    deadline=5000,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=damage())
def test_damaged_shards_never_crash_hang_or_escape(arena, case):
    variant, data = case
    with tempfile.TemporaryDirectory(dir=arena) as work:
        work = Path(work)
        shard = work / "in" / "s.tar"
        shard.parent.mkdir()
        shard.write_bytes(data)
        outs = {mode: work / f"out-{mode}" for mode in ("file", "stream")}
        before = snapshot(arena.parent)
        for mode, out in outs.items():
            with hard_limit(HARD_LIMIT_S):
                summary = run_convert([source(shard, mode)], out, Settings(workers=1))
            (result,) = summary.results
            assert result.failure is None, f"{variant}/{mode}: {result.failure}"  # a bug, not bad input
            assert summary.exit_code == (1 if result.error else 0)
            check_output(out)
            for line in (out / "rejects.jsonl").read_bytes().splitlines():
                entry = orjson.loads(line)
                assert entry["shard"] == "s" and entry["reason"] in REASONS and entry["member"] and entry["detail"]
            assert not os.listdir(out / ".dalle3-etl" / "staging")
        after = snapshot(arena.parent)
        outside = {
            p: v for p, v in after.items() if not any(Path(p) == o or Path(p).is_relative_to(o) for o in outs.values())
        }
        assert outside == before, sorted(set(outside) ^ set(before))[:5]
        assert rows_of(outs["file"]) == rows_of(outs["stream"])
