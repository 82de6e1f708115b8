#!/usr/bin/env python3
"""Tasks smaller than a shard (issue 18): one large + one small shard, with tasks vs whole shards, in one run.

python benchmarks/split_bench.py --large 100000 --small 5000 --image-bytes 4000 --location /dev/shm -w 2 --reps 3 \
    --extra=--no-images
The logic is `dalle3_etl.devtools.bench.split`; the result is printed as JSON (see benchmarks/README.md).
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a checkout works without installing

from dalle3_etl.devtools.bench.split import run_split_bench  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=5_000)
    parser.add_argument("--image-bytes", type=int, default=4_000)
    parser.add_argument("--location", type=Path, default=Path("/dev/shm"))
    parser.add_argument("-w", "--workers", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--task-bytes", type=int, default=None, help="default: an eighth of the large shard")
    parser.add_argument("--extra", action="append", default=[], help="more convert options, e.g. --extra=--no-images")
    args = parser.parse_args()
    options = vars(args)  # the argument names are run_split_bench's keywords
    bench = run_split_bench(options.pop("location"), **options)
    print(json.dumps(bench.to_json(), indent=2))
