#!/usr/bin/env python3
"""Benchmark dalle3_etl.shard.tarstream against tarfile on a synthetic shard (a script, not a test).

Builds a tar of N samples (`<key>.jpg` with a random body, then `<key>.json` of ~1.5 KB, the order a
WebDataset shard has) in a temp dir (/dev/shm if present, so the disk is not what is measured) and
times, reading the JSON bodies only:

  tarfile r:       tarfile.open(path, 'r:'), extractfile(json).read(), tf.members cleared as it goes
  tarfile r|       tarfile.open(path, 'r|') (stream mode, reads every body), for reference
  tarstream seek   TarReader on the open file (pread, image bodies skipped by offset)
  tarstream stream TarReader(..., seekable=False) on the open file (image bodies read and discarded)

Prints members/s (best of --repeat runs, warm page cache) and the ratio against tarfile r: measured in
the same run.

    .venv/bin/python benchmarks/tarstream_bench.py --samples 20000 --image-bytes 100000
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dalle3_etl.shard import tarbytes  # noqa: E402
from dalle3_etl.shard.tarstream import TarReader  # noqa: E402


def build(path: Path, samples: int, image_bytes: int, json_bytes: int, seed: int) -> None:
    rng = random.Random(seed)
    pool = rng.randbytes(max(image_bytes, 1) + 65536)  # bodies are windows of one random pool
    filler = "lorem ipsum dolor sit amet " * (json_bytes // 27 + 2)
    with open(path, "wb") as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for i in range(samples):
            key = f"{i:09d}"
            start = rng.randrange(65536)
            body = pool[start : start + image_bytes]
            ti = tarfile.TarInfo(f"{key}.jpg")
            ti.size = len(body)
            ti.mtime = 1700000000
            tf.addfile(ti, io.BytesIO(body))
            head = f'{{"image_name": "{key}.jpg", "width": 1024, "height": 1024, "short_caption": "'
            text = (head + filler[: max(0, json_bytes - len(head) - 3)] + '"}\n').encode()
            ti = tarfile.TarInfo(f"{key}.json")
            ti.size = len(text)
            ti.mtime = 1700000000
            tf.addfile(ti, io.BytesIO(text))


def run_tarfile(path: Path) -> tuple[int, int]:
    members = json_bytes = 0
    with tarfile.open(path, "r:") as tf:
        for ti in tf:
            members += 1
            if ti.name.endswith(".json"):
                json_bytes += len(tf.extractfile(ti).read())
            tf.members.clear()  # tarfile keeps every TarInfo otherwise
    return members, json_bytes


def run_tarfile_stream(path: Path) -> tuple[int, int]:
    members = json_bytes = 0
    with tarfile.open(path, "r|") as tf:
        for ti in tf:
            members += 1
            if ti.name.endswith(".json"):
                json_bytes += len(tf.extractfile(ti).read())
            tf.members.clear()
    return members, json_bytes


def run_tarstream(path: Path, seekable: bool) -> tuple[int, int]:
    members = json_bytes = 0
    with open(path, "rb") as fh:
        reader = TarReader(fh, seekable=seekable)
        assert reader.seekable == seekable
        for m in reader:
            members += 1
            if m.name.endswith(".json"):
                json_bytes += len(reader.read())
    return members, json_bytes


def best_of(fn, repeat: int) -> tuple[float, tuple[int, int]]:
    best = float("inf")
    result = (0, 0)
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--image-bytes", type=int, default=100_000)
    ap.add_argument("--json-bytes", type=int, default=1_500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="where to build the tar (default /dev/shm or TMPDIR)")
    ap.add_argument("--seek-window", type=int, default=None, help="override tarbytes.SEEK_WINDOW (bytes)")
    ap.add_argument("--no-tarfile-stream", action="store_true", help="skip the tarfile 'r|' reference run")
    args = ap.parse_args(argv)

    if args.seek_window:
        tarbytes.SEEK_WINDOW = args.seek_window
    base = args.dir or (Path("/dev/shm") if Path("/dev/shm").is_dir() else None)
    tmp = Path(tempfile.mkdtemp(prefix="tarstream-bench-", dir=base))
    try:
        path = tmp / "shard.tar"
        t0 = time.perf_counter()
        build(path, args.samples, args.image_bytes, args.json_bytes, seed=0)
        size = path.stat().st_size
        print(
            f"built {path} ({args.samples} samples, {2 * args.samples} members, {size / 1e6:.1f} MB) "
            f"in {time.perf_counter() - t0:.1f}s; python {sys.version.split()[0]}, {os.cpu_count()} cpus, "
            f"best of {args.repeat}"
        )
        runs = [
            ("tarfile r:", lambda: run_tarfile(path)),
            ("tarstream seekable", lambda: run_tarstream(path, True)),
            ("tarstream stream", lambda: run_tarstream(path, False)),
        ]
        if not args.no_tarfile_stream:
            runs.insert(1, ("tarfile r| (stream)", lambda: run_tarfile_stream(path)))
        base_rate = None
        reference = None
        print(f"{'reader':<22}{'seconds':>9}{'members/s':>13}{'MB/s':>10}{'vs tarfile r:':>15}")
        for label, fn in runs:
            seconds, result = best_of(fn, args.repeat)
            if reference is None:
                reference = result
            elif result != reference:
                raise SystemExit(f"{label}: read {result} (members, json bytes), tarfile read {reference}")
            rate = result[0] / seconds
            base_rate = base_rate or rate
            print(f"{label:<22}{seconds:>9.3f}{rate:>13,.0f}{size / seconds / 1e6:>10,.0f}{rate / base_rate:>14.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
