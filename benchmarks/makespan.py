#!/usr/bin/env python3
"""Makespan of a full DALLE-3 run (69 shards of 5-10 GB) on W workers, by scheduler (issue 18).

Shard sizes: the first ten as published (9.25, 6.09, 7.25, 5.44, 6.22, 6.72, 10.1, 10.1, 5.87, 10.1 GB), the other
59 drawn uniformly between 5.4 and 10.1 GB with a fixed seed. Every worker converts at the same speed, so time is
measured in GB converted by the busiest worker. Schedulers:

- in order, whole shards: what a run did before tasks (a free worker takes the next shard in shard order);
- largest first, whole shards;
- largest first, tasks of about T GB (`--task-bytes`: a shard of 1.5 T or more is cut into round(size / T) even
  tasks, as `shard.scan.choose_points` aims for), a free worker takes the largest task left;
- the same with the run's last round cut finer, what `convert` does (`run.tasks.tail_settings`): the smallest shards,
  as many as add up to at most W x T, get tasks of T / 4, so they run last and the workers end closer together;
- an even split of the bytes (the bound no scheduler beats).

python benchmarks/makespan.py            # prints the Markdown table of benchmarks/README.md
"""

import heapq
import random

FIRST_TEN = [9.25, 6.09, 7.25, 5.44, 6.22, 6.72, 10.1, 10.1, 5.87, 10.1]
WORKERS = (16, 32, 64, 200)
TASK_GB = (1.0, 0.25)


def shard_sizes(seed: int = 18) -> list[float]:
    rng = random.Random(seed)
    return FIRST_TEN + [round(rng.uniform(5.4, 10.1), 2) for _ in range(69 - len(FIRST_TEN))]


def list_schedule(jobs: list[float], workers: int) -> float:
    """Each job, in the given order, goes to the worker that is free first; the time the last one finishes."""
    free = [0.0] * workers
    for job in jobs:
        heapq.heapreplace(free, free[0] + job)
    return max(free)


def tasks(sizes: list[float], task_gb: float) -> list[float]:
    out = []
    for size in sizes:
        n = 1 if size < 1.5 * task_gb else max(1, round(size / task_gb))
        out += [size / n] * n
    return out


def tail_tasks(sizes: list[float], task_gb: float, workers: int, divisor: int = 4) -> list[float]:
    """`tasks`, with the smallest shards that add up to at most `workers` x `task_gb` cut `divisor` times finer."""
    finer, total = set(), 0.0
    for i in sorted(range(len(sizes)), key=lambda i: (sizes[i], i)):
        if total + sizes[i] > workers * task_gb:
            break
        finer.add(i)
        total += sizes[i]
    out = []
    for i, size in enumerate(sizes):
        out += tasks([size], task_gb / divisor if i in finer else task_gb)
    return out


def table(sizes: list[float]) -> str:
    even = {w: sum(sizes) / w for w in WORKERS}
    rows = [
        ("in order, whole shards", {w: list_schedule(sizes, w) for w in WORKERS}),
        ("largest first, whole shards", {w: list_schedule(sorted(sizes, reverse=True), w) for w in WORKERS}),
    ]
    for gb in TASK_GB:
        jobs = sorted(tasks(sizes, gb), reverse=True)
        rows.append((f"largest first, tasks of ~{gb:g} GB", {w: list_schedule(jobs, w) for w in WORKERS}))
        tail = {w: list_schedule(sorted(tail_tasks(sizes, gb, w), reverse=True), w) for w in WORKERS}
        rows.append((f"largest first, tasks of ~{gb:g} GB, last round 4x finer", tail))
    rows.append(("even split of the bytes", even))
    head = "| scheduler | " + " | ".join(f"{w} workers" for w in WORKERS) + " |"
    lines = [head, "|---|" + "---:|" * len(WORKERS)]
    for name, spans in rows:
        cells = [f"{spans[w]:.1f} GB ({spans[w] / even[w] - 1:+.0%})" for w in WORKERS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sizes = shard_sizes()
    print(f"69 shards, {sum(sizes):.1f} GB; busiest worker's GB (and how much later than an even split):\n")
    print(table(sizes))
