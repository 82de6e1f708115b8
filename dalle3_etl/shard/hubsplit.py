"""`hf://` shards split into tasks (`run.tasks`): the scan that finds the split points, and a task's input.

The scan streams the whole shard once (`HubStream`: one request, sha256 checked at the end, kept with
``--keep-tars``), walks its headers on the way (`shard.scan` through `ranges.ForwardReader`) and hashes it in
blocks; the points and block hashes are returned only when the whole file matched the Hub's sha256. A task then
reads its range with one bounded Range request, each block checked against those hashes (`ranges.fetch_range`),
into a sparse spool file in its staging folder, converts it from there, and removes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, BinaryIO

from dalle3_etl.settings import Settings
from dalle3_etl.shard.convert import PROGRESS_EVERY, source_fingerprint
from dalle3_etl.shard.scan import choose_points, scan_tar
from dalle3_etl.sources.base import ShardSource
from dalle3_etl.sources.hub.errors import HubError
from dalle3_etl.sources.hub.ranges import BlockHasher, BlockHashes, ForwardReader, block_size_for, fetch_range
from dalle3_etl.sources.hub.stream import HubShardSource
from dalle3_etl.store.layout import Layout
from dalle3_etl.store.tasks import TaskRange, read_plan


def is_hub(src: ShardSource) -> bool:
    return type(src) is HubShardSource


def hub_kept_whole(layout: Layout, todo: list[ShardSource], workers: int) -> set[str]:
    """The `hf://` shards of a run converted whole: all of them when there are no more workers than `hf://` shards
    to convert (each worker then streams a shard of its own; splitting would read every byte twice and start
    converting only after the scans), except those an earlier run split (their done tasks are kept)."""
    hub = [src for src in todo if is_hub(src)]
    if len(hub) < workers:
        return set()
    return {src.shard_id for src in hub if read_plan(layout, src.shard_id, source_fingerprint(src)) is None}


class HubPoints(tuple):
    """The split points of an `hf://` shard, carrying its block hashes (`blocks`, as recorded in the plan)."""

    blocks: dict[str, Any]

    def __new__(cls, points: tuple[int, ...], blocks: dict[str, Any]):
        self = super().__new__(cls, points)
        self.blocks = blocks
        return self

    def __reduce__(self):
        return (HubPoints, (tuple(self), self.blocks))


#: What a scan reports as it reads: (shard id, bytes read so far).
ScanProgress = Callable[[str, int], None]


def scan_hub(src: HubShardSource, settings: Settings, progress: ScanProgress | None = None) -> tuple[int, ...]:
    """The split points of an `hf://` shard (`HubPoints`, with its block hashes); none when it cannot be read or
    does not match the Hub's sha256 (then converted whole, which reports it). `progress` hears the bytes read so
    far every `PROGRESS_EVERY` seconds and once at the end."""
    block = block_size_for(src.size)
    hashes: list[str] = []
    hasher = BlockHasher(block, lambda _i, digest: hashes.append(digest))
    feed = hasher.feed if progress is None else _counting(hasher.feed, src.shard_id, progress)
    try:
        with src.open() as stream:
            view = ForwardReader(stream, src.size, feed)
            points = choose_points(scan_tar(view, src.size, settings), settings.task_bytes)
            view.drain()  # the rest: the whole file hashed, and checked against the Hub's sha256
            verified = stream.verified
    except (OSError, HubError):
        return ()
    finally:
        if progress is not None:
            progress(src.shard_id, src.size)  # read, or given up: nothing more to wait for
    hasher.flush()
    if not points or not verified:
        return ()
    return HubPoints(points, BlockHashes(block, tuple(hashes)).to_json())


def _counting(feed: Callable[[bytes], None], shard_id: str, progress: ScanProgress) -> Callable[[bytes], None]:
    read, last = 0, time.monotonic()

    def counted(data: bytes) -> None:
        nonlocal read, last
        feed(data)
        read += len(data)
        if time.monotonic() - last >= PROGRESS_EVERY:
            last = time.monotonic()
            progress(shard_id, read)

    return counted


def with_blocks(src: ShardSource, recorded: Any) -> ShardSource | None:
    """An `hf://` source carrying the block hashes of its plan (None when the plan has none); others unchanged."""
    if not is_hub(src):
        return src
    blocks = BlockHashes.from_json(recorded, src.size)
    return None if blocks is None else replace(src, blocks=blocks)


@contextmanager
def open_task_input(src: ShardSource, part: TaskRange, layout: Layout) -> Iterator[BinaryIO]:
    """The shard to read a task from: the local file, or for `hf://` the task's checked bytes (`fetch_range`) at
    their offsets in a spool file (`Layout.task_spool`, removed when done)."""
    if not is_hub(src):
        with src.open() as fh:
            yield fh
        return
    assert isinstance(src, HubShardSource)
    if src.blocks is None:
        raise HubError(f"{src.path_in_repo}: no block hashes recorded for its tasks")
    spool = layout.task_spool(src.shard_id, part.index)
    try:
        path = fetch_range(src, src.blocks, part.start, part.end, spool)
        with open(path, "rb") as fh:
            yield fh
    finally:
        layout.fs.unlink(spool)


__all__ = ["HubPoints", "ScanProgress", "hub_kept_whole", "is_hub", "open_task_input", "scan_hub", "with_blocks"]
