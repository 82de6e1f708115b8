"""What a bench run shows and leaves: the table of modes, ratios and targets, the memory and profile
summaries, the PNG chart, and the JSON result files."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from dalle3_etl.devtools.bench.config import RSS_LIMIT_MB
from dalle3_etl.optional import require


def print_table(result: dict, log: Callable[[str], None]) -> None:
    modes = result["modes"]
    log("")
    log(
        f"{'mode':20s} {'median s':>9s} {'min..max s':>15s} {'spread':>7s} {'samples/s':>10s} {'MB/s':>8s} "
        f"{'CPU s':>7s} {'peak RSS MB (per process)':s}"
    )
    for name, r in modes.items():
        per = ", ".join(f"{k} {v:.0f}" for k, v in r["peak_rss_mb_by_process"].items())
        log(
            f"{name:20s} {r['median_s']:9.2f} {r['min_s']:7.2f}..{r['max_s']:<7.2f} {r['spread_pct']:6.1f}% "
            f"{r['samples_per_s']:10.0f} {r['mb_per_s']:8.1f} {r['cpu_s']:7.1f} {per}"
        )
        if r["steps_median_s"]:
            log(" " * 22 + "steps: " + ", ".join(f"{k} {v:.2f}s" for k, v in r["steps_median_s"].items()))
    log("")
    log("ratios of median wall time (per-repetition range; ratio of the fastest runs):")
    for name, r in result["ratios"].items():
        log(
            f"  {name:36s} {r['ratio']:7.2f}x  ({r['per_rep_min']:.2f}..{r['per_rep_max']:.2f}; "
            f"fastest {r['ratio_of_fastest']:.2f}x)"
        )
    log("")
    log("targets:")
    for t in result["targets"]:
        status = "n/a" if t["met"] is None else ("MET" if t["met"] else "NOT MET")
        log(f"  [{status:7s}] {t['target']}: {t['measured']} (target {t['limit']}; {t['how']})")


def write_chart(result: dict, path: Path) -> None:
    matplotlib = require("matplotlib", "bench", "the bench chart")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = result["modes"]
    names = list(modes)
    med = [modes[n]["median_s"] for n in names]
    lo = [modes[n]["median_s"] - modes[n]["min_s"] for n in names]
    hi = [modes[n]["max_s"] - modes[n]["median_s"] for n in names]
    rss = [modes[n]["peak_rss_mb"] for n in names]
    colors = [
        "tab:blue" if n.startswith("convert") else "tab:gray" if n.startswith("tar") else "tab:orange" for n in names
    ]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.5 * len(names) + 2), sharey=True)
    y = range(len(names))
    ax1.barh(y, med, xerr=[lo, hi], color=colors, capsize=3)
    for i, (m, n) in enumerate(zip(med, names)):
        ax1.text(modes[n]["max_s"], i, f" {m:.1f}s  {modes[n]['samples_per_s']:,.0f}/s", va="center", fontsize=8)
    ax1.set_yticks(list(y), names)
    ax1.invert_yaxis()
    ax1.set_xlabel("wall time, seconds (median, min..max)")
    ax1.set_xlim(0, max(modes[n]["max_s"] for n in names) * 1.4 if names else 1)
    ax2.barh(y, rss, color=colors)
    ax2.axvline(RSS_LIMIT_MB, color="red", linestyle="--", linewidth=1)
    ax2.set_xlabel("peak RSS of the largest process, MB")
    c = result["corpus"]
    fig.suptitle(
        f"{c['samples']:,} samples, {c['shards']} shards, {c['bytes'] / 1e9:.2f} GB on "
        f"{result['machine'].get('location_fs', '?')} ({result['config']['location']}); "
        f"{result['config']['workers']} workers, {result['config']['reps']} reps; "
        f"{result['machine'].get('cores')} cores",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_report(result: dict, log: Callable[[str], None]) -> None:
    """The table, then the memory flatness and the profile of one shard when they were measured."""
    print_table(result, log)
    memory, profile = result["memory_check"], result["profile"]
    if memory:
        log(
            f"memory flatness: 10x shard size -> {memory['size_10x_ratio']:.3f}x peak RSS, "
            f"10x shard count -> {memory['count_10x_ratio']:.3f}x"
        )
    if profile:
        for m, p in profile.items():
            log(f"profile {m} (one shard, {p['wall_s_unprofiled']:.2f}s unprofiled, {p['profiled_s']:.2f}s profiled):")
            for s, v in p["stages"].items():
                log(f"  {s:20s} {v['seconds']:7.3f}s {v['pct']:5.1f}%")


def write_results(result: dict, out_dir: Path, log: Callable[[str], None]) -> dict[str, str]:
    """Write OUT_DIR/bench-<stamp>.json, a copy as latest.json, and the chart latest.png; return their paths."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = out_dir / f"bench-{stamp}.json"
    json_path.write_text(json.dumps(result, indent=1))
    shutil.copyfile(json_path, out_dir / "latest.json")
    png = out_dir / "latest.png"
    write_chart(result, png)
    log(f"wrote {json_path}, {out_dir / 'latest.json'} and {png}")
    return {"json": str(json_path), "latest": str(out_dir / "latest.json"), "chart": str(png)}
