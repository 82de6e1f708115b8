"""`run_bench`: one bench run, from the corpus to the written results."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from dalle3_etl.devtools.bench.config import ALL_MODES, BenchConfig, BenchError, _rmtree
from dalle3_etl.devtools.bench.corpus import Corpus, existing_corpus, generate_corpus
from dalle3_etl.devtools.bench.machine import code_version, machine_info, portable
from dalle3_etl.devtools.bench.memory import memory_check
from dalle3_etl.devtools.bench.modes import Modes
from dalle3_etl.devtools.bench.procs import RunStat, measure
from dalle3_etl.devtools.bench.profiling import profile_shard
from dalle3_etl.devtools.bench.report import print_report, write_results
from dalle3_etl.devtools.bench.stats import ratios, summarize, targets
from dalle3_etl.safetext import plain


def run_bench(cfg: BenchConfig, log: Callable[[str], None] | None = None) -> dict:
    """Measure every mode `cfg.reps` times (alternated), then the memory check and the profile if asked; print
    the table, write the JSON result and the chart to `cfg.out_dir`; return the result."""
    if log is None:
        log = (lambda s: None) if cfg.quiet else (lambda s: print(plain(s), flush=True))  # lines quote paths
    _check(cfg)
    root = Path(cfg.location) / f"dalle3-etl-bench-{os.getpid()}"
    corpus_root = Path(cfg.location) / "dalle3-etl-bench-corpus"
    work = root / "work"
    work.mkdir(parents=True)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    generated: list[Path] = []  # the corpus this run generates (removed at the end unless kept)
    try:
        corpus = _corpus(cfg, corpus_root, generated, log)
        version = code_version()  # at the start: the tree may change while the bench runs
        results = _run_modes(cfg, corpus, work, log)
        memory = None
        if cfg.memory_check:
            log("memory check (convert full mode):")
            memory = memory_check(cfg, corpus_root, log)
        profile = None
        if cfg.profile:
            log("profiling one shard conversion (cProfile) ...")
            profile = {m: profile_shard(corpus.shards[0], work, m) for m in ("convert-parquet", "convert-full")}
        result = _result(cfg, corpus, version, results, memory, profile)
        print_report(result, log)
        result["files"] = write_results(result, out_dir, log)
        return result
    finally:
        _rmtree(root, Path(cfg.location))
        if not cfg.keep_corpus:  # what this run generated; never a --corpus the user passed
            for folder in generated + list(corpus_root.glob("mem-*")):
                _rmtree(folder, corpus_root)
            if corpus_root.is_dir() and not any(corpus_root.iterdir()):
                _rmtree(corpus_root, Path(cfg.location))


def _check(cfg: BenchConfig) -> None:
    for mode in cfg.modes:
        if mode not in ALL_MODES:
            raise BenchError(f"unknown mode {mode!r} (choose from {', '.join(ALL_MODES)})")
    if cfg.reps < 1 or cfg.workers < 1 or cfg.samples < 1 or cfg.shards < 1:
        raise BenchError("--reps, --workers, --samples and --shards must be at least 1")


def _corpus(cfg: BenchConfig, corpus_root: Path, generated: list[Path], log: Callable[[str], None]) -> Corpus:
    """The user's --corpus, or a generated one (its folder appended to `generated` before it is written)."""
    if cfg.corpus is not None:
        return existing_corpus(Path(cfg.corpus))
    folder = corpus_root / f"{cfg.shards}x{cfg.per_shard}-{cfg.image_bytes}b-s{cfg.seed}"
    generated.append(folder)
    log(f"corpus: {cfg.shards} shards x {cfg.per_shard} samples, ~{cfg.image_bytes} B images in {folder}")
    corpus = generate_corpus(folder, cfg.shards, cfg.per_shard, cfg.image_bytes, cfg.seed, cfg.workers)
    log(
        f"  {'generated' if corpus.generated else 'reused'}: {corpus.samples:,} samples, "
        f"{corpus.bytes / 1e9:.2f} GB" + (f" in {corpus.generate_seconds:.1f}s" if corpus.generated else "")
    )
    return corpus


def _run_modes(cfg: BenchConfig, corpus: Corpus, work: Path, log: Callable[[str], None]) -> dict[str, dict]:
    """Every mode `cfg.reps` times, alternated within each repetition; the summary of each mode."""
    modes = Modes(cfg, corpus, work)
    bodies = {m: modes.body(m) for m in cfg.modes}  # fails early if a script is missing
    runs: dict[str, list[RunStat]] = {m: [] for m in cfg.modes}
    order = list(cfg.modes)
    for rep in range(cfg.reps):
        for mode in order:
            modes.clean(mode)
            stat = measure(bodies[mode])
            stat.check = modes.check(mode)
            modes.clean(mode)
            runs[mode].append(stat)
            log(
                f"rep {rep + 1}/{cfg.reps} {mode:20s} {stat.seconds:8.2f}s  "
                f"{corpus.samples / stat.seconds:9.0f} samples/s  peak RSS {stat.peak_rss_kb / 1024:6.1f} MB  "
                f"load {stat.load_before:.1f}  {stat.check}"
            )
        order = order[1:] + order[:1]  # rotate: no mode always runs first (cold) or after the same one
    return {m: summarize(runs[m], corpus) for m in cfg.modes}


def _result(
    cfg: BenchConfig, corpus: Corpus, version: dict, results: dict[str, dict], memory: dict | None, profile: dict | None
) -> dict:
    """The JSON result (paths in it are portable: relative to the checkout, or names)."""
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(Path(cfg.location)),
        "code": version,
        "config": {k: (portable(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "corpus": {
            "path": portable(corpus.path),
            "shards": len(corpus.shards),
            "samples": corpus.samples,
            "bytes": corpus.bytes,
            "spec": corpus.spec,
            "generated": corpus.generated,
            "generate_seconds": corpus.generate_seconds,
        },
        "modes": results,
        "ratios": ratios(results),
        "memory_check": memory,
        "targets": targets(results, memory),
        "profile": profile,
    }
