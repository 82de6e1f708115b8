"""The split benchmark's harness (`devtools.bench.split`) on a tiny corpus: it runs, alternates, cleans up. No timings."""

from __future__ import annotations

from dalle3_etl.devtools.bench.split import run_split_bench


def test_the_harness_measures_both_ways_and_leaves_only_its_corpus(tmp_path):
    bench = run_split_bench(tmp_path, large=40, small=5, image_bytes=800, workers=1, reps=2, extra=["--no-images"])
    assert len(bench.split_s) == len(bench.whole_s) == len(bench.scan_s) == len(bench.probe_s) == 2
    assert bench.tasks >= 2  # the large shard is split at the default task size (an eighth of it)
    report = bench.to_json()
    assert report["ratio_split_to_whole"] > 0 and len(report["per_rep_ratios"]) == 2
    assert min(report["per_rep_ratios"]) <= report["median_per_rep_ratio"] <= max(report["per_rep_ratios"])
    assert len(report["loop_1_s"]) == len(report["loop_w_s"]) == 2 and min(report["loop_1_s"] + report["loop_w_s"]) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dalle3-etl-split-corpus"]  # outputs removed
    tar = tmp_path / "dalle3-etl-split-corpus" / "data-000000.tar"
    stamp = tar.stat().st_mtime_ns
    again = run_split_bench(tmp_path, large=40, small=5, image_bytes=800, workers=1, reps=1, extra=["--no-images"])
    assert again.corpus == bench.corpus and tar.stat().st_mtime_ns == stamp  # reused, not generated again
