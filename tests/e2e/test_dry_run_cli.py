"""`dalle3-etl convert --dry-run` on the command line: the funnel, `--json`, exit codes, nothing written."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from badinput_helpers import member_offsets, sample, snapshot, tar_bytes, write_shards
from typer.testing import CliRunner

from dalle3_etl.cli import app

runner = CliRunner()


def convert(*args: str):
    return runner.invoke(app, ["convert", *map(str, args)])


def test_the_funnel_is_printed_and_nothing_is_written(corpus, tmp_path):
    root, truth = corpus
    kept = sum(1 for t in truth if t.caption is not None)
    result = convert(root, "-o", tmp_path / "new" / "out", "--dry-run", "--workers", "2", "--top", "2")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "new").exists()
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    assert f"samples read {len(truth)}" in lines
    assert f"rejected: no_caption {len(truth) - kept}" in lines
    assert f"kept (rows in the parquet) {kept}" in lines
    assert any(line.startswith("bytes a full run would write ") for line in lines)
    sources = {t.source or "(none)" for t in truth if t.caption is not None}
    assert f"kept rows by source (top 2 of {len(sources)})" in lines
    assert any(line.startswith("kept rows by resolution (") for line in lines)


@pytest.mark.parametrize("flags", [(), ("--no-captions",), ("--flat",)], ids=["default", "no-captions", "flat"])
def test_json_counts_equal_what_the_real_run_then_writes(corpus, tmp_path, flags):
    root, _ = corpus
    out = tmp_path / "out"
    result = convert(root, "-o", out, "--dry-run", "--json", "--workers", "2", *flags)
    assert result.exit_code == 0, result.output
    dry = orjson.loads(result.output)
    result = convert(root, "-o", out, "--workers", "1", "-q", *flags)
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out / "dalle3.parquet").to_pylist()
    reasons = Counter(orjson.loads(line)["reason"] for line in (out / "rejects.jsonl").read_bytes().splitlines())
    sizes = Counter()
    for dirpath, _dirs, files in os.walk(out / "data"):
        for name in files:
            sizes["captions" if name.endswith(".txt") else "images"] += os.path.getsize(os.path.join(dirpath, name))
    assert dry["samples"]["kept"] == len(rows)
    assert dry["samples"]["rejected"] == dict(reasons)
    assert dry["samples"]["read"] == len(rows) + reasons.total()
    assert dry["bytes"] == {"images": sizes["images"], "captions": sizes["captions"], "total": sizes.total()}
    resolutions = Counter(f"{r['width']}x{r['height']}" for r in rows)
    assert dry["resolutions_distinct"] == len(resolutions)
    assert dry["resolutions"] == {k: resolutions[k] for k in dry["resolutions"]}
    assert sorted(dry["resolutions"].values(), reverse=True) == [n for _, n in resolutions.most_common(10)]


def test_a_damaged_shard_exits_1_and_is_named(tmp_path):
    data = tar_bytes(sample("a") + sample("b"))
    paths = write_shards(
        tmp_path / "in", {"s-1.tar": data[: member_offsets(data)["b.jpg"][1] + 10], "s-2.tar": sample("c")}
    )
    result = convert(*paths, "-o", tmp_path / "out", "--dry-run", "--workers", "1")
    assert result.exit_code == 1, result.output
    assert "damaged s-1" in result.output and "truncated" in result.output
    result = convert(*paths, "-o", tmp_path / "out", "--dry-run", "--json", "--workers", "1")
    assert result.exit_code == 1
    report = orjson.loads(result.output)
    assert list(report["shards"]["damaged"]) == ["s-1"] and report["samples"]["kept"] == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (("--max-json-bytes", "1"), "--max-json-bytes 1: must be at least 2"),
        (("--fields", "caption"), "--fields caption: 'caption': that column is always written"),
        (("--json",), "--json is for --dry-run"),
        (("--retry-failed",), "leave out --retry-failed"),
        (("--keep-tars", "kept"), "leave out --keep-tars"),
    ],
)
def test_usage_errors_exit_2_before_any_work(corpus, tmp_path, args, words):
    root, _ = corpus
    dry = () if args == ("--json",) else ("--dry-run",)
    result = convert(root, "-o", tmp_path / "out", *dry, *args)
    assert result.exit_code == 2, result.output
    assert words in " ".join(result.output.split())
    assert not (tmp_path / "out").exists() and not (tmp_path / "kept").exists()


def test_an_output_converted_with_other_settings_is_refused_unless_restarted(corpus, converted_copy):
    root, _ = corpus
    out, _ = converted_copy
    before = snapshot(out)
    result = convert(root, "-o", out, "--dry-run", "--no-captions")
    assert result.exit_code == 2 and "captions" in result.output
    result = convert(root, "-o", out, "--dry-run", "--no-captions", "--restart", "--json")
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.output)["bytes"]["captions"] == 0
    result = convert(root, "-o", out, "--dry-run", "--json")
    assert orjson.loads(result.output)["shards"]["complete_in_out"] == 3
    assert snapshot(out) == before


def test_a_folder_that_is_not_an_output_is_refused(corpus, tmp_path):
    root, _ = corpus
    (tmp_path / "mine").mkdir()
    Path(tmp_path / "mine" / "photo.jpg").write_bytes(b"x")
    result = convert(root, "-o", tmp_path / "mine", "--dry-run")
    assert result.exit_code == 2 and "not empty" in result.output
    assert os.listdir(tmp_path / "mine") == ["photo.jpg"]
