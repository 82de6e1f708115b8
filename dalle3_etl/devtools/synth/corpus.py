"""Writing shards and whole corpora: each shard to a temporary name then renamed (an identical shard
already there is left untouched), and ``truth.jsonl`` describing every synthetic shard in the folder."""

from __future__ import annotations

from pathlib import Path

from dalle3_etl.devtools.synth.samples import _shard_samples
from dalle3_etl.devtools.synth.spec import SynthSpec, TruthRow, read_truth, shard_name, write_truth
from dalle3_etl.devtools.synth.tarwrite import write_tar
from dalle3_etl.store.fsio import Root


def _files_equal(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(1 << 20)
            if x != fb.read(1 << 20):
                return False
            if not x:
                return True


def write_shard(path: Path | str, spec: SynthSpec, shard_index: int) -> list[TruthRow]:
    """Write one shard (``spec.per_shard`` samples, numbered from ``start_index + shard_index * per_shard``).

    The file is written to a hidden temporary name then renamed; if ``path`` already holds identical bytes
    it is left untouched (mtime kept).  Returns the truth rows in member order.
    """
    path = Path(path)
    rows: list[TruthRow] = []
    tmp = path.with_name(f".{path.name}.partial")
    try:
        write_tar(tmp, _shard_samples(spec, shard_index, rows))
        if path.exists() and _files_equal(tmp, path):
            Root(path.parent).unlink(tmp)
        else:
            Root(path.parent).replace(tmp, path)
    finally:
        Root(path.parent).unlink(tmp)
    return rows


def write_corpus(out_dir: Path | str, spec: SynthSpec) -> list[TruthRow]:
    """Write ``out_dir/data-NNNNNN.tar`` for shards ``first_shard .. first_shard + shards - 1`` and
    ``out_dir/truth.jsonl``; return the truth rows (shard then member order).

    In a fresh directory the rows are exactly those of the shards written.  If ``truth.jsonl`` already
    exists (growing a corpus), its rows for other shards whose tar still exists are kept, so truth.jsonl
    (and the return value) always describes every synthetic shard present in ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    new_rows: list[TruthRow] = []
    written: set[str] = set()
    for s in range(spec.first_shard, spec.first_shard + spec.shards):
        stem = shard_name(s)
        new_rows += write_shard(out_dir / f"{stem}.tar", spec, s)
        written.add(stem)
    truth_path = out_dir / "truth.jsonl"
    rows = new_rows
    if truth_path.exists():
        kept = [r for r in read_truth(truth_path) if r.shard not in written and (out_dir / f"{r.shard}.tar").exists()]
        if kept:
            by_shard: dict[str, list[TruthRow]] = {}
            for r in kept + new_rows:
                by_shard.setdefault(r.shard, []).append(r)
            rows = [r for stem in sorted(by_shard) for r in by_shard[stem]]
    write_truth(truth_path, rows)
    return rows
