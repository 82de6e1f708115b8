"""A shard split into tasks, on disk: its plan (the byte ranges, fixed by the run that split it), each finished
task's result, and the layout a task writes through.

`OUT/.dalle3-etl/tasks/<shard>/plan.json` holds the input's fingerprint and the ranges; a later run with another
`--task-bytes` keeps them, so a partly done shard always comes out of one set of ranges. A task is done when
its folder `done-<i>` exists (renamed from `staging-<i>` once complete, its `result.json` inside).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from dalle3_etl.store.layout import Layout

RESULT_NAME = "result.json"
TASK_PART = "part.arrow"  # a task's rows (`TaskLayout.staged_part`)
TOKENS_NAME = "tokens.bin"  # a done task's name tokens (`shard.scan.name_token`), sorted, NUL-separated


@dataclass(frozen=True)
class TaskRange:
    """One task of a split shard: members whose first header lies in [start, end) (`end` None: to the end)."""

    index: int
    count: int
    start: int
    end: int | None

    def length(self, size: int) -> int:
        return (size if self.end is None else self.end) - self.start


def ranges_from_points(points: tuple[int, ...] | list[int], start: int = 0) -> list[TaskRange]:
    """The tasks cut at `points` (increasing offsets after `start`)."""
    bounds = [start, *points, None]
    count = len(bounds) - 1
    return [TaskRange(i, count, bounds[i], bounds[i + 1]) for i in range(count)]


def read_plan(layout: Layout, shard_id: str, fingerprint: dict[str, Any]) -> list[TaskRange] | None:
    """The recorded ranges of a shard whose input still has `fingerprint`, else None."""
    try:
        obj = orjson.loads(layout.task_plan(shard_id).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(obj, dict) or obj.get("source") != fingerprint or not isinstance(obj.get("points"), list):
        return None
    points = obj["points"]
    if not all(isinstance(p, int) for p in points) or points != sorted(set(points)):
        return None
    return ranges_from_points(points)


def write_plan(
    layout: Layout, shard_id: str, fingerprint: dict[str, Any], points: tuple[int, ...], blocks: Any = None
) -> None:
    """`blocks`: an `hf://` shard's block hashes (`sources.hub.ranges`), kept with the ranges."""
    layout.shard_tasks(shard_id).mkdir(parents=True, exist_ok=True)
    plan = {"source": fingerprint, "points": list(points)} | ({"blocks": blocks} if blocks is not None else {})
    data = orjson.dumps(plan, option=orjson.OPT_SORT_KEYS)
    layout.fs.write_atomic(layout.task_plan(shard_id), data)


def read_plan_blocks(layout: Layout, shard_id: str) -> Any:
    """The block hashes recorded in a shard's plan (checked by their reader), or None."""
    try:
        obj = orjson.loads(layout.task_plan(shard_id).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return obj.get("blocks") if isinstance(obj, dict) else None


def read_task_result(layout: Layout, shard_id: str, index: int) -> dict[str, Any] | None:
    """A finished task's result (the fields of a `ShardResult`), or None when the task is not done."""
    try:
        obj = orjson.loads((layout.task_done(shard_id, index) / RESULT_NAME).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def write_task_tokens(folder: Path, tokens: list[str]) -> None:
    """A task's name tokens, UTF-8 (surrogates kept) between NULs, into its staging `folder` before it is made done;
    a token holding a NUL is left out (the task's `boundary` refuses the split then)."""
    data = "\0".join(t for t in tokens if "\0" not in t)
    (folder / TOKENS_NAME).write_bytes(data.encode("utf-8", "surrogatepass"))


def read_task_tokens(layout: Layout, shard_id: str, index: int) -> set[bytes] | None:
    """The name tokens of a done task, or None when it has none on record (done by an older version)."""
    try:
        data = (layout.task_done(shard_id, index) / TOKENS_NAME).read_bytes()
    except OSError:
        return None
    return set(data.split(b"\0")) if data else set()


def tasks_done(layout: Layout, shard_id: str) -> tuple[int, int] | None:
    """(tasks done, tasks) of a shard split into tasks and not complete yet, or None (`status`: "3 of 8 parts")."""
    try:
        obj = orjson.loads(layout.task_plan(shard_id).read_bytes())
        count = len(obj["points"]) + 1
    except (OSError, orjson.JSONDecodeError, TypeError, KeyError):
        return None
    if count == 1:
        return None  # a shard whose split did not hold: converted whole
    done = sum(read_task_result(layout, shard_id, i) is not None for i in range(count))
    return done, count


@dataclass(frozen=True)
class TaskLayout(Layout):
    """The output's layout, but a shard's staging folder is one task's (`tasks/<shard>/staging-<i>`): the
    `SampleWriter` of a task writes its part, rejects and files there, through the same names."""

    task_dir: Path = Path()

    def staging(self, shard_id: str) -> Path:
        return self.task_dir

    def staged_part(self, shard_id: str) -> Path:
        return self.task_dir / TASK_PART  # Arrow IPC: read once, memory-mapped, by the driver (`sinks.PartWriter`)


__all__ = [
    "RESULT_NAME",
    "TASK_PART",
    "TaskLayout",
    "TaskRange",
    "ranges_from_points",
    "read_plan",
    "read_plan_blocks",
    "read_task_result",
    "read_task_tokens",
    "write_plan",
    "write_task_tokens",
]
