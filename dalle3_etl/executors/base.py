"""What every executor shares: the task (`ShardTask`), the `Executor` protocol, its callbacks, and `run_task`.

Every executor runs the same function, `run_task`, on the same `ShardTask`, so their outputs are the
same bytes (a dry run's tasks say `dry`: `run_task` then decides the shard's samples and writes nothing).
Executors report progress `(shard id, bytes, samples)` and each finished `ShardResult` through callbacks;
the driver (`pipeline`) decides what to run and merges afterwards. The executors themselves are in `local`
(this process, a local process pool) and `ray`; `choose` picks one.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dalle3_etl.settings import Settings
from dalle3_etl.shard.commit import forget_shard
from dalle3_etl.shard.convert import ShardResult, convert_shard
from dalle3_etl.shard.dry import dry_run_shard
from dalle3_etl.shard.taskconvert import convert_task
from dalle3_etl.sources.base import ShardSource
from dalle3_etl.store.layout import Layout
from dalle3_etl.store.tasks import TaskRange

ProgressCb = Callable[[str, int, int], None]
# A finished task's result; the callback may give back more tasks to run in the same run (a split shard whose
# split did not hold is converted again whole: `run.tasks.TaskBook`).
ResultCb = Callable[[ShardResult], "list[ShardTask] | None"]


@dataclass(frozen=True)
class ShardTask:
    source: ShardSource
    out: str
    settings: Settings
    dry: bool = False  # `convert --dry-run`: decide every sample, write nothing (`shard.dry.dry_run_shard`)
    part: TaskRange | None = None  # one byte range of a split shard (`run.tasks`); None: the whole shard

    @property
    def workers_lock(self) -> str | None:
        """The lock a worker holds while it may write into OUT (`RunLock`); none in a dry run, which never does."""
        return None if self.dry else str(Layout(Path(self.out)).workers_lock)


#: Environment variable naming a file to which every process that converts a shard appends its peak
#: RSS after each shard ("pid pool|inline kB"). `dalle3-etl bench` sets it: a pool worker that lives a
#: few milliseconds can slip between two samples of /proc, but not this.
RSS_LOG_ENV = "DALLE3_ETL_RSS_LOG"

_process_kind = "inline"  # what the RSS log calls this process: "pool" once `mark_pool_worker` ran in it


def mark_pool_worker() -> None:
    """Called by a local pool worker's initializer: its RSS log lines say "pool"."""
    global _process_kind
    _process_kind = "pool"


def _log_peak_rss() -> None:
    path = os.environ.get(RSS_LOG_ENV)
    if not path:
        return
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":
        kb //= 1024  # bytes there
    kind = _process_kind
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{os.getpid()} {kind} {kb}\n".encode())
    finally:
        os.close(fd)


def run_task(task: ShardTask, progress: ProgressCb | None = None) -> ShardResult:
    """Convert one shard (or, `task.dry`, decide its samples: a `DryResult`). Never raises for a shard's own
    problems: a failed result says what went wrong."""
    try:
        if task.dry:
            result = dry_run_shard(task.source, Path(task.out), task.settings, progress)
        elif task.part is not None:
            result = convert_task(task.source, Path(task.out), task.settings, task.part, progress)
        else:
            result = convert_shard(task.source, Path(task.out), task.settings, progress)
        _log_peak_rss()
        return result
    except Exception as exc:  # a bug or an unexpected input error: report it, keep the run going
        if not task.dry:  # a dry run left nothing behind
            try:
                layout, sid = Layout(Path(task.out)), task.source.shard_id
                if task.part is not None:  # a task of a split shard: its staging only
                    layout.fs.remove_tree(layout.task_staging(sid, task.part.index))
                else:
                    forget_shard(layout, sid, task.settings)
            except OSError:
                pass
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return ShardResult(
            shard_id=task.source.shard_id,
            ok=False,
            failure=f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})",
            part=task.part.index if task.part is not None else None,
        )


class Executor(Protocol):
    def run(self, tasks: list[ShardTask], on_progress: ProgressCb, on_result: ResultCb) -> None: ...


__all__ = ["RSS_LOG_ENV", "Executor", "ProgressCb", "ResultCb", "ShardTask", "mark_pool_worker", "run_task"]
