"""An extracted folder: the same samples as the synthetic tars, written as loose files (what `tar xf` of every
shard into one folder gives, the old recipe's input), for the tests, ``make run`` variants and the bench.

``dalle3-etl synth DIR --extracted``. Files are flat in DIR (their tar member names), created new; a file already
there with the same bytes is left as it is (a corpus can be written again or grown), one with other bytes is
refused, never replaced. The truth rows go to ``DIR/.truth.jsonl``: a hidden name, which the converter skips.
"""

from __future__ import annotations

import os
from pathlib import Path

from dalle3_etl.devtools.synth.samples import _shard_samples
from dalle3_etl.devtools.synth.spec import SynthSpec, TruthRow, write_truth

TRUTH_NAME = ".truth.jsonl"


def _write_new(path: Path, data: bytes) -> int:
    """Create `path` with `data`; 0 when it holds those bytes already; FileExistsError when it holds others."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        if path.is_file() and not path.is_symlink() and path.stat().st_size == len(data) and path.read_bytes() == data:
            return 0
        raise FileExistsError(f"{path} exists with other content; not replaced (use an empty folder)") from None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    return 1


def write_extracted(out_dir: Path | str, spec: SynthSpec) -> list[TruthRow]:
    """Write the samples of shards ``first_shard .. first_shard + shards - 1`` as loose files into `out_dir`
    (created), and their truth rows into ``out_dir/.truth.jsonl``; returns the rows."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[TruthRow] = []
    for s in range(spec.first_shard, spec.first_shard + spec.shards):
        for name, data in _shard_samples(spec, s, rows):
            if "/" in name:
                (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
            _write_new(out_dir / name, data)
    write_truth(out_dir / TRUTH_NAME, rows)
    return rows
