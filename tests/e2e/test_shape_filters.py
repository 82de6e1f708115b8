"""Filters end to end: `convert --min-side --max-aspect --sources --exclude-sources --min-caption-chars`.

A filtered sample is one `filtered` line in rejects.jsonl and nothing else: no row, no image, no caption file
(never written, not even staged then removed), counted per filter in the records, the summary, `status` and
`stats`. The settings are pinned to OUT, and the output does not depend on the worker count."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from badinput_helpers import MODES, convert, img, js, write_shards
from conftest import convert as convert_corpus
from conftest import tree
from typer.testing import CliRunner

from dalle3_etl.check.stats import compute_stats
from dalle3_etl.check.verify import verify
from dalle3_etl.cli import app
from dalle3_etl.shard.writer import SampleWriter
from dalle3_etl.store.layout import Layout
from dalle3_etl.store.records import all_records

FILTER_FLAGS = ["--min-side", "1024", "--max-aspect", "2", "--exclude-sources", "midjourney"]
FILTER_FLAGS += ["--min-caption-chars", "10"]
FILTERS = dict(min_side=1024, max_aspect=2.0, exclude_sources=("midjourney",), min_caption_chars=10)


def member(key: str, image: bytes | None = None, **fields) -> list[tuple[str, bytes]]:
    """A sample whose JSON says 1024x1024, source dalle3, unless `fields` say otherwise."""
    fields = {"width": 1024, "height": 1024, "source": "dalle3", **fields}
    if image is None:  # an image of the size its JSON says (verify reads the headers)
        image = img("jpeg", fields["width"], fields["height"])
    return [(f"{key}.jpg", image), (f"{key}.json", js(**fields))]


#: member -> the detail of its `filtered` line (None: kept), with FILTERS
SHARD_A = {
    "big": None,
    "edge": None,  # 1024x2048: both limits exactly
    "nosource": None,  # --exclude-sources keeps a sample without a source
    "small": "min_side: 816 < 1024 (1456x816)",
    "wide": "max_aspect: 2.5 > 2.0 (2560x1024)",
    "mj": "exclude_sources: 'midjourney'",
    "short": "min_caption_chars: 5 < 10",
    "header": "min_side: 900 < 1024 (900x900)",  # no size in the JSON: the header's
    "both": "min_side: 500 < 1024 (500x1500)",  # fails min_side and max_aspect: the first is named
}


def shard_a() -> list[tuple[str, bytes]]:
    return [
        *member("big"),
        *member("small", width=1456, height=816),
        *member("edge", width=1024, height=2048),
        *member("wide", width=2560, height=1024),
        *member("mj", source="midjourney"),
        *member("short", caption="a fox"),
        *member("nosource", source=...),
        *member("header", image=img("jpeg", 900, 900), width=..., height=...),
        *member("both", width=500, height=1500),
    ]


def shard_b() -> list[tuple[str, bytes]]:
    return [*member("one"), *member("two", source="midjourney"), *member("three", width=1023)]


@pytest.fixture
def shards(tmp_path) -> Path:
    write_shards(tmp_path / "in", {"a.tar": shard_a(), "b.tar": shard_b()})
    return tmp_path / "in"


def _cli(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def _filtered_lines(out: Path) -> dict[str, str]:
    lines = [orjson.loads(line) for line in (out / "rejects.jsonl").read_bytes().splitlines()]
    assert all(line["reason"] == "filtered" for line in lines), lines
    return {f"{line['shard']}/{line['member']}": line["detail"] for line in lines}


def test_filtered_samples_are_one_reject_line_each_and_nothing_in_the_output(shards, tmp_path):
    out = tmp_path / "out"
    result = _cli("convert", shards, "-o", out, "--workers", "1", *FILTER_FLAGS)
    assert result.exit_code == 0, result.output
    kept = ["a/big.jpg", "a/edge.jpg", "a/nosource.jpg", "b/one.jpg"]
    rows = pq.read_table(out / "dalle3.parquet").to_pylist()
    assert [r["filename"] for r in rows] == kept
    expected = {f"a/{key}.jpg": detail for key, detail in SHARD_A.items() if detail}
    expected |= {"b/two.jpg": "exclude_sources: 'midjourney'", "b/three.jpg": "min_side: 1023 < 1024 (1023x1024)"}
    assert _filtered_lines(out) == expected
    files = sorted(str(p.relative_to(out / "data")) for p in (out / "data").rglob("*") if p.is_file())
    assert files == sorted([*kept, *(k.replace(".jpg", ".txt") for k in kept)])
    assert verify(out).ok


def test_filtered_counts_in_records_summary_status_and_stats(shards, tmp_path):
    out = tmp_path / "out"
    result = _cli("convert", shards, "-o", out, "--workers", "1", *FILTER_FLAGS)
    assert result.exit_code == 0, result.output
    per_filter = {"min_side": 4, "max_aspect": 1, "exclude_sources": 2, "min_caption_chars": 1}
    records = all_records(Layout(out))
    assert records["a"].notes["filtered_min_side"] == 3 and records["b"].notes["filtered_min_side"] == 1
    assert records["a"].rejects == {"filtered": 6} and records["b"].rejects == {"filtered": 2}
    assert re.search(r"rejected: filtered\s*│\s*8 │", result.output), result.output
    for name, count in per_filter.items():
        assert re.search(rf"filtered {name.replace('_', ' ')}\s*│\s*{count} │", result.output), (name, result.output)
    status = _cli("status", out)
    assert "filtered: 8 samples (min_side 4, max_aspect 1, exclude_sources 2, min_caption_chars 1)" in " ".join(
        status.output.split()
    )
    stats = compute_stats(out)
    assert stats.filtered == per_filter and stats.rejects["filtered"] == 8
    assert orjson.loads(_cli("stats", out, "--json").output)["filtered"] == per_filter


def test_sources_keep_only_the_listed_ones_and_name_a_missing_source(shards, tmp_path):
    out = tmp_path / "out"
    result = _cli("convert", shards, "-o", out, "--workers", "1", "--sources", "midjourney,bing")
    assert result.exit_code == 0, result.output
    assert [r["filename"] for r in pq.read_table(out / "dalle3.parquet").to_pylist()] == ["a/mj.jpg", "b/two.jpg"]
    lines = _filtered_lines(out)
    assert lines["a/nosource.jpg"] == "sources: no source (keeping only ['midjourney', 'bing'])"
    assert lines["a/big.jpg"] == "sources: 'dalle3' not in ['midjourney', 'bing']"
    assert len(lines) == 10


@pytest.mark.parametrize("mode", MODES)
def test_a_filtered_image_is_never_written(shards, tmp_path, monkeypatch, mode):
    """Not written and removed: never written at all (in stream mode, the staged body is dropped unused)."""
    written = []
    real = SampleWriter._write_sample

    def spy(self, filename, ref, caption):
        written.append(filename)
        return real(self, filename, ref, caption)

    monkeypatch.setattr(SampleWriter, "_write_sample", spy)
    res = convert(sorted(shards.iterdir()), tmp_path / "out", mode, **FILTERS)
    assert written == res.filenames == ["a/big.jpg", "a/edge.jpg", "a/nosource.jpg", "b/one.jpg"]
    staging = Layout(tmp_path / "out").staging_dir
    assert not staging.exists() or not any(staging.iterdir())


def test_same_bytes_with_one_or_two_workers_and_with_every_option(corpus, tmp_path):
    root, _ = corpus
    options = dict(FILTERS, min_side=1024, max_aspect=1.7, extra_captions=("long_caption", "short_caption2"))
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        convert_corpus([root], out, workers=workers, **options)
        outs.append(out)
    one, two = outs
    for name in ("dalle3.parquet", "rejects.jsonl"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert tree(one / "data") == tree(two / "data")
    reasons = [orjson.loads(line)["reason"] for line in (one / "rejects.jsonl").read_bytes().splitlines()]
    assert reasons.count("filtered") > 10  # the filters did leave samples out


def test_filters_are_pinned_to_out(shards, tmp_path):
    out = tmp_path / "out"
    assert _cli("convert", shards, "-o", out, "--workers", "1", "--min-side", "1024").exit_code == 0
    for other in (["--min-side", "512"], [], ["--min-side", "1024", "--sources", "dalle3"]):
        result = _cli("convert", shards, "-o", out, "--workers", "1", *other)
        assert result.exit_code == 2, result.output
        assert "converted with other settings" in result.output
    assert "--min-side" in _cli("convert", shards, "-o", out, "--min-side", "512").output
    assert "--sources" in _cli("convert", shards, "-o", out, "--min-side", "1024", "--sources", "dalle3").output
    again = _cli("convert", shards, "-o", out, "--workers", "1", "--min-side", "1024")
    assert again.exit_code == 0 and "Resuming: 2 shard(s) already complete" in again.output
    plain = tmp_path / "plain"
    assert _cli("convert", shards, "-o", plain, "--workers", "1").exit_code == 0
    result = _cli("convert", shards, "-o", plain, "--exclude-sources", "midjourney")
    assert result.exit_code == 2 and "--exclude-sources" in result.output


@pytest.mark.parametrize(
    "flag, value, words",
    [
        ("--min-side", "-1", "--min-side -1: must be at least 0"),
        ("--max-aspect", "0.5", "--max-aspect 0.5: must be 0 (off) or at least 1"),
        ("--max-aspect", "-1", "must be 0 (off) or at least 1"),
        ("--min-caption-chars", "-5", "--min-caption-chars -5: must be at least 0"),
        ("--min-side", "big", "Invalid value for '--min-side'"),
    ],
)
def test_bad_values_exit_2_before_any_work(shards, tmp_path, flag, value, words):
    out = tmp_path / "out"
    result = _cli("convert", shards, "-o", out, flag, value)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert words in " ".join(result.output.split()), result.output
    assert not out.exists()
