"""What a synthetic corpus is: its spec (`SynthSpec`), its shard names, and the truth rows recorded in
``truth.jsonl`` (what a converter running with default settings must output for each sample)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from dalle3_etl.errors import UsageError
from dalle3_etl.store.fsio import Root


class SpecError(UsageError, ValueError):
    """A `SynthSpec` field out of range (a ValueError for callers of the library, exit 2 on the command line)."""


@dataclass(frozen=True)
class SynthSpec:
    shards: int = 2
    per_shard: int = 100
    seed: int = 0
    image_bytes: int = 24_000  # approximate size of each image member (padded with random bytes; unique per sample)
    missing_size_ratio: float = 0.05  # JSON without width/height/resolution -> size only from the image header
    no_caption_ratio: float = 0.01  # no usable caption in any caption field -> must be rejected
    fallback_ratio: float = 0.05  # short_caption missing/empty/whitespace, caption from the fallback chain
    json_first_ratio: float = 0.5  # JSON member written before its image (else after)
    start_index: int = 0  # global sample numbering start
    first_shard: int = 0  # write_corpus writes shards first_shard .. first_shard + shards - 1

    def __post_init__(self) -> None:
        if self.shards < 0 or self.per_shard < 0 or self.first_shard < 0 or self.start_index < 0:
            raise SpecError("shards, per_shard, first_shard and start_index must be >= 0")
        if self.image_bytes < 0:
            raise SpecError("image_bytes must be >= 0")
        for name in ("missing_size_ratio", "no_caption_ratio", "fallback_ratio", "json_first_ratio"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise SpecError(f"{name} must be in [0, 1], got {v}")
        if self.no_caption_ratio + self.fallback_ratio > 1.0:
            raise SpecError("no_caption_ratio + fallback_ratio must be <= 1")


@dataclass(frozen=True)
class TruthRow:
    shard: str  # shard file stem, e.g. "data-000000"
    key: str  # member name without its last extension (may contain dots)
    image_member: str
    json_member: str
    width: int  # true size, as written in the image header
    height: int
    caption: str | None  # expected output caption with default settings (cleaned); None = must be rejected
    source: str | None
    json_has_size: bool


def shard_name(shard_index: int) -> str:
    return f"data-{shard_index:06d}"


def write_truth(path: Path | str, rows: Sequence[TruthRow]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "wb") as fh:
        for r in rows:
            fh.write(orjson.dumps(r))
            fh.write(b"\n")
    Root(path.parent).replace(tmp, path)


def read_truth(path: Path | str) -> list[TruthRow]:
    rows = []
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                rows.append(TruthRow(**orjson.loads(line)))
    return rows
