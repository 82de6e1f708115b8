"""Tasks smaller than a shard: which shards are split (`plan_tasks`), in what order tasks run (largest first), progress
across a shard's tasks, and putting a shard together once all its tasks are done (`TaskBook.settle`).

A plain local or `hf://` tar of at least 1.5x `task_bytes` is scanned (`shard.scan`, headers only; `hf://`: see
`shard.hubsplit`) and cut at the candidate points nearest to even multiples; the ranges are recorded (`store.tasks`)
and a later run keeps them, whatever its `--task-bytes`, so a partly done shard comes out of one set of ranges. Not
split: compressed shards, other kinds of sources, and runs with `--dedup` (the within-shard repeats are the
worker's) or `--flat`.

When every task of a shard is done, the driver concatenates their parts (in the whole shard's row batches) and
reject lines into the shard's staging folder, moves there the one folder all its tasks wrote their files into
(`shard.taskfiles`), and commits it exactly as a whole shard is committed; its completion record is written last. The output is then byte for byte that of the whole shard.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa

from dalle3_etl.executors.base import ProgressCb, ShardTask
from dalle3_etl.executors.pool import default_workers, drain, mp_context
from dalle3_etl.settings import Settings
from dalle3_etl.shard.commit import forget_shard
from dalle3_etl.shard.convert import ShardConverter, ShardResult, source_fingerprint
from dalle3_etl.shard.hubsplit import ScanProgress, hub_kept_whole, is_hub, scan_hub, with_blocks
from dalle3_etl.shard.probe import probe_points
from dalle3_etl.shard.scan import choose_points, scan_tar
from dalle3_etl.shard.sinks import parquet_writer, part_schema
from dalle3_etl.shard.taskconvert import TASK_SEP
from dalle3_etl.shard.taskfiles import forget_task_files, move_task_files
from dalle3_etl.sources.base import ShardSource, natural_key
from dalle3_etl.store.crash import crash_point, sync_filesystem
from dalle3_etl.store.layout import Layout
from dalle3_etl.store.records import ShardRecord, write_record
from dalle3_etl.store.tasks import (
    TASK_PART,
    TaskRange,
    ranges_from_points,
    read_plan,
    read_plan_blocks,
    read_task_result,
    read_task_tokens,
    write_plan,
)


def splittable(src: ShardSource, settings: Settings) -> bool:
    """Whether a shard may be cut into tasks: a plain local file or `hf://` shard (the scan also refuses a compressed
    one); other kinds of sources (folders of loose files) say so by being another type."""
    plain = type(src) is ShardSource and os.path.isfile(src.uri) or is_hub(src)
    return plain and not settings.dedup and not settings.flat


def _needs_scan(layout: Layout, src: ShardSource, settings: Settings) -> bool:
    return (
        splittable(src, settings)
        and src.size >= settings.task_bytes * 3 // 2
        and read_plan(layout, src.shard_id, source_fingerprint(src)) is None
    )


def scan_points(src: ShardSource, settings: Settings, progress: ScanProgress | None = None) -> tuple[int, ...]:
    """Where a shard is cut, by the full scan (`shard.scan`; `hf://`: `shard.hubsplit`, with its block hashes, the
    bytes read so far told to `progress`); none when it cannot be read now (converted whole, which reports it)."""
    if is_hub(src):
        return scan_hub(src, settings, progress)  # type: ignore[arg-type]
    try:
        with src.open() as fh:
            return choose_points(scan_tar(fh, src.size, settings), settings.task_bytes)
    except OSError:
        return ()


def probe_local(src: ShardSource, settings: Settings) -> tuple[int, ...] | None:
    """Guessed points of a local shard (`shard.probe`: milliseconds, checked by its tasks); None: scan it."""
    if is_hub(src):
        return None
    try:
        with src.open() as fh:
            return probe_points(fh, src.size, settings)
    except OSError:
        return ()


def scan_many(
    sources: list[ShardSource],
    settings: Settings,
    on_scan: Callable[[list[ShardSource]], None] | None = None,
    finer: dict[str, Settings] | None = None,
    progress: ScanProgress | None = None,
) -> dict[str, tuple[int, ...]]:
    """The points of each shard: guessed for local shards (`probe_local`, here), else by `scan_points` in a pool
    of the run's worker count (scans only read the inputs), announced first to `on_scan` (an `hf://` shard's scan
    reads all of it, the bytes read so far told to `progress`). Ctrl-C waits for the scans under way, then stops.
    `finer`: the settings (a smaller `task_bytes`) of the shards that end the run (`tail_settings`)."""
    finer = finer or {}
    found: dict[str, tuple[int, ...]] = {}
    for src in sources:
        points = probe_local(src, finer.get(src.shard_id, settings))
        if points is not None:
            found[src.shard_id] = points
    sources = [src for src in sources if src.shard_id not in found]
    if sources and on_scan is not None:
        on_scan(sources)
    each = [finer.get(src.shard_id, settings) for src in sources]
    workers = min(settings.workers or default_workers(), len(sources))
    if workers < 2:
        return found | {src.shard_id: scan_points(src, s, progress) for src, s in zip(sources, each)}
    ctx = mp_context()
    queue = ctx.Queue() if progress is not None else None
    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_scan_worker, initargs=(queue,))
    try:
        futures = [pool.submit(_scan_in_pool, src, s) for src, s in zip(sources, each)]
        pending = set(futures)
        while pending:
            _, pending = cf.wait(pending, timeout=0.2)
            if queue is not None and progress is not None:
                drain(queue, progress)
        points = {src.shard_id: fut.result() for src, fut in zip(sources, futures)}
        pool.shutdown(wait=True)  # a worker's last progress can still be in its queue's feeder: flushed as it exits
        if queue is not None and progress is not None:
            drain(queue, progress)
        return found | points
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if queue is not None:
            queue.close()


_scan_queue = None  # in a scan pool's worker: where its progress goes (`scan_many`)


def _init_scan_worker(queue) -> None:
    global _scan_queue
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver stops the scans
    _scan_queue = queue


def _scan_in_pool(src: ShardSource, settings: Settings) -> tuple[int, ...]:
    queue = _scan_queue
    return scan_points(src, settings, None if queue is None else lambda sid, nbytes: queue.put((sid, nbytes)))


def shard_ranges(
    layout: Layout, src: ShardSource, settings: Settings, scanned: dict[str, tuple[int, ...]] | None = None
) -> list[TaskRange] | None:
    """The tasks of a shard to convert, or None to convert it whole. A recorded plan for the same input is kept;
    `scanned`: points found by `scan_many` (else the shard is scanned here when it needs to be)."""
    sid = src.shard_id
    fingerprint = source_fingerprint(src)
    if splittable(src, settings):
        ranges = read_plan(layout, sid, fingerprint)
        if ranges is not None and len(ranges) == 1:
            return None  # a shard whose split did not hold (`TaskBook.finish`): converted whole
        if ranges is not None and with_blocks(src, read_plan_blocks(layout, sid)) is not None:
            return ranges
    layout.fs.remove_tree(layout.shard_tasks(sid))  # a plan for another input, or none
    if not splittable(src, settings) or src.size < settings.task_bytes * 3 // 2:
        return None
    points = scanned[sid] if scanned is not None and sid in scanned else scan_many([src], settings)[sid]
    if not points:
        return None
    forget_shard(layout, sid, settings)  # what an earlier conversion of it left, as a whole shard's run does
    write_plan(layout, sid, fingerprint, points, getattr(points, "blocks", None))
    return ranges_from_points(points)


@dataclass
class _Split:
    src: ShardSource
    ranges: list[TaskRange]
    results: dict[int, ShardResult] = field(default_factory=dict)
    returned: int = 0  # results of this run's tasks (a failed one may not know its index)
    submitted: int = 0


class TaskBook:
    """The driver's view of the split shards of a run: progress summed per shard, results collected per task."""

    def __init__(self, layout: Layout, settings: Settings):
        self.layout = layout
        self.settings = settings
        self.split: dict[str, _Split] = {}
        self._running: dict[str, dict[str, tuple[int, int]]] = {}  # shard -> task key -> (bytes, samples)
        self.redone: dict[str, str] = {}  # shard -> why its split did not hold (converted again whole)

    def add(self, src: ShardSource, ranges: list[TaskRange]) -> list[ShardTask]:
        """Record a split shard; its tasks not done yet."""
        entry = self.split[src.shard_id] = _Split(src, ranges)
        todo = []
        for part in ranges:
            done = read_task_result(self.layout, src.shard_id, part.index)
            if done is not None and done.get("ok"):
                entry.results[part.index] = ShardResult(**done)
            else:
                todo.append(part)
        entry.submitted = len(todo)
        return [ShardTask(src, str(self.layout.out), self.settings, part=part) for part in todo]

    # -- progress ---------------------------------------------------------------------------------

    def seed(self, progress: ProgressCb) -> None:
        """Report what earlier runs did of the split shards (their done tasks)."""
        for sid, entry in self.split.items():
            if entry.results:
                progress(sid, *self._done_counts(entry))

    def _done_counts(self, entry: _Split) -> tuple[int, int]:
        return sum(r.bytes_in for r in entry.results.values() if r.ok), sum(
            r.samples for r in entry.results.values() if r.ok
        )

    def progress(self, progress: ProgressCb) -> ProgressCb:
        """The executor's progress callback: a task's report (`shard<US>index`) becomes its shard's total."""

        def report(key: str, nbytes: int, samples: int) -> None:
            sid, sep, index = key.partition(TASK_SEP)
            entry = self.split.get(sid)
            if not sep or entry is None:
                progress(key, nbytes, samples)
                return
            if int(index) in entry.results:
                return  # a late report of a finished task
            running = self._running.setdefault(sid, {})
            running[index] = (nbytes, samples)
            done_bytes, done_samples = self._done_counts(entry)
            progress(
                sid,
                done_bytes + sum(b for b, _ in running.values()),
                done_samples + sum(s for _, s in running.values()),
            )

        return report

    # -- results ----------------------------------------------------------------------------------

    def ready(self) -> list[str]:
        """Split shards whose tasks were all done by earlier runs: to be put together now."""
        return [sid for sid, e in self.split.items() if e.submitted == 0]

    def settle(self, result: ShardResult) -> ShardResult | ShardTask | None:
        """A task's result: None while the shard has tasks out, then the shard's (put together, or failed), or the
        task that converts it whole when its split did not hold (`finish`)."""
        entry = self.split.get(result.shard_id)
        if entry is None or result.part is None and result.ok:
            return result  # a whole shard
        entry.returned += 1
        if result.ok:
            entry.results[result.part] = result
        else:
            entry.results.setdefault(-1 - entry.returned, result)  # failures by arrival, out of the index range
        self._running.get(result.shard_id, {}).pop(str(result.part), None)
        if entry.returned < entry.submitted:
            return None
        return self.finish(result.shard_id)

    def finish(self, sid: str) -> ShardResult | ShardTask:
        entry = self.split[sid]
        failed = [r for r in entry.results.values() if not r.ok]
        if failed:
            return replace(failed[0], part=None)
        why = split_fails(self.layout, sid, entry.ranges, entry.results)
        if why is not None:
            self.redone[sid] = why
            return self.redo_whole(entry)
        try:
            return assemble(self.layout, entry.src, self.settings, entry.ranges, entry.results)
        except OSError as exc:
            forget_shard(self.layout, sid, self.settings)
            self.layout.fs.remove_tree(self.layout.shard_tasks(sid))  # redone whole next run
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            return ShardResult(sid, ok=False, failure=f"{type(exc).__name__}: {exc.strerror or exc}{where}")

    def redo_whole(self, entry: _Split) -> ShardTask:
        """Drop the tasks of a shard whose split did not hold and record it as one range (converted whole, also by
        later runs); the task that converts it whole."""
        sid, layout = entry.src.shard_id, self.layout
        forget_shard(layout, sid, self.settings)
        layout.fs.remove_tree(layout.shard_tasks(sid))
        write_plan(layout, sid, source_fingerprint(entry.src), ())
        del self.split[sid]
        self._running.pop(sid, None)
        return ShardTask(entry.src, str(layout.out), self.settings)


