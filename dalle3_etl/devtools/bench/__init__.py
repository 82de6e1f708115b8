"""`dalle3-etl bench`: throughput of `convert` against the old recipe, a webdataset script and GNU tar.

One run generates (or reuses) a synthetic corpus (`synth`), then runs every mode several times,
alternating modes within each repetition (the order rotates every repetition), and reports per mode
the median wall time, the spread (min, max), samples/s, MB/s of tar input, CPU seconds and the peak
RSS of every process it started (pool workers included), then every ratio between modes measured in
this same run and whether the issue's targets are met. Results go to a JSON file and a PNG chart.

Modes (names used by ``--modes``):

* ``convert-parquet``, ``convert-captions``, ``convert-full``: ``dalle3-etl convert -w N`` with
  ``--no-images --no-captions``, ``--no-images``, and the defaults (images + captions + parquet);
* ``convert-parquet-1w``: parquet-only with one worker (for the 2-vs-1 worker scaling target);
* ``convert-parquet-dedup``: parquet-only with ``--dedup md5_file_hash`` (every key distinct in synth: the
  driver's table holds every key and every row is kept), against ``convert-parquet`` (10 % target);
* ``old-recipe``: ``tar xf`` every shard, one after the other, into one folder, then
  ``baselines/old_recipe/make_parquet.py`` and ``make_captions.py`` (single process, as users run it);
* ``webdataset``: ``baselines/wds_baseline.py`` with N worker processes (same outputs as the old recipe);
* ``tar-json``: ``tar -xOf SHARD --wildcards '*.json' > /dev/null``, one tar per core at a time
  (the read limit for metadata);
* ``tar-xf``: ``tar xf SHARD -C DIR``, one tar per core at a time (the limit for extraction).

Peak RSS: every command runs under ``/usr/bin/time -f %M`` (when present), whose figure is the kernel's
``ru_maxrss`` of that command, exact, and (Linux folds reaped children into it) the max over the
command and the children it reaped; a command started straight from this large Python process would
inherit this process's RSS in ``ru_maxrss``, hence the small wrapper. Every process further down (the
forkserver and pool workers of `convert`, the pool of the webdataset script) and the driver itself are
also sampled from ``/proc/<pid>/status`` (VmHWM, the kernel's own high-water mark) every 50 ms; pool
workers of `convert`, which may live only milliseconds on a small corpus, also log their own
``ru_maxrss`` after each shard (``DALLE3_ETL_RSS_LOG``), so none is missed.

Timings live in ``benchmarks/``, never in tests. Linux only (GNU tar, /proc).

Modules: ``config`` (modes, limits, BenchConfig, BenchError), ``procs`` (running commands, CPU and peak
RSS of every process), ``corpus``, ``modes`` (how each mode runs and what it must produce), ``stats``
(medians, ratios, targets), ``memory`` (the memory check), ``profiling`` (cProfile of one shard),
``machine`` (machine, code version, portable paths), ``report`` (table, chart, result files), ``run``
(`run_bench`); ``baselines/`` holds the scripts the baseline modes run (shipped with the package).
"""

from __future__ import annotations

from dalle3_etl.devtools.bench.config import ALL_MODES, BASELINES, SCRIPTS_DIR, BenchConfig, BenchError
from dalle3_etl.devtools.bench.procs import Runner
from dalle3_etl.devtools.bench.profiling import STAGES, profile_shard
from dalle3_etl.devtools.bench.run import run_bench

__all__ = [
    "BenchConfig",
    "run_bench",
    "ALL_MODES",
    "BASELINES",
    "STAGES",
    "SCRIPTS_DIR",
    "BenchError",
    "Runner",
    "profile_shard",
]
