"""The memory check: full-mode convert on small corpora of 1x, 10x shard size and 10x shard count, and how
the peak RSS of each process grows."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from dalle3_etl.devtools.bench.config import BenchConfig, _rmtree
from dalle3_etl.devtools.bench.corpus import generate_corpus
from dalle3_etl.devtools.bench.procs import measure


def memory_check(cfg: BenchConfig, root: Path, log: Callable[[str], None]) -> dict:
    """Full-mode convert on corpora of 1x, 10x shard size and 10x shard count; peak RSS per process."""
    shards, per = cfg.memory_base
    cases = {"1x": (shards, per), "size_10x": (shards, per * 10), "count_10x": (shards * 10, per)}
    out: dict = {"cases": {}}
    for name, (n, p) in cases.items():
        corpus = generate_corpus(root / f"mem-{n}x{p}", n, p, cfg.image_bytes, cfg.seed, cfg.workers)
        target = root / f"mem-out-{name}"
        _rmtree(target, root)
        cmd = [
            sys.executable,
            "-m",
            "dalle3_etl",
            "convert",
            *map(str, corpus.shards),
            "-o",
            str(target),
            "-q",
            "-w",
            str(cfg.workers),
        ]
        stat = measure(lambda r, cmd=cmd: r.run(cmd))
        _rmtree(target, root)
        by_name: dict[str, float] = {}
        for proc in stat.procs:
            by_name[proc.name] = max(by_name.get(proc.name, 0.0), proc.peak_rss_kb / 1024)
        # the busiest pool worker, and the driver process (sampled: the exact figure covers its children)
        workers = [p.peak_rss_kb / 1024 for p in stat.procs if p.name == "pool worker"]
        main = [p.peak_rss_kb / 1024 for p in stat.procs if p.name.endswith("(sampled)")]
        main = main or [p.peak_rss_kb / 1024 for p in stat.procs if p.exact]
        out["cases"][name] = {
            "shards": n,
            "per_shard": p,
            "samples": n * p,
            "corpus_mb": corpus.bytes / 1e6,
            "seconds": stat.seconds,
            "peak_rss_mb": stat.peak_rss_kb / 1024,
            "main_rss_mb": max(main, default=0.0),
            "worker_rss_mb": max(workers, default=0.0),
            "by_process_mb": by_name,
        }
        log(
            f"  memory {name:9s} {n:3d} shards x {p:6d} samples: peak RSS {stat.peak_rss_kb / 1024:6.1f} MB "
            f"(main {max(main, default=0.0):.1f}, busiest worker {max(workers, default=0.0):.1f})"
        )
        if not cfg.keep_corpus:
            _rmtree(corpus.path, root)
    base = out["cases"]["1x"]["peak_rss_mb"]
    out["size_10x_ratio"] = out["cases"]["size_10x"]["peak_rss_mb"] / base
    out["count_10x_ratio"] = out["cases"]["count_10x"]["peak_rss_mb"] / base
    return out