def split_fails(layout: Layout, sid: str, ranges: list[TaskRange], results: dict[int, ShardResult]) -> str | None:
    """Why the done tasks of a shard do not add up to its whole conversion (None: they do): a task whose range
    end was no boundary (`ShardResult.boundary`), or a name token met by two tasks (the whole shard decides a
    duplicate, a late partner or a name clash within itself; tasks would each keep theirs)."""
    seen: set[bytes] = set()
    for part in ranges:
        result = results[part.index]
        if result.boundary is not None:
            return f"task {part.index}: {result.boundary}"
        tokens = read_task_tokens(layout, sid, part.index)
        if tokens is None:
            return f"task {part.index} has no name tokens on record"
        if not seen.isdisjoint(tokens):
            return f"a member name of task {part.index} is also in an earlier task"
        seen |= tokens
    return None


#: How much smaller the tasks of the shards that end a run are (`tail_settings`).
TAIL_DIVISOR = 4


def tail_settings(
    todo: list[ShardSource], settings: Settings, workers: int, whole: set[str] | frozenset[str] = frozenset()
) -> dict[str, Settings]:
    """The settings, with tasks of `task_bytes / TAIL_DIVISOR`, of the shards that end the run.

    Largest first leaves the end of a run to its smallest tasks; when those are about `task_bytes` each, the
    workers finish up to a task apart (`benchmarks/makespan.py`: tasks of 1 GB end 8 % after an even split of the
    bytes on 64 workers, 13 % on 200). So the smallest splittable shards, as many as add up to at most `workers`
    tasks of `task_bytes` (about the run's last round), are cut 4 times finer: 2 % on both. No change with one
    worker, nor for a shard too small to be split at the finer size. `hf://` shards keep `task_bytes`: splitting
    one reads it twice (the scan, then the tasks' ranges), which a few % of makespan does not pay for."""
    if workers < 2:
        return {}
    finer = replace(settings, task_bytes=max(1, settings.task_bytes // TAIL_DIVISOR))
    budget, total, chosen = workers * settings.task_bytes, 0, {}
    candidates = [src for src in todo if src.shard_id not in whole and splittable(src, settings) and not is_hub(src)]
    for src in sorted(candidates, key=lambda s: (s.size, natural_key(s.shard_id))):
        if total + src.size > budget:
            break
        chosen[src.shard_id] = finer
        total += src.size
    return chosen


def plan_tasks(
    layout: Layout,
    todo: list[ShardSource],
    settings: Settings,
    on_scan: Callable[[list[ShardSource]], None] | None = None,
    on_scan_progress: ScanProgress | None = None,
) -> tuple[list[ShardTask], TaskBook]:
    """The run's tasks, largest first when a shard is split (ties in shard order), and the book of its split shards;
    `on_scan` hears of the shards read whole to find their points, before they are, `on_scan_progress` of the
    bytes each `hf://` one has read so far."""
    book = TaskBook(layout, settings)
    sized: list[tuple[int, int, ShardTask]] = []
    todo = sorted(todo, key=lambda s: natural_key(s.shard_id))
    workers = settings.workers or default_workers()
    whole = hub_kept_whole(layout, todo, workers)
    finer = tail_settings(todo, settings, workers, whole)
    scan = [s for s in todo if _needs_scan(layout, s, finer.get(s.shard_id, settings)) and s.shard_id not in whole]
    scanned = scan_many(scan, settings, on_scan, finer, on_scan_progress)
    for order, src in enumerate(todo):
        own = finer.get(src.shard_id, settings)
        ranges = None if src.shard_id in whole else shard_ranges(layout, src, own, scanned)
        if ranges is None:
            sized.append((src.size, order, ShardTask(src, str(layout.out), settings)))
            continue
        for task in book.add(with_blocks(src, read_plan_blocks(layout, src.shard_id)) or src, ranges):
            sized.append((task.part.length(src.size), order, task))
    # Largest first once a shard is split. Else shard order, as before tasks: with whole shards only, largest first
    # is no better overall (benchmarks/makespan.py), and with one worker the merge streams each shard in turn.
    if book.split and settings.workers != 1:
        sized.sort(key=lambda t: (-t[0], t[1]))
    return [task for _, _, task in sized], book


def clean_task_leftovers(layout: Layout) -> None:
    """Unfinished tasks' staging; the task state of shards that are complete or were being put together (a shard
    cut short while its tasks were being moved together is redone whole: `clean_leftovers` took its files back)."""
    fs = layout.fs
    try:
        sids = sorted(p.name for p in layout.tasks_dir.iterdir() if not p.name.startswith("."))
    except FileNotFoundError:
        return
    for sid in sids:
        if layout.record(sid).exists() or layout.task_assembling(sid).exists():
            fs.remove_tree(layout.shard_tasks(sid))
            continue
        for path in sorted(layout.shard_tasks(sid).glob("staging-*")):
            forget_task_files(fs, layout.task_files(sid), sid, path)  # its files in the shared folder first
            fs.remove_tree(path)


# -- putting a shard together -----------------------------------------------------------------------


def assemble(
    layout: Layout, src: ShardSource, settings: Settings, ranges: list[TaskRange], results: dict[int, ShardResult]
) -> ShardResult:
    """Put the done tasks of a shard together and commit it as a whole shard is committed; record last."""
    sid, fs = src.shard_id, layout.fs
    staging = layout.staging(sid)
    fs.remove_tree(staging)
    staging.mkdir(parents=True)
    dones = [layout.task_done(sid, part.index) for part in ranges]
    _concat_parts([d / TASK_PART for d in dones], layout.staged_part(sid), settings)
    with open(layout.staged_rejects(sid), "wb") as out:
        for done in dones:
            with open(done / "rejects.jsonl", "rb") as fh:
                shutil.copyfileobj(fh, out)
    fs.write_atomic(layout.task_assembling(sid), b"")
    move_task_files(layout, sid)
    crash_point("assemble", sid)
    ShardConverter(src, layout, settings).commit()
    combined = _combine(src, [results[part.index] for part in ranges])
    sync_filesystem(layout.state)  # the record must never reach the disk before the files it describes
    crash_point("committed", sid)
    write_record(
        layout,
        ShardRecord(
            shard=sid,
            source=source_fingerprint(src),
            settings=settings.output_fingerprint(),
            samples=combined.samples,
            rejects=combined.rejects,
            notes=combined.notes,
            error=combined.error,
            published=not settings.flat,
        ),
    )
    crash_point("recorded", sid)
    fs.remove_tree(layout.shard_tasks(sid))
    return combined


def _sum(dicts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = total.get(k, 0) + v
    return dict(sorted(total.items()))


def _combine(src: ShardSource, parts: list[ShardResult]) -> ShardResult:
    errors = [r.error for r in parts if r.error]
    return ShardResult(
        shard_id=src.shard_id,
        ok=True,
        samples=sum(r.samples for r in parts),
        rejects=_sum([r.rejects for r in parts]),
        notes=_sum([r.notes for r in parts]),
        bytes_in=src.size,
        bytes_out=sum(r.bytes_out for r in parts),
        seconds=sum(r.seconds for r in parts),
        error=errors[0] if errors else None,
    )


def _concat_parts(paths: list[Path], dst: Path, settings: Settings) -> None:
    """The tasks' parts (Arrow IPC files) as one parquet, in the row batches a whole-shard `PartWriter` writes
    (`batch_rows` each)."""
    schema = part_schema(settings)
    # zero-copy reads of the mapped files; combine_chunks copies the rows out before the maps are let go
    tables = [pa.ipc.open_file(pa.memory_map(str(path))).read_all().cast(schema) for path in paths]
    table = pa.concat_tables(tables).combine_chunks()
    del tables
    writer = parquet_writer(dst, schema, "zstd")
    try:
        for batch in table.to_batches(max_chunksize=settings.batch_rows):
            writer.write_batch(batch)
    finally:
        writer.close()


__all__ = ["TaskBook", "assemble", "clean_task_leftovers", "plan_tasks", "shard_ranges", "splittable"]
