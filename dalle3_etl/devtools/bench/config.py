"""What a bench run is made of: the mode names, the targets' limits, `BenchConfig`, `BenchError`, where the
baseline scripts are, and removing what a run created."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dalle3_etl.errors import EtlError
from dalle3_etl.store.fsio import Root

CONVERT_MODES = {
    "convert-parquet": ["--no-images", "--no-captions"],
    "convert-captions": ["--no-images"],
    "convert-full": [],
    "convert-parquet-1w": ["--no-images", "--no-captions"],
    # synth's file hashes are all distinct: every key goes into the driver's table and every row is kept, as
    # in the real dataset (synth's md5_pil_hash, one per image size, would leave a handful of rows)
    "convert-parquet-dedup": ["--no-images", "--no-captions", "--dedup", "md5_file_hash"],
    # the parquet plus OUT/webshart/<shard>.json indexes, nothing extracted (issue: within 1.5x of parquet-only)
    "convert-webshart": ["--webshart"],
}
ALL_MODES = (
    "convert-parquet",
    "convert-captions",
    "convert-full",
    "convert-parquet-1w",
    "convert-parquet-dedup",
    "convert-webshart",
    "old-recipe",
    "webdataset",
    "tar-json",
    "tar-xf",
    "folder-convert",  # an extracted folder (devtools/bench/folder.py)
    "folder-convert-hard",
    "folder-old-recipe",
)
BASELINES = ("tar-json", "tar-xf", "old-recipe", "webdataset", "folder-old-recipe")
SCRIPTS_DIR = Path(__file__).resolve().parent / "baselines"  # old_recipe/ and wds_baseline.py, shipped in the package
POLL_SECONDS = 0.05
RSS_LIMIT_MB = 200.0
FLAT_TOLERANCE = 0.10
DEDUP_TOLERANCE = 0.10  # parquet-only with --dedup at most 10 % slower than without


class BenchError(EtlError, RuntimeError):
    """The benchmark cannot run (missing tool or script) or a mode failed."""


@dataclass
class BenchConfig:
    samples: int = 200_000
    shards: int = 12
    image_bytes: int = 4_000
    location: Path = Path("/dev/shm")
    reps: int = 3
    workers: int = 2
    modes: tuple[str, ...] = ALL_MODES
    out_dir: Path = Path("benchmarks/results")
    corpus: Path | None = None  # existing shards instead of a generated corpus
    keep_corpus: bool = False
    memory_check: bool = True
    memory_base: tuple[int, int] = (2, 2_000)  # (shards, samples per shard) of the 1x memory-check corpus
    profile: bool = False  # profile one shard conversion in-process (cProfile), per stage
    seed: int = 0
    scripts_dir: Path = SCRIPTS_DIR
    quiet: bool = False

    @property
    def per_shard(self) -> int:
        return -(-self.samples // self.shards)


def _rmtree(path: Path, within: Path) -> None:
    """Remove a folder or file this command created (its work folders, corpora, temporary logs). `within` is the
    folder the command made it in: the removal is refused unless `path` is strictly inside it (no symlink
    followed, `fsio.Root`), so a wrong path can never reach anything else."""
    Root(within).remove_tree(path)
