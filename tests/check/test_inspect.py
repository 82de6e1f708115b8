"""`dalle3-etl head` and `stats` on a generated dataset; the parquet reads the same from pandas, duckdb, polars."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from PIL import Image
from rich.cells import cell_len
from typer.testing import CliRunner

from dalle3_etl.cli import app
from dalle3_etl.devtools.synth import SynthSpec, write_corpus

SPEC = SynthSpec(shards=2, per_shard=30, seed=11, image_bytes=2000, no_caption_ratio=0.1)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
runner = CliRunner()


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("inspect")
    truth = write_corpus(root / "src", SPEC)
    result = runner.invoke(app, ["convert", str(root / "src"), "-o", str(root / "out"), "-q", "-w", "1"])
    assert result.exit_code == 0, result.output
    return root / "out", truth


@pytest.fixture(scope="module")
def out(converted) -> Path:
    return converted[0]


@pytest.fixture(scope="module")
def kept(converted) -> list:
    return [t for t in converted[1] if t.caption is not None]


def parquet_rows(out: Path) -> list[dict]:
    return pq.read_table(out / "dalle3.parquet").to_pylist()


# --- head -------------------------------------------------------------------------------------------


def test_head_shows_the_first_rows(out):
    rows = parquet_rows(out)
    result = runner.invoke(app, ["head", str(out), "-n", "4"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for row in rows[:4]:
        assert row["filename"] in result.stdout
    assert rows[4]["filename"] not in result.stdout
    assert f"({len(rows)} rows)" in result.stdout


def test_head_fits_captions_to_the_terminal(out):
    rows = parquet_rows(out)
    longest = max(rows[:10], key=lambda r: len(r["caption"]))
    for columns in (80, 120):
        result = runner.invoke(app, ["head", str(out)], env={"COLUMNS": str(columns)})
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert max(cell_len(line) for line in lines) <= columns
        assert sum(row["filename"] in result.stdout for row in rows[:10]) == 10
        assert "…" in result.stdout  # some caption was shortened
        assert longest["caption"] not in result.stdout
    wide = runner.invoke(app, ["head", str(out), "-n", "1"], env={"COLUMNS": "1000"})
    assert rows[0]["caption"] in wide.stdout


def test_head_and_stats_refuse_a_plain_directory(tmp_path):
    for command in ("head", "stats"):
        result = runner.invoke(app, [command, str(tmp_path)])
        assert result.exit_code == 2
        assert "not a dalle3-etl output directory" in result.output


# --- stats ------------------------------------------------------------------------------------------


def stats_json(out: Path, *args: str) -> dict:
    result = runner.invoke(app, ["stats", str(out), "--json", *args])
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def test_stats_json_counts_equal_the_truth(out, converted, kept):
    truth = converted[1]
    stats = stats_json(out, "--top", "100")
    assert stats["samples"] == len(kept)
    assert stats["shards"] == dict(sorted(Counter(t.shard for t in kept).items()))
    assert stats["resolutions"] == dict(Counter(f"{t.width}x{t.height}" for t in kept))
    assert stats["resolutions_distinct"] == len({(t.width, t.height) for t in kept})
    assert stats["sources"] == dict(Counter(t.source or "(none)" for t in kept))
    rejected = sum(t.caption is None for t in truth)
    assert rejected > 0
    assert stats["rejects"] == {"no_caption": rejected} and stats["rejects_total"] == rejected

    lengths = np.array([len(t.caption) for t in kept])
    dist = stats["caption_chars"]
    assert dist["min"] == lengths.min() and dist["max"] == lengths.max()
    assert dist["p50"] == pytest.approx(np.percentile(lengths, 50), abs=0.05)
    assert dist["p95"] == pytest.approx(np.percentile(lengths, 95), abs=0.05)
    assert dist["mean"] == pytest.approx(lengths.mean(), abs=0.05)

    images = [p for p in (out / "data").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
    captions = list((out / "data").rglob("*.txt"))
    assert stats["files"] == {"images": len(kept), "captions": len(kept)}
    assert stats["bytes"]["images"] == sum(p.stat().st_size for p in images)
    assert stats["bytes"]["captions"] == sum(p.stat().st_size for p in captions)
    assert stats["bytes"]["parquet"] == (out / "dalle3.parquet").stat().st_size
    assert stats["bytes"]["total"] == sum(stats["bytes"][k] for k in ("images", "captions", "parquet"))


def test_stats_top_limits_sources_and_resolutions(out):
    stats = stats_json(out, "--top", "2")
    assert len(stats["sources"]) == 2 and len(stats["resolutions"]) == 2
    assert stats["sources_distinct"] > 2
    assert list(stats["resolutions"].values()) == sorted(stats["resolutions"].values(), reverse=True)


def test_stats_tables(out, kept):
    result = runner.invoke(app, ["stats", str(out)], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    for title in ("rows by shard", "rows by source", "rows by resolution", "caption length", "rejects by reason"):
        assert title in result.stdout
    assert f"{len(kept)}" in result.stdout and "no_caption" in result.stdout


def test_stats_plot_writes_a_png(out, tmp_path):
    png = tmp_path / "plots" / "stats.png"
    result = runner.invoke(app, ["stats", str(out), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert png.exists() and png.stat().st_size > 1000
    with Image.open(png) as im:
        assert im.format == "PNG"
        assert im.width > 300 and im.height > 200
        im.verify()


def test_stats_plot_without_matplotlib_says_how_to_install(out, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    png = tmp_path / "stats.png"
    result = runner.invoke(app, ["stats", str(out), "--plot", str(png)])
    assert result.exit_code == 2
    assert "pip install 'dalle3-etl[plot]'" in result.output
    assert not png.exists()


# --- the parquet from pandas, duckdb and polars ------------------------------------------------------


def test_pandas_duckdb_polars_read_the_same_rows(out, kept):
    pd = pytest.importorskip("pandas")
    duckdb = pytest.importorskip("duckdb")
    pl = pytest.importorskip("polars")
    path = out / "dalle3.parquet"
    columns = ["filename", "caption", "width", "height", "key", "shard", "source"]

    frame = pd.read_parquet(path)  # what SimpleTuner does
    frame = frame.astype(object).where(frame.notna(), None)
    from_pandas = [tuple(r) for r in frame[columns].itertuples(index=False)]
    from_duckdb = duckdb.connect().execute(f"SELECT {', '.join(columns)} FROM read_parquet(?)", [str(path)]).fetchall()
    from_polars = pl.read_parquet(path).select(columns).rows()

    assert len(from_pandas) == len(kept)
    assert from_pandas == from_duckdb == from_polars
    assert [r[0] for r in from_pandas] == [f"{t.shard}/{t.key}{os.path.splitext(t.image_member)[1]}" for t in kept]
    assert [r[1] for r in from_pandas] == [t.caption for t in kept]
    assert [(r[2], r[3]) for r in from_pandas] == [(t.width, t.height) for t in kept]
    assert {type(r[2]) for r in from_pandas} == {int}
