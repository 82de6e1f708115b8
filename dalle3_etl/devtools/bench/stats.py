"""From runs to figures: per mode the median, spread, throughput, CPU and peak RSS; every ratio between
modes; the issue's targets and whether they are met."""

from __future__ import annotations

import statistics
from dataclasses import asdict

from dalle3_etl.devtools.bench.config import BASELINES, CONVERT_MODES, DEDUP_TOLERANCE, FLAT_TOLERANCE, RSS_LIMIT_MB
from dalle3_etl.devtools.bench.corpus import Corpus
from dalle3_etl.devtools.bench.folder import folder_target_pairs
from dalle3_etl.devtools.bench.procs import RunStat


def summarize(runs: list[RunStat], corpus: Corpus) -> dict:
    secs = [r.seconds for r in runs]
    med = statistics.median(secs)
    by_name: dict[str, int] = {}
    for r in runs:
        for p in r.procs:
            by_name[p.name] = max(by_name.get(p.name, 0), p.peak_rss_kb)
    steps: dict[str, float] = {}
    for name in runs[0].steps:
        steps[name] = statistics.median(r.steps[name] for r in runs)
    return {
        "median_s": med,
        "min_s": min(secs),
        "max_s": max(secs),
        "spread_pct": 100.0 * (max(secs) - min(secs)) / med if med else 0.0,
        "stdev_s": statistics.stdev(secs) if len(secs) > 1 else 0.0,
        "samples_per_s": corpus.samples / med if med else 0.0,
        "mb_per_s": corpus.bytes / 1e6 / med if med else 0.0,
        "cpu_s": statistics.median(r.cpu_seconds for r in runs),
        "peak_rss_mb": max(r.peak_rss_kb for r in runs) / 1024,
        "peak_rss_mb_by_process": {k: v / 1024 for k, v in sorted(by_name.items())},
        "processes": statistics.median(len(r.procs) for r in runs),
        "steps_median_s": steps,
        "check": runs[-1].check,
        "runs": [asdict(r) for r in runs],
    }


def ratios(results: dict[str, dict]) -> dict[str, dict]:
    """Every mode's median time over every baseline's (and the per-repetition range of that ratio)."""
    out: dict[str, dict] = {}
    for mode, res in results.items():
        for base in BASELINES:
            if base == mode or base not in results:
                continue
            per_rep = [a["seconds"] / b["seconds"] for a, b in zip(res["runs"], results[base]["runs"])]
            out[f"{mode} / {base}"] = {
                "ratio": res["median_s"] / results[base]["median_s"],
                "per_rep_min": min(per_rep),
                "per_rep_max": max(per_rep),
                "ratio_of_fastest": res["min_s"] / results[base]["min_s"],  # least disturbed runs of each
            }
    return out


# Over 60 lines: one flat list of the targets, each a few lines; splitting it would scatter one table.
# Over 60 lines: one `add` per target of the issues, each a few lines.
def targets(results: dict[str, dict], memory: dict | None) -> list[dict]:
    def med(mode: str) -> float | None:
        return results[mode]["median_s"] if mode in results else None

    checks = []

    def add(name: str, measured: float | None, op: str, limit: float, how: str) -> None:
        if measured is None:
            checks.append({"target": name, "measured": None, "limit": f"{op} {limit}", "met": None, "how": how})
            return
        met = measured <= limit if op == "<=" else measured >= limit
        checks.append(
            {"target": name, "measured": round(measured, 3), "limit": f"{op} {limit}", "met": met, "how": how}
        )

    def ratio(a: str, b: str) -> float | None:
        x, y = med(a), med(b)
        return None if x is None or y is None else x / y

    add(
        "parquet-only time vs GNU tar JSON read limit",
        ratio("convert-parquet", "tar-json"),
        "<=",
        3.0,
        "convert-parquet / tar-json (median wall time)",
    )
    add("full mode time vs plain parallel tar xf", ratio("convert-full", "tar-xf"), "<=", 1.5, "convert-full / tar-xf")
    add(
        "full mode speed-up over the old recipe",
        ratio("old-recipe", "convert-full"),
        ">=",
        5.0,
        "old-recipe / convert-full",
    )
    add(
        "2 workers vs 1 worker, parquet-only",
        ratio("convert-parquet-1w", "convert-parquet"),
        ">=",
        1.8,
        "convert-parquet-1w / convert-parquet",
    )
    add(
        "parquet-only with --dedup vs without",
        ratio("convert-parquet-dedup", "convert-parquet"),
        "<=",
        1 + DEDUP_TOLERANCE,
        "convert-parquet-dedup / convert-parquet",
    )
    for name, slow, fast in folder_target_pairs():
        add(name, ratio(slow, fast), ">=", 5.0, f"{slow} / {fast}")
    convert_rss = [r["peak_rss_mb"] for m, r in results.items() if m in CONVERT_MODES or m.startswith("folder-convert")]
    add(
        "peak RSS of every convert process (MB)",
        max(convert_rss) if convert_rss else None,
        "<=",
        RSS_LIMIT_MB,
        "max over convert runs and their processes",
    )
    if memory:
        add(
            "peak RSS growth when shard size grows 10x",
            memory["size_10x_ratio"],
            "<=",
            1 + FLAT_TOLERANCE,
            "max process peak RSS, 10x samples per shard / 1x",
        )
        add(
            "peak RSS growth when shard count grows 10x",
            memory["count_10x_ratio"],
            "<=",
            1 + FLAT_TOLERANCE,
            "max process peak RSS, 10x shards / 1x",
        )
    return checks
