"""Tasks smaller than a shard (issue 18), measured: `benchmarks/split_bench.py`.

A corpus of one large shard and one small one (synth), converted with N workers, with tasks (`--task-bytes`) and
with whole shards (`--task-bytes` above any shard), alternated in one run (the order swaps every repetition), so
the ratio is measured under the same load; and, on the large shard alone, the guess of its split points that a run
makes (`shard.probe`) and the header-only scan it replaces. Wall times live in
`benchmarks/`, never in tests (tests/devtools/test_split_bench.py checks the harness on a tiny corpus).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from dalle3_etl.devtools.bench.config import _rmtree
from dalle3_etl.devtools.bench.machine import loop_s
from dalle3_etl.devtools.synth import SynthSpec, write_shard
from dalle3_etl.settings import Settings
from dalle3_etl.shard.probe import probe_points
from dalle3_etl.shard.scan import choose_points, scan_tar

WHOLE = 1 << 50  # a task size above any shard: every shard is one task


@dataclass
class SplitBench:
    corpus: dict
    workers: int
    task_bytes: int
    extra: list[str]
    load_before: tuple[float, float, float]
    split_s: list[float] = field(default_factory=list)
    whole_s: list[float] = field(default_factory=list)
    scan_s: list[float] = field(default_factory=list)
    probe_s: list[float] = field(default_factory=list)  # what a run spends before its tasks start (the guess)
    split_cpu_s: list[float] = field(default_factory=list)  # user + system CPU of the driver and its workers
    whole_cpu_s: list[float] = field(default_factory=list)
    tasks: int = 0
    loop_1_s: list[float] = field(default_factory=list)  # the machine's speed before each repetition (`loop_s`)
    loop_w_s: list[float] = field(default_factory=list)  # the same loop in `workers` processes at once

    @property
    def median_per_rep_ratio(self) -> float:
        return statistics.median(a / b for a, b in zip(self.split_s, self.whole_s))

    @property
    def ratio(self) -> float:
        return statistics.median(self.split_s) / statistics.median(self.whole_s)

    def to_json(self) -> dict:
        return {
            **asdict(self),
            "median_split_s": statistics.median(self.split_s),
            "median_whole_s": statistics.median(self.whole_s),
            "ratio_split_to_whole": self.ratio,
            "per_rep_ratios": [a / b for a, b in zip(self.split_s, self.whole_s)],
            "median_per_rep_ratio": self.median_per_rep_ratio,
            "median_scan_s": statistics.median(self.scan_s) if self.scan_s else None,
            "median_probe_s": statistics.median(self.probe_s) if self.probe_s else None,
            "median_split_cpu_s": statistics.median(self.split_cpu_s),
            "median_whole_cpu_s": statistics.median(self.whole_cpu_s),
        }


def make_corpus(folder: Path, large: int, small: int, image_bytes: int, seed: int = 18) -> list[Path]:
    """`data-000000.tar` with `large` samples and `data-000001.tar` with `small`, generated once."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, count in enumerate((large, small)):
        spec = SynthSpec(shards=1, per_shard=count, seed=seed, image_bytes=image_bytes, start_index=index * large)
        path = folder / f"data-{index:06d}.tar"
        marker = folder / f".data-{index:06d}.{count}x{image_bytes}"
        if not (path.exists() and marker.exists()):
            write_shard(path, spec, index)
            marker.touch()
        paths.append(path)
    return paths


#: The command prefix that runs a command and prints its CPU seconds, descendants included (`measure.py`).
MEASURE = [sys.executable, str(Path(__file__).with_name("measure.py"))]


def time_convert(corpus: Path, out: Path, workers: int, task_bytes: int, extra: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the run's processes, its workers included on Linux): CPU is what a loaded
    machine changes least."""
    if out.exists():
        _rmtree(out, out.parent)
    args = [sys.executable, "-m", "dalle3_etl", "convert", str(corpus), "-o", str(out), "-q", "-w", str(workers)]
    args += ["--task-bytes", str(task_bytes), *extra]
    start = time.perf_counter()
    done = subprocess.run([*MEASURE, *args], check=True, stdout=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    _rmtree(out, out.parent)
    return seconds, float(done.stdout.split()[-1])


def time_probe(path: Path, task_bytes: int) -> tuple[float, int]:
    """Seconds of the guess of one shard's split points (`shard.probe`, page cache warm), and the tasks it gives."""
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        points = probe_points(fh, os.path.getsize(path), replace(Settings(), task_bytes=task_bytes))
    seconds = time.perf_counter() - start
    return seconds, len(points or ()) + 1


def time_scan(path: Path, task_bytes: int) -> tuple[float, int]:
    """Seconds of the header-only scan of one shard (page cache warm, as in a run), and the tasks it gives."""
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        scan = scan_tar(fh, os.path.getsize(path), Settings())
    seconds = time.perf_counter() - start
    return seconds, len(choose_points(scan, task_bytes)) + 1


def run_split_bench(
    location: Path,
    *,
    large: int,
    small: int,
    image_bytes: int,
    workers: int = 2,
    reps: int = 3,
    task_bytes: int | None = None,
    extra: list[str] | None = None,
) -> SplitBench:
    corpus = location / "dalle3-etl-split-corpus"
    paths = make_corpus(corpus, large, small, image_bytes)
    sizes = [p.stat().st_size for p in paths]
    task_bytes = task_bytes or max(1, sizes[0] // 8)
    bench = SplitBench(
        corpus={"large": large, "small": small, "image_bytes": image_bytes, "bytes": sizes},
        workers=workers,
        task_bytes=task_bytes,
        extra=list(extra or []),
        load_before=os.getloadavg(),
    )
    out = location / "dalle3-etl-split-out"
    for rep in range(reps):
        bench.loop_1_s.append(loop_s(1))
        bench.loop_w_s.append(loop_s(workers))
        order = [("split", task_bytes), ("whole", WHOLE)]
        for name, size in order if rep % 2 == 0 else order[::-1]:
            seconds, cpu = time_convert(corpus, out, workers, size, bench.extra)
            (bench.split_s if name == "split" else bench.whole_s).append(seconds)
            (bench.split_cpu_s if name == "split" else bench.whole_cpu_s).append(cpu)
        seconds, bench.tasks = time_scan(paths[0], task_bytes)
        bench.scan_s.append(seconds)
        seconds, _ = time_probe(paths[0], task_bytes)
        bench.probe_s.append(seconds)
    return bench


__all__ = ["SplitBench", "make_corpus", "run_split_bench", "time_convert", "time_probe", "time_scan"]
