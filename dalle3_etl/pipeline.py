"""The driver of `convert`: plan which shards to (re)do, run them, merge, write the SimpleTuner config.

Resume lives here: a shard whose completion record matches its input fingerprint is skipped; every
other shard is redone from scratch. Settings that change the output are pinned in the manifest; a
run with other settings is refused rather than mixing two settings in one dataset.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import orjson

from dalle3_etl.executors import ShardTask, make_executor, default_workers
from dalle3_etl.merge import merge
from dalle3_etl.settings import Settings
from dalle3_etl.shard import ShardResult, forget_shard, source_fingerprint
from dalle3_etl.simpletuner import write_dataloader_config
from dalle3_etl.sources import ShardSource, natural_key
from dalle3_etl.state import (
    Layout, RunLock, StateError, all_records, read_manifest, read_record, remove_path,
    settings_differences, write_atomic, write_manifest,
)


@dataclass
class Plan:
    todo: list[ShardSource]
    skipped: list[str]  # complete and unchanged
    why: dict[str, str]  # shard id -> why it is (re)done


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

    @property
    def failed(self) -> list[ShardResult]:
        return [r for r in self.results if not r.ok or r.error]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.interrupted else 0


class Reporter:
    """What the driver tells the user; `report.RichReporter` draws it. This base class stays silent."""

    def start(self, plan: Plan, total_bytes: int) -> None: ...
    def progress(self, shard_id: str, nbytes: int, samples: int) -> None: ...
    def shard_done(self, result: ShardResult) -> None: ...
    def merging(self) -> None: ...
    def finish(self, summary: RunSummary) -> None: ...


def _failed_path(layout: Layout, shard_id: str) -> Path:
    return layout.state / "failed" / f"{shard_id}.json"


def plan_run(layout: Layout, sources: list[ShardSource], *, retry_failed: bool) -> Plan:
    todo, skipped, why = [], [], {}
    for src in sources:
        record = read_record(layout, src.shard_id)
        failed_before = _failed_path(layout, src.shard_id).exists()
        if record is not None and record.get("source") != source_fingerprint(src):
            todo.append(src)
            why[src.shard_id] = "input changed since it was converted"
        elif retry_failed:
            if failed_before or (record is not None and record.get("error")):
                todo.append(src)
                why[src.shard_id] = "failed last time"
            else:
                skipped.append(src.shard_id)
        elif record is None:
            todo.append(src)
            why[src.shard_id] = "failed last time" if failed_before else "not converted yet"
        else:
            skipped.append(src.shard_id)
    return Plan(todo, skipped, why)


def clean_leftovers(layout: Layout, settings: Settings) -> None:
    """Remove what an interrupted run left: staging, temporaries, output of shards without a record."""
    remove_path(layout.state / "staging")
    for folder in (layout.state / "shards", layout.out):
        for tmp in folder.glob(".*.tmp*"):
            tmp.unlink(missing_ok=True)
    done = set(all_records(layout))
    leftovers = set()
    for sub, suffix in (("parts", ".parquet"), ("rejects", ".jsonl")):
        for path in (layout.state / sub).glob(f"*{suffix}"):
            leftovers.add(path.name[: -len(suffix)])
    for path in (layout.state / "flat").iterdir():
        leftovers.add(path.name)
    if not settings.flat:
        for path in layout.data.iterdir():
            if path.is_dir() and (layout.state / "seen" / path.name).exists():
                leftovers.add(path.name)
    for sid in sorted(leftovers - done):
        forget_shard(layout, sid, settings)


def check_settings(layout: Layout, settings: Settings) -> None:
    manifest = read_manifest(layout)
    if manifest is None:
        return
    diffs = settings_differences(manifest.get("settings", {}), settings.output_fingerprint())
    if diffs:
        raise StateError(
            f"{layout.out} was converted with other settings that change the output:\n  - "
            + "\n  - ".join(diffs)
            + "\nRun again with the original settings to resume, or add --restart to start over "
            "(this deletes the converted output in that directory)."
        )


def restart(layout: Layout, settings: Settings) -> None:
    for name in ("shards", "parts", "rejects", "staging", "flat", "failed", "seen"):
        remove_path(layout.state / name)
    layout.manifest.unlink(missing_ok=True)
    remove_path(layout.data)
    for name in (settings.parquet_name, "rejects.jsonl", "multidatabackend.json"):
        (layout.out / name).unlink(missing_ok=True)


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise StateError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / ".dalle3-etl").is_dir():
        raise StateError(f"output {out} is not empty and is not a dalle3-etl output; choose an empty or new directory")


def run_convert(
    sources: list[ShardSource], out: Path, settings: Settings, *, executor: str = "local",
    ray_address: str | None = None, restart_run: bool = False, retry_failed: bool = False,
    reporter: Reporter | None = None,
) -> RunSummary:
    reporter = reporter or Reporter()
    out = Path(out).absolute()
    _check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    layout = Layout(out)
    start = time.monotonic()
    with RunLock(layout.lock):
        if restart_run:
            restart(layout, settings)
        check_settings(layout, settings)
        layout.ensure()
        (layout.state / "failed").mkdir(exist_ok=True)
        (layout.state / "seen").mkdir(exist_ok=True)
        write_manifest(layout, settings.output_fingerprint())
        clean_leftovers(layout, settings)
        plan = plan_run(layout, sources, retry_failed=retry_failed)
        summary = RunSummary(out=out, plan=plan)
        for src in plan.todo:  # marks shard ids this output owns, so leftovers can be told from user files
            (layout.state / "seen" / src.shard_id).touch()
        workers = settings.workers or default_workers()
        runner = make_executor(executor, workers, ray_address)
        tasks = [ShardTask(src, str(out), settings) for src in plan.todo]
        reporter.start(plan, sum(src.size for src in plan.todo))

        def on_result(result: ShardResult) -> None:
            failed = _failed_path(layout, result.shard_id)
            if result.ok:
                failed.unlink(missing_ok=True)
            else:
                write_atomic(failed, orjson.dumps(result.to_json()))
            summary.results.append(result)
            reporter.shard_done(result)

        try:
            runner.run(tasks, reporter.progress, on_result)
        except KeyboardInterrupt:
            summary.interrupted = True
            summary.seconds = time.monotonic() - start
            reporter.finish(summary)
            raise
        reporter.merging()
        done = sorted(all_records(layout), key=natural_key)
        summary.rows = merge(layout, done, settings)
        summary.parquet = out / settings.parquet_name
        summary.dataloader = write_dataloader_config(layout, settings)
    summary.results.sort(key=lambda r: natural_key(r.shard_id))
    summary.seconds = time.monotonic() - start
    reporter.finish(summary)
    return summary


__all__ = ["run_convert", "plan_run", "RunSummary", "Reporter", "Plan"]
