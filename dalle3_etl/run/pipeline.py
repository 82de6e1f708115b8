"""The driver of `convert`: plan which shards to (re)do, run them, merge, write the SimpleTuner config.

Resume lives here. A shard is complete when it has a completion record (written last, after its
files). What a run does with each input shard:

- complete, input unchanged (same path, size, mtime): skipped ("Resuming: N shard(s) already complete");
- complete, input changed: redone;
- complete but *damaged* (its tar could not be read to the end; the samples before the damage are
  in the dataset): skipped like a complete shard, and reported; `--retry-failed` reads it again;
- no record (never converted, interrupted, or *failed*: nothing was committed): redone from scratch,
  after whatever it left behind is removed;
- with `--retry-failed`, only failed and damaged shards (and changed inputs) are redone; shards never
  converted are left for a plain run and reported.

Shards completed by earlier runs stay in the dataset even when a later run does not name them:
OUT grows as shards are added. Settings that change the output are pinned in the manifest; a run
with other settings is refused rather than mixing two settings in one dataset (`--restart` starts
over). The exit code is 1 when, after the run, some input shard is failed, damaged or not converted.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson

from dalle3_etl.executors.base import ShardTask
from dalle3_etl.executors.choose import make_executor
from dalle3_etl.executors.pool import default_workers
from dalle3_etl.run.merge import StreamingMerge, merge
from dalle3_etl.settings import Settings
from dalle3_etl.shard.commit import forget_shard
from dalle3_etl.shard.convert import ShardResult, source_fingerprint
from dalle3_etl.run.entry import write_dataloader_config
from dalle3_etl.sources.base import ShardSource, natural_key
from dalle3_etl.store.crash import crash_point
from dalle3_etl.store.layout import TMP_GLOB, Layout, StateError
from dalle3_etl.store.locks import RunLock
from dalle3_etl.store.manifest import pinned_settings, read_manifest, settings_differences, write_manifest
from dalle3_etl.store.records import all_records, read_record

#: How the user sets each output-changing setting (for the refusal message).
SETTING_FLAGS = {
    "caption_field": "--caption-field", "caption_fallbacks": "--caption-fallbacks", "fields": "--fields",
    "images": "--images/--no-images", "captions": "--captions/--no-captions", "flat": "--flat/--subfolders",
    "max_json_bytes": "--max-json-bytes",
}


@dataclass
class Plan:
    todo: list[ShardSource]
    skipped: list[str]  # complete and unchanged (damaged ones included)
    why: dict[str, str]  # shard id -> why it is (re)done
    damaged: list[str] = field(default_factory=list)  # skipped, but complete only up to a read error
    deferred: list[str] = field(default_factory=list)  # not converted yet, left out by --retry-failed

    def notices(self) -> list[str]:
        """What the user should know about the shards this run does not convert."""
        out = []
        if self.damaged:
            out.append(f"{len(self.damaged)} of them damaged in an earlier run (kept up to the damage): "
                       f"{', '.join(self.damaged)}; add --retry-failed to read them again.")
        if self.deferred:
            out.append(f"--retry-failed: {len(self.deferred)} shard(s) never converted are left for a plain run: "
                       f"{', '.join(self.deferred)}.")
        return out


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
        if not earlier:
            return []
        return [f"{len(earlier)} input shard(s) incomplete from earlier runs: "
                + ", ".join(f"{sid} ({state})" for sid, state in earlier.items())
                + ". See `dalle3-etl status`; --retry-failed redoes failed and damaged shards."]


class Reporter:
    """What the driver tells the user; `report.RichReporter` draws it. This base class stays silent."""

    def start(self, plan: Plan, total_bytes: int) -> None: ...
    def progress(self, shard_id: str, nbytes: int, samples: int) -> None: ...
    def shard_done(self, result: ShardResult) -> None: ...
    def merging(self) -> None: ...
    def finish(self, summary: RunSummary) -> None: ...


def plan_run(layout: Layout, sources: list[ShardSource], *, retry_failed: bool) -> Plan:
    plan = Plan([], [], {})
    for src in sources:
        sid = src.shard_id
        record = read_record(layout, sid)
        failed_before = layout.failed(sid).exists()
        damaged = record is not None and record.damaged
        if record is not None and record.source != source_fingerprint(src):
            plan.todo.append(src)
            plan.why[sid] = "input changed since it was converted"
        elif record is None and failed_before:
            plan.todo.append(src)
            plan.why[sid] = "failed last time"
        elif damaged and retry_failed:
            plan.todo.append(src)
            plan.why[sid] = "damaged last time"
        elif record is None and retry_failed:
            plan.deferred.append(sid)
        elif record is None:
            plan.todo.append(src)
            plan.why[sid] = "not converted yet"
        else:
            plan.skipped.append(sid)
            if damaged:
                plan.damaged.append(sid)
    return plan


def incomplete_shards(layout: Layout, sources: list[ShardSource]) -> dict[str, str]:
    """Input shards that are not complete and clean in OUT now."""
    out = {}
    for src in sources:
        record = read_record(layout, src.shard_id)
        if record is None:
            out[src.shard_id] = "failed" if layout.failed(src.shard_id).exists() else "not converted"
        elif record.damaged:
            out[src.shard_id] = "damaged"
    return out


def clean_leftovers(layout: Layout, settings: Settings) -> None:
    """Remove what an interrupted run left: staging, temporaries, output of shards without a record.

    Only the tool's own names: temporaries of its own files at the top of OUT and in its state folder,
    and the files of shards it started (a part, staged files, or a claimed OUT/data/<shard>)."""
    fs = layout.fs
    for folder in layout.temporary_folders:
        for tmp in folder.glob(TMP_GLOB):
            fs.unlink(tmp)
    for tmp in layout.own_temporaries({settings.parquet_name}):
        fs.unlink(tmp)
    records = all_records(layout)
    for sid, rec in records.items():  # a --flat shard published just before a crash: its staged folder
        if rec.published:
            fs.remove_tree(layout.flat_files(sid))
    for sid in sorted(layout.known_ids() - set(records), key=natural_key):
        forget_shard(layout, sid, settings)  # reads a part still staged by a commit cut short
    fs.remove_tree(layout.staging_dir)
    fs.remove_tree(layout.trash)  # left by a --restart of an earlier version


def check_settings(layout: Layout, settings: Settings) -> None:
    manifest = read_manifest(layout)
    if manifest is None:
        return
    diffs = settings_differences(manifest.get("settings", {}), settings.output_fingerprint())
    if diffs:
        named = [f"{line}  ({SETTING_FLAGS[line.split(':')[0]]})" if line.split(":")[0] in SETTING_FLAGS else line
                 for line in diffs]
        raise StateError(
            f"{layout.out} was converted with other settings that change the output:\n  - "
            + "\n  - ".join(named)
            + "\nRun again with the original settings to resume, or add --restart to start over "
            "(this deletes the converted output in that directory)."
        )


def restart(layout: Layout, settings: Settings) -> None:
    """Delete the previous output, and only the tool's: crash-safe and idempotent.

    Every record goes first (each shard becomes incomplete), then each shard's files as its part lists
    them (under the settings the output was made with), then the tool's files at the top of OUT and its
    state, the manifest last, so a run killed here is still refused until `--restart` has finished.
    What a user put in OUT or OUT/data (their images, notes, SimpleTuner's caches) stays."""
    fs = layout.fs
    old = pinned_settings(layout)
    made_with = settings
    if old:  # which files a row stands for, as that output wrote them
        made_with = replace(settings, flat=bool(old.get("flat", settings.flat)),
                            images=bool(old.get("images", settings.images)),
                            captions=bool(old.get("captions", settings.captions)))
    ids = sorted(layout.known_ids(), key=natural_key)
    owned = {sid for sid in ids if layout.owns_shard_data(sid)}
    for sid in ids:
        if sid in owned and not layout.claim(sid).exists():  # an output written before claims existed
            fs.write_atomic(layout.claim(sid), b"")
        fs.unlink(layout.record(sid))
    for sid in ids:
        forget_shard(layout, sid, made_with)
        crash_point("restart", sid)
    for path in layout.own_files({settings.parquet_name, old.get("parquet_name") or settings.parquet_name}):
        fs.unlink(path)
    # `owned` stays: a shard folder still holding a user's file is still the tool's folder
    for folder in (layout.parts_dir, layout.rejects_dir, layout.staging_dir, layout.flat_dir, layout.failed_dir,
                   layout.seen_dir, layout.records_dir, layout.trash):
        fs.remove_tree(folder)
    fs.unlink(layout.manifest)


def check_out_dir(out: Path) -> None:
    """Refuse an OUT that cannot become a dalle3-etl output, before any input is read or anything written:
    a file, a folder holding other things, a path under a file, a folder this process cannot write in.
    (What only creating it can tell, e.g. OUT in /proc, is refused by `run_convert` when it creates OUT.)"""
    out = Path(out).absolute()
    try:
        str(out).encode("utf-8")
    except UnicodeEncodeError:
        raise StateError(f"output {out} is not a valid UTF-8 path: the parquet writer and SimpleTuner's JSON "
                         "entry cannot name it; choose another folder name") from None
    try:
        if out.exists() and not out.is_dir():
            raise StateError(f"output {out} exists and is not a directory")
        if out.is_dir() and any(out.iterdir()) and not Layout(out).state.is_dir():
            raise StateError(f"output {out} is not empty and is not a dalle3-etl output; choose an empty or new directory")
        there = out  # OUT, or the nearest folder above it that exists: where OUT is created
        while not there.exists() and there != there.parent:
            there = there.parent
        if not there.is_dir():
            raise StateError(f"output {out} cannot be created: {there} is a file, not a directory")
        if not os.access(there, os.W_OK | os.X_OK):
            raise StateError(f"output {out} cannot be written: no write permission in {there} (or read-only filesystem)")
    except OSError as exc:
        raise StateError(f"output {out} cannot be used: {exc.strerror or exc}") from None


def _refuse_foreign_folders(layout: Layout, settings: Settings, plan: Plan) -> None:
    """A shard's output folder `OUT/data/<shard>` that the user made (not the tool) is never written into
    nor removed: refuse before any work, naming it."""
    if settings.flat or not (settings.images or settings.captions):
        return
    taken = [src for src in plan.todo
             if os.path.lexists(layout.shard_data(src.shard_id)) and not layout.owns_shard_data(src.shard_id)]
    if taken:
        names = ", ".join(str(layout.shard_data(src.shard_id)) for src in taken[:5])
        more = f" and {len(taken) - 5} more" if len(taken) > 5 else ""
        raise StateError(f"{names}{more} already exist(s) and were not written by dalle3-etl (same name as the "
                         f"shard{'s' if len(taken) > 1 else ''} to convert); move or rename "
                         f"{'them' if len(taken) > 1 else 'it'}: nothing was converted or removed")


def run_convert(
    sources: list[ShardSource], out: Path, settings: Settings, *, executor: str = "local",
    ray_address: str | None = None, restart_run: bool = False, retry_failed: bool = False,
    reporter: Reporter | None = None,
) -> RunSummary:
    reporter = reporter or Reporter()
    out = Path(out).absolute()
    check_out_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"output {out} cannot be created: {exc.strerror or exc}") from None
    layout = Layout(out)
    start = time.monotonic()
    with RunLock(layout.lock, layout.workers_lock):
        if restart_run:
            restart(layout, settings)
        check_settings(layout, settings)
        layout.ensure()
        write_manifest(layout, settings.output_fingerprint())
        clean_leftovers(layout, settings)
        plan = plan_run(layout, sources, retry_failed=retry_failed)
        _refuse_foreign_folders(layout, settings, plan)
        summary = RunSummary(out=out, plan=plan)
        for src in plan.todo:  # marks shard ids this output owns, so leftovers can be told from user files
            layout.seen(src.shard_id).touch()
        workers = settings.workers or default_workers()
        runner = make_executor(executor, workers, ray_address)
        tasks = [ShardTask(src, str(out), settings) for src in plan.todo]
        reporter.start(plan, sum(src.size for src in plan.todo))
        # parts are merged while later shards still convert; the end merges only what is left
        streaming = StreamingMerge(layout, settings, list(all_records(layout)), [src.shard_id for src in plan.todo])

        def on_result(result: ShardResult) -> None:
            failed = layout.failed(result.shard_id)
            if result.ok:
                layout.fs.unlink(failed)
            else:
                layout.fs.write_atomic(failed, orjson.dumps(result.to_json()))
            summary.results.append(result)
            reporter.shard_done(result)
            streaming.settle(result.shard_id)

        try:
            runner.run(tasks, reporter.progress, on_result)
            reporter.merging()
            done = sorted(all_records(layout), key=natural_key)
            summary.rows = merge(layout, done, settings, streaming)
            summary.parquet = layout.parquet(settings.parquet_name)
            summary.dataloader = write_dataloader_config(layout, settings)
        except KeyboardInterrupt:
            summary.interrupted = True
            summary.seconds = time.monotonic() - start
            reporter.finish(summary)
            raise
        finally:
            streaming.abort()  # after an error: drop the half-merged parquet (a no-op once merged)
        summary.incomplete = incomplete_shards(layout, sources)
    summary.results.sort(key=lambda r: natural_key(r.shard_id))
    summary.seconds = time.monotonic() - start
    reporter.finish(summary)
    return summary


__all__ = ["run_convert", "check_out_dir", "plan_run", "RunSummary", "Reporter", "Plan"]
