"""Which shards of the dataset: its repo, where its shards are, and ``--shards`` selections such as ``0-9,12``.

Light to import (no Hub client): the command line imports it to register ``download`` with its defaults and checks.
"""

from __future__ import annotations

import re

from dalle3_etl.sources.hub.errors import ShardSelectionError

DEFAULT_REPO = "ProGamerGov/synthetic-dataset-1m-dalle3-high-quality-captions"
SHARD_DIR = "data"
SHARD_PATTERN = "data/data-%06d.tar"
MAX_SHARD_INDEX = 999_999


def parse_shard_selection(text: str) -> list[int]:
    """``"0-9,12"`` -> ``[0, 1, ..., 9, 12]`` (sorted, each once). Raises `ShardSelectionError` saying what is wrong."""
    if text is None or not text.strip():
        raise ShardSelectionError("empty shard selection; expected e.g. 0-9,12")
    out: set[int] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise ShardSelectionError(f"{text!r}: empty item between commas; expected e.g. 0-9,12")
        m = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", item)
        if m is None:
            raise ShardSelectionError(
                f"{text!r}: {item!r} is not a shard number or range (use non-negative numbers like 7 or 0-9)"
            )
        lo = int(m[1])
        hi = int(m[2]) if m[2] is not None else lo
        if hi < lo:
            raise ShardSelectionError(f"{text!r}: range {item!r} goes backwards (write {hi}-{lo})")
        if hi > MAX_SHARD_INDEX:
            raise ShardSelectionError(f"{text!r}: shard {hi} is out of range (0-{MAX_SHARD_INDEX})")
        out.update(range(lo, hi + 1))
    return sorted(out)


def ranges(nums: list[int]) -> str:
    """[0,1,2,5] -> '0-2,5'"""
    out, i = [], 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        out.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    return ",".join(out)


__all__ = ["DEFAULT_REPO", "SHARD_DIR", "SHARD_PATTERN", "MAX_SHARD_INDEX", "parse_shard_selection", "ranges"]
