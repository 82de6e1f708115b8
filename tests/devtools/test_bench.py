"""Smoke test of the benchmark harness on a tiny corpus: every mode runs and does its work, the JSON
result has sane fields, the chart is written. No timing assertions (timings belong in benchmarks/)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("pandas")
pytest.importorskip("webdataset")
pytest.importorskip("matplotlib")

from dalle3_etl.cli import app  # noqa: E402
from dalle3_etl.devtools import bench  # noqa: E402
from dalle3_etl.devtools.synth import SynthSpec, write_corpus  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar needed")

SHARDS, PER_SHARD = 2, 20


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bench")
    truth = write_corpus(root / "corpus", SynthSpec(shards=SHARDS, per_shard=PER_SHARD, seed=3, image_bytes=2_000))
    cfg = bench.BenchConfig(
        location=root / "work",
        corpus=root / "corpus",
        reps=1,
        workers=2,
        out_dir=root / "results",
        image_bytes=2_000,
        memory_base=(1, 6),
        profile=True,
        quiet=True,
    )
    (root / "work").mkdir()
    res = bench.run_bench(cfg)
    res["_truth"] = truth
    res["_root"] = root
    return res


def test_every_mode_ran_once_with_sane_fields(result):
    assert set(result["modes"]) == set(bench.ALL_MODES)
    assert result["corpus"]["samples"] == SHARDS * PER_SHARD
    assert result["corpus"]["shards"] == SHARDS
    for name, mode in result["modes"].items():
        assert len(mode["runs"]) == 1, name
        assert 0 < mode["min_s"] <= mode["median_s"] <= mode["max_s"], name
        assert mode["samples_per_s"] > 0 and mode["mb_per_s"] > 0, name
        assert 0 < mode["peak_rss_mb"] < 4096, name
        assert all(v > 0 for v in mode["peak_rss_mb_by_process"].values()), name


def test_every_mode_did_its_work(result):
    truth = result["_truth"]
    total = len(truth)
    captioned = sum(r.caption is not None for r in truth)
    with_size = sum(r.json_has_size for r in truth)  # what the old recipe and the webdataset script keep
    checks = {name: mode["check"] for name, mode in result["modes"].items()}
    assert checks["convert-parquet"] == {"rows": captioned, "captions": 0, "images": 0}
    assert checks["convert-parquet-1w"] == {"rows": captioned, "captions": 0, "images": 0}
    assert checks["convert-parquet-dedup"] == {"rows": captioned, "captions": 0, "images": 0}  # no file hash repeats
    assert checks["convert-webshart"] == {"indexes": SHARDS, "rows": captioned, "captions": 0, "images": 0}
    assert checks["convert-captions"] == {"rows": captioned, "captions": captioned, "images": 0}
    assert checks["convert-full"] == {"rows": captioned, "captions": captioned, "images": captioned}
    assert checks["old-recipe"]["rows"] == with_size
    assert checks["old-recipe"]["json"] == total
    assert checks["webdataset"] == {"rows": with_size, "captions": with_size, "images": with_size}
    assert checks["tar-xf"] == {"json": total, "images": total}
    assert checks["folder-convert"] == {"rows": captioned, "captions": captioned}  # beside the images
    assert checks["folder-convert-hard"] == {"rows": captioned, "captions": captioned, "images": captioned}
    assert checks["folder-old-recipe"] == {"rows": with_size, "captions": with_size}
    assert result["modes"]["old-recipe"]["steps_median_s"].keys() == {"tar xf", "make_parquet.py", "make_captions.py"}


def test_peak_rss_is_per_process_and_includes_pool_workers(result):
    modes = result["modes"]
    assert "pool worker" in modes["convert-full"]["peak_rss_mb_by_process"]
    assert "tar" in modes["tar-xf"]["peak_rss_mb_by_process"]
    if bench.Runner.TIME:
        # measured through a small wrapper: tar is not charged with the harness's own (large) RSS
        assert modes["tar-xf"]["peak_rss_mb_by_process"]["tar"] < 50


def test_ratios_targets_memory_and_profile(result):
    ratios = result["ratios"]
    for mode in bench.ALL_MODES:
        for base in bench.BASELINES:
            if base != mode:
                r = ratios[f"{mode} / {base}"]
                assert r["ratio"] > 0 and r["per_rep_min"] <= r["per_rep_max"]
    tar = result["modes"]["tar-xf"]["median_s"]
    assert ratios["convert-full / tar-xf"]["ratio"] == pytest.approx(result["modes"]["convert-full"]["median_s"] / tar)
    targets = {t["target"]: t for t in result["targets"]}
    assert len(targets) == 9
    assert all(isinstance(t["met"], bool) and t["measured"] is not None for t in targets.values())
    mem = result["memory_check"]
    assert set(mem["cases"]) == {"1x", "size_10x", "count_10x"}
    assert mem["cases"]["size_10x"]["samples"] == mem["cases"]["count_10x"]["samples"] == 60
    assert all(c["peak_rss_mb"] > 0 for c in mem["cases"].values())
    for prof in result["profile"].values():
        stages = prof["stages"]
        assert set(stages) == set(bench.STAGES)
        assert stages["tar header walk"]["seconds"] > 0
        assert sum(s["pct"] for s in stages.values()) == pytest.approx(100.0)


def test_result_files_written(result):
    files = result["files"]
    saved = json.loads(Path(files["latest"]).read_text())
    assert set(saved["modes"]) == set(bench.ALL_MODES)
    assert Path(files["json"]).read_text() == Path(files["latest"]).read_text()
    assert Path(files["chart"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((result["_root"] / "work").iterdir())  # scratch space removed, user's corpus kept
    assert len(list((result["_root"] / "corpus").glob("*.tar"))) == SHARDS


def test_cli_generates_corpus_and_runs_selected_modes(tmp_path):
    out = tmp_path / "res"
    run = CliRunner().invoke(
        app,
        [
            "bench",
            "--samples",
            "12",
            "--shards",
            "2",
            "--image-bytes",
            "1000",
            "--location",
            str(tmp_path),
            "--reps",
            "2",
            "-w",
            "2",
            "--modes",
            "tar-json,tar-xf",
            "--no-memory-check",
            "--out",
            str(out),
        ],
    )
    assert run.exit_code == 0, run.output
    saved = json.loads((out / "latest.json").read_text())
    assert set(saved["modes"]) == {"tar-json", "tar-xf"}
    assert saved["corpus"]["samples"] == 12 and saved["corpus"]["generated"]
    assert len(saved["modes"]["tar-xf"]["runs"]) == 2
    assert saved["modes"]["tar-xf"]["check"] == {"json": 12, "images": 12}
    assert (out / "latest.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]  # generated corpus and scratch removed


def test_unknown_mode_is_refused(tmp_path):
    run = CliRunner().invoke(
        app,
        ["bench", "--modes", "convert-full,warp-speed", "--location", str(tmp_path), "--out", str(tmp_path / "res")],
    )
    assert run.exit_code == 1
    assert "warp-speed" in run.output


def test_bench_never_removes_a_folder_it_did_not_generate(tmp_path):
    """The corpus folder is regenerated only when its corpus.json says a bench run made it."""
    from dalle3_etl.devtools.bench.config import BenchError
    from dalle3_etl.devtools.bench.corpus import generate_corpus

    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "mine.tar").write_bytes(b"user data")
    with pytest.raises(BenchError, match="did not generate"):
        generate_corpus(folder, 1, 2, 300, 0, 1)
    assert (folder / "mine.tar").read_bytes() == b"user data"
    generate_corpus(tmp_path / "fresh", 1, 2, 300, 0, 1)
    again = generate_corpus(tmp_path / "fresh", 1, 3, 300, 0, 1)  # another spec: its own folder is redone
    assert again.samples == 3
