#!/usr/bin/env python3
"""Run the benchmark: the same as `dalle3-etl bench` (all logic lives in `dalle3_etl/devtools/bench/`).

python benchmarks/run.py --samples 200000 --shards 12 --image-bytes 4000 --location /dev/shm --reps 3 -w 2
python benchmarks/run.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a checkout works without installing

from dalle3_etl.cli import app  # noqa: E402

if __name__ == "__main__":
    app(["bench", *sys.argv[1:]], prog_name="benchmarks/run.py")
