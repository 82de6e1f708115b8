"""The corpus a bench run measures: generated with `synth` (in parallel, reused when already there) or
shards the user already has."""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dalle3_etl.devtools.bench.config import BenchError, _rmtree
from dalle3_etl.devtools.bench.machine import portable


@dataclass
class Corpus:
    path: Path
    shards: list[Path]
    samples: int
    bytes: int
    generated: bool
    generate_seconds: float = 0.0
    spec: dict = field(default_factory=dict)


def _write_one(args: tuple[str, dict, int]) -> None:
    from dalle3_etl.devtools.synth import SynthSpec, shard_name, write_shard

    folder, spec, index = args
    write_shard(Path(folder) / f"{shard_name(index)}.tar", SynthSpec(**spec), index)


def generate_corpus(folder: Path, shards: int, per_shard: int, image_bytes: int, seed: int, workers: int) -> Corpus:
    """Write `shards` synthetic shards in parallel (synth.write_shard: same bytes whatever the worker
    count); reuse the folder if it already holds exactly this corpus."""
    from dalle3_etl.devtools.synth import shard_name

    spec = {"shards": shards, "per_shard": per_shard, "seed": seed, "image_bytes": image_bytes}
    marker = folder / "corpus.json"
    paths = [folder / f"{shard_name(i)}.tar" for i in range(shards)]
    start = time.perf_counter()
    reused = False
    if marker.exists() and json.loads(marker.read_text()) == spec and all(p.exists() for p in paths):
        reused = True
    else:
        if folder.exists() and not marker.exists() and any(folder.iterdir()):
            raise BenchError(
                f"{folder} holds files a bench run did not generate (no corpus.json): "
                "choose another --location or move them"
            )
        _rmtree(
            folder, folder.parent
        )  # a corpus this command generated earlier with another spec (its corpus.json says so)
        folder.mkdir(parents=True)
        jobs = [(str(folder), spec, i) for i in range(shards)]
        if workers > 1 and shards > 1:
            with ProcessPoolExecutor(workers) as pool:
                list(pool.map(_write_one, jobs))
        else:
            for job in jobs:
                _write_one(job)
        marker.write_text(json.dumps(spec))
    return Corpus(
        path=folder,
        shards=paths,
        samples=shards * per_shard,
        bytes=sum(p.stat().st_size for p in paths),
        generated=not reused,
        generate_seconds=0.0 if reused else time.perf_counter() - start,
        spec=spec,
    )


def existing_corpus(folder: Path) -> Corpus:
    """Shards the user already has: count samples (JSON members) by walking the tar headers."""
    from dalle3_etl.shard.samples import classify
    from dalle3_etl.shard.tarcompress import open_tar

    paths = sorted(folder.glob("*.tar"))
    if not paths:
        raise BenchError(f"no .tar shards in {folder}")
    samples = 0
    for path in paths:
        with open(path, "rb") as fh:
            for member in open_tar(fh):
                if member.problem is None and classify(member.name)[1] == "json":
                    samples += 1
    return Corpus(
        path=folder,
        shards=paths,
        samples=samples,
        bytes=sum(p.stat().st_size for p in paths),
        generated=False,
        spec={"existing": portable(folder)},
    )
