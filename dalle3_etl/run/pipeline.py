"""The driver of `convert`: prepare OUT, convert the planned shards, merge, write the SimpleTuner entry.

What each shard gets is decided in `plan`, whether the run may start in `preflight`, what earlier runs
left is taken back in `cleanup`; this module runs those steps in order under OUT's lock. The exit code
is 1 when, after the run, some input shard is failed, damaged or not converted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from dalle3_etl.executors.base import ShardTask
from dalle3_etl.executors.choose import make_executor
from dalle3_etl.executors.pool import default_workers
from dalle3_etl.run.cleanup import clean_leftovers, restart
from dalle3_etl.run.dedup import read_dedup_counts
from dalle3_etl.run.entry import entry_cache_generation, stale_caches, write_dataloader_config
from dalle3_etl.run.imagefolder import keep_imagefolder
from dalle3_etl.run.merge import StreamingMerge, merge
from dalle3_etl.run.plan import Plan, incomplete_shards, plan_run, refuse_foreign_folders
from dalle3_etl.run.preflight import check_out_dir, check_settings, refuse_unsafe_out
from dalle3_etl.run.tasks import clean_task_leftovers, plan_tasks
from dalle3_etl.run.webshart import IndexOutcome, check_inputs, remember_tars, write_indexes
from dalle3_etl.settings import Settings
from dalle3_etl.shard.convert import ShardResult
from dalle3_etl.sources.base import ShardSource, natural_key
from dalle3_etl.store.generation import bump_generation, settle_generation
from dalle3_etl.store.inplace import record_input_folder
from dalle3_etl.store.layout import Layout, StateError
from dalle3_etl.store.locks import RunLock
from dalle3_etl.store.manifest import write_manifest
from dalle3_etl.store.records import all_records


@dataclass
class RunSummary:
    out: Path
    plan: Plan
    results: list[ShardResult] = field(default_factory=list)
    rows: int = 0
    seconds: float = 0.0
    parquet: Path | None = None
    dataloader: Path | None = None
    interrupted: bool = False
    incomplete: dict[str, str] = field(default_factory=dict)  # input shard id -> failed / damaged / not converted
    duplicates: int | None = None  # --dedup: duplicate rejects in the whole output, as the merge decided
    webshart: IndexOutcome | None = None  # --webshart: the indexes written and the caches cleared
    redone_whole: dict[str, str] = field(default_factory=dict)  # split shard -> why its split did not hold
    stale_caches: list[Path] = field(default_factory=list)  # SimpleTuner's, of images this run changed (unused now)

    @property
    def failed(self) -> list[ShardResult]:
        return [r for r in self.results if not r.ok or r.error]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.incomplete or self.interrupted else 0

    def notices(self) -> list[str]:
        """Input shards left incomplete by earlier runs (this run's failures are reported one by one)."""
        now = {r.shard_id for r in self.failed}
        earlier = {sid: state for sid, state in self.incomplete.items() if sid not in now}
        lines = []
        if earlier:
            lines.append(
                f"{len(earlier)} input shard(s) incomplete from earlier runs: "
                + ", ".join(f"{sid} ({state})" for sid, state in earlier.items())
                + ". See `dalle3-etl status`; --retry-failed redoes failed and damaged shards."
            )
        if self.stale_caches:
            lines.append(
                "The entry names new SimpleTuner caches (images it may have cached, or the sizes, changed); these "
                "of the earlier entry are no longer read (SimpleTuner's files, left as they are; remove them when "
                "you like): " + ", ".join(str(p) for p in self.stale_caches)
            )
        if self.redone_whole:
            lines.append(
                f"{len(self.redone_whole)} shard(s) converted again whole, as the points they were cut at did not "
                "hold (the output is the whole shard's): "
                + "; ".join(f"{sid}: {why}" for sid, why in self.redone_whole.items())
            )
        return lines


class Reporter:
    """What the driver tells the user; `report.RichReporter` draws it. This base class stays silent."""

    def start(self, plan: Plan, total_bytes: int) -> None: ...
    def scanning(self, sources: list[ShardSource]) -> None: ...  # read whole before the run to find split points
    def scan_progress(self, shard_id: str, nbytes: int) -> None: ...  # bytes of an hf:// shard read by its scan
    def progress(self, shard_id: str, nbytes: int, samples: int) -> None: ...
    def shard_done(self, result: ShardResult) -> None: ...
    def merging(self) -> None: ...
    def finish(self, summary: RunSummary) -> None: ...


def run_convert(
    sources: list[ShardSource],
    out: Path,
    settings: Settings,
    *,
    executor: str = "local",
    ray_address: str | None = None,
    restart_run: bool = False,
    retry_failed: bool = False,
    reporter: Reporter | None = None,
) -> RunSummary:
    """Convert `sources` into OUT: plan, convert what is to (re)do, merge, write the SimpleTuner entry."""
    reporter = reporter or Reporter()
    out = Path(out).absolute()
    tars = check_inputs(sources, Layout(out), restart=restart_run) if settings.webshart else None  # before OUT exists
    if executor == "ray":  # a cluster nobody answers at: refused before OUT is made, pinned or marked
        from dalle3_etl.executors.ray import check_address

        check_address(ray_address)
    layout = _open_out(out)
    start = time.monotonic()
    with RunLock(layout.lock, layout.workers_lock):
        plan = _prepare(layout, sources, settings, restart_run=restart_run, retry_failed=retry_failed)
        if tars is not None:
            remember_tars(layout, tars, sources)
        summary = RunSummary(out=out, plan=plan)
        try:
            _convert_and_merge(layout, plan, settings, summary, reporter, executor, ray_address)
        except KeyboardInterrupt:
            summary.interrupted = True
            summary.seconds = time.monotonic() - start
            reporter.finish(summary)
            raise
        summary.incomplete = incomplete_shards(layout, sources)
    summary.results.sort(key=lambda r: natural_key(r.shard_id))
    summary.seconds = time.monotonic() - start
    reporter.finish(summary)
    return summary


def _open_out(out: Path) -> Layout:
    check_out_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"output {out} cannot be created: {exc.strerror or exc}") from None
    return Layout(out)


def _prepare(
    layout: Layout, sources: list[ShardSource], settings: Settings, *, restart_run: bool, retry_failed: bool
) -> Plan:
    """Under OUT's lock: settle the output's state, then decide what this run converts."""
    refuse_unsafe_out(layout, settings, restart_run=restart_run)
    if restart_run:
        restart(layout, settings)
    check_settings(layout, settings)
    layout.ensure()
    if settings.link == "none" and sources:  # where the images stay: entry, verify and the leftovers' cleanup
        record_input_folder(layout, min(s.uri for s in sources))
    write_manifest(layout, settings.output_fingerprint())
    clean_leftovers(layout, settings)
    clean_task_leftovers(layout)
    plan = plan_run(layout, sources, retry_failed=retry_failed)
    refuse_foreign_folders(layout, settings, plan)
    if any(layout.record(src.shard_id).exists() for src in plan.todo):  # complete shards converted again
        bump_generation(layout)  # before their files change: SimpleTuner's caches of them would lie
    for sid in [src.shard_id for src in plan.todo] + plan.deferred:  # the shards `status` knows were given
        layout.seen(sid).touch()
    return plan


def _convert_and_merge(
    layout: Layout,
    plan: Plan,
    settings: Settings,
    summary: RunSummary,
    reporter: Reporter,
    executor: str,
    ray_address: str | None,
) -> None:
    runner = make_executor(executor, settings.workers or default_workers(), ray_address)
    tasks, book = plan_tasks(layout, plan.todo, settings, reporter.scanning, reporter.scan_progress)  # largest first
    reporter.start(plan, sum(src.size for src in plan.todo))
    book.seed(reporter.progress)
    # parts are merged while later shards still convert; the end merges only what is left
    streaming = StreamingMerge(layout, settings, list(all_records(layout)), [src.shard_id for src in plan.todo])

    def settled(whole: ShardResult | ShardTask | None) -> list[ShardTask]:
        """What the book made of a result: a shard done (or failed), nothing yet, or a task to run."""
        if isinstance(whole, ShardTask):
            return [whole]  # its split did not hold: converted again whole
        if whole is not None:
            on_shard(whole)
        return []

    def on_result(result: ShardResult) -> list[ShardTask]:
        return settled(book.settle(result))  # None while a split shard has tasks out, then the shard's result

    def on_shard(result: ShardResult) -> None:
        failed = layout.failed(result.shard_id)
        if result.ok:
            layout.fs.unlink(failed)
        else:
            layout.fs.write_atomic(failed, orjson.dumps(result.to_json()))
        summary.results.append(result)
        reporter.shard_done(result)
        streaming.settle(result.shard_id)

    try:
        for sid in book.ready():  # tasks all done by earlier runs
            tasks[:0] = settled(book.finish(sid))
        runner.run(tasks, book.progress(reporter.progress), on_result)
        summary.redone_whole = dict(book.redone)
        reporter.merging()
        done = sorted(all_records(layout), key=natural_key)
        summary.rows = merge(layout, done, settings, streaming)
        if settings.dedup:
            summary.duplicates = sum(c["duplicates"] for sid, c in read_dedup_counts(layout).items() if sid in done)
        summary.parquet = layout.parquet(settings.parquet_name)
        if settings.webshart:
            summary.webshart = write_indexes(layout, settings, done)
        before = entry_cache_generation(layout)  # SimpleTuner's caches of the entry being replaced
        summary.dataloader = write_dataloader_config(layout, settings)
        summary.stale_caches = stale_caches(before, layout)
        settle_generation(layout)
        keep_imagefolder(layout, settings)
    finally:
        streaming.abort()  # after an error: drop the half-merged parquet (a no-op once merged)


__all__ = ["run_convert", "RunSummary", "Reporter"]
