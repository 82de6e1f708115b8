"""The driver of `convert --dry-run`: every input shard decided by the executors, nothing written, one funnel.

Each shard runs as a task of the same executors as `convert` (`ShardTask(dry=True)`: `shard.dry.dry_run_shard`
in a worker), so what a shard keeps and rejects is what `convert` would decide. What a run decides across
shards at merge time is decided here, from each kept sample's `DryRow`, in shard order whatever order the
results come in (`CrossShardRule`: the `--flat` name claims of `run.flat`). OUT is only read: its settings
(a real run with other ones is refused, so is this) and which shards a real run would skip. The counts are
those of converting the inputs into an empty OUT.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dalle3_etl.executors.base import ShardTask
from dalle3_etl.executors.choose import make_executor
from dalle3_etl.executors.pool import default_workers
from dalle3_etl.run.dedup import KeyTable
from dalle3_etl.run.pipeline import Reporter
from dalle3_etl.run.plan import Plan, plan_run, refuse_foreign_folders
from dalle3_etl.run.preflight import check_out_dir, check_settings, refuse_unsafe_out
from dalle3_etl.run.webshart import check_inputs
from dalle3_etl.settings import Settings
from dalle3_etl.shard.convert import ShardResult
from dalle3_etl.shard.dry import DryResult, DryRow
from dalle3_etl.shard.rows import Reason
from dalle3_etl.shard.sinks import written_names
from dalle3_etl.sources.base import ShardSource, natural_key
from dalle3_etl.store.layout import Layout

#: Reject reasons the funnel shows on rows of their own (any other reason is a "rejected" row), and the
#: prefix of the notes that count filtered samples by filter (`filtered_<name>`).
FILTERED = "filtered"
DUPLICATE = "duplicate"
FILTER_NOTE_PREFIX = "filtered_"


class CrossShardRule(Protocol):
    """A decision a run takes across shards: fed every kept row in shard order, then member order."""

    def decide(self, shard_id: str, row: DryRow) -> str | None:
        """The reason the row is rejected, or None: it stays kept (and counts for the rows after it)."""


class FlatNames:
    """`--flat` (`run.flat.publish_flat`): the first shard in shard order keeps a name in OUT/data; a later row
    whose image or caption file is taken, as a file or a folder, or needs a folder where a file is, is a
    `name_clash`."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.files: set[str] = set()
        self.folders: set[str] = set()

    def decide(self, shard_id: str, row: DryRow) -> str | None:
        names = written_names(row.filename, self.settings.images, self.settings.captions)
        if any(self._taken(name) for name in names):
            return Reason.NAME_CLASH
        for name in names:
            self.files.add(name)
            parts = name.split("/")
            self.folders.update("/".join(parts[:depth]) for depth in range(1, len(parts)))
        return None

    def _taken(self, name: str) -> bool:
        if name in self.files or name in self.folders:
            return True
        parts = name.split("/")
        return any("/".join(parts[:depth]) in self.files for depth in range(1, len(parts)))


def cross_shard_rules(settings: Settings) -> list[CrossShardRule]:
    """The rules of a run with these settings, in the order the merge applies them. A dedup across shards
    goes here (its rule fed `DryRow.key`). Rules need the shards' `DryRow`s: `shard.dry.rows_needed` says
    when they are made, for the same settings."""
    rules: list[CrossShardRule] = []
    if settings.flat and (settings.images or settings.captions):
        rules.append(FlatNames(settings))
    if settings.dedup:
        rules.append(DedupKeys())
    return rules


class DedupKeys:
    """`--dedup` (`run.dedup.DedupMerger`): a kept row whose key an earlier row has (shard order, then member
    order) is a `duplicate`; a row without a key is kept. The same `KeyTable` as the merge."""

    def __init__(self) -> None:
        self.table = KeyTable()

    def decide(self, shard_id: str, row: DryRow) -> str | None:
        if row.key is None:
            return None
        return Reason.DUPLICATE if self.table.add_keys(row.key) else None


@dataclass
class Funnel:
    """What a conversion of the inputs would do: samples read, rejected by reason, kept; bytes; kept rows."""

    out: Path
    shards: int = 0
    bytes_in: int = 0
    kept: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    image_bytes: int = 0
    caption_bytes: int = 0
    sources: Counter[str] = field(default_factory=Counter)
    resolutions: Counter[str] = field(default_factory=Counter)
    failed: dict[str, str] = field(default_factory=dict)  # shard -> why (nothing of it counted)
    damaged: dict[str, str] = field(default_factory=dict)  # shard -> the damage (counted up to it)
    complete: int = 0  # input shards already complete in OUT: a real run skips them
    seconds: float = 0.0

    @property
    def read(self) -> int:
        """Samples read: kept or rejected (a reject line is a sample, or a member without its partner)."""
        return self.kept + sum(self.rejects.values()) - self.rejects.get(Reason.SHARD_UNREADABLE, 0)

    @property
    def bytes_out(self) -> int:
        return self.image_bytes + self.caption_bytes

    @property
    def filtered(self) -> dict[str, int]:
        """Filtered samples by filter (the writer's `filtered_<name>` notes)."""
        return {
            k[len(FILTER_NOTE_PREFIX) :]: n for k, n in sorted(self.notes.items()) if k.startswith(FILTER_NOTE_PREFIX)
        }

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.damaged else 0

    def add(self, result: ShardResult) -> None:
        if not result.ok:
            self.failed[result.shard_id] = result.failure or "failed"
            return
        if result.error:
            self.damaged[result.shard_id] = result.error
        self.kept += result.samples
        self.rejects.update(result.rejects)
        self.notes.update(result.notes)
        if isinstance(result, DryResult):
            self.image_bytes += result.image_bytes
            self.caption_bytes += result.caption_bytes
            self.sources.update(result.sources)
            self.resolutions.update(result.resolutions)

    def drop(self, row: DryRow, reason: str) -> None:
        """A kept row rejected by a rule across shards."""
        self.kept -= 1
        self.rejects[str(reason)] += 1
        self.image_bytes -= row.image_bytes
        self.caption_bytes -= row.caption_bytes
        for counter, value in ((self.sources, row.source), (self.resolutions, row.resolution)):
            counter[value] -= 1
            if not counter[value]:
                del counter[value]

    def to_json(self, top: int) -> dict[str, Any]:
        rejected = {r: n for r, n in sorted(self.rejects.items()) if r not in (FILTERED, DUPLICATE)}
        return {
            "dry_run": True,
            "out": str(self.out),
            "shards": {
                "input": self.shards,
                "failed": dict(self.failed),
                "damaged": dict(self.damaged),
                "complete_in_out": self.complete,
            },
            "input_bytes": self.bytes_in,
            "samples": {
                "read": self.read,
                "rejected": rejected,
                "filtered": self.rejects.get(FILTERED, 0),
                "filtered_by": self.filtered,
                "duplicates": self.rejects.get(DUPLICATE, 0),
                "kept": self.kept,
            },
            "notes": {k: n for k, n in sorted(self.notes.items()) if not k.startswith(FILTER_NOTE_PREFIX)},
            "bytes": {"images": self.image_bytes, "captions": self.caption_bytes, "total": self.bytes_out},
            "sources": dict(top_counts(self.sources, top)),
            "sources_distinct": len(self.sources),
            "resolutions": dict(top_counts(self.resolutions, top)),
            "resolutions_distinct": len(self.resolutions),
            "seconds": round(self.seconds, 3),
        }


def top_counts(counts: Counter[str], top: int) -> list[tuple[str, int]]:
    """The `top` largest counts, ties by value: the same list whatever order the shards came in."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], natural_key(kv[0])))[:top]


class _InShardOrder:
    """Feeds the rows of each result to the rules in shard order, holding results that come early."""

    def __init__(self, sources: list[ShardSource], rules: list[CrossShardRule], funnel: Funnel):
        self.order = sorted((src.shard_id for src in sources), key=natural_key)
        self.rules = rules
        self.funnel = funnel
        self.waiting: dict[str, list[DryRow]] = {}
        self.next = 0

    def settle(self, result: ShardResult) -> None:
        if not self.rules:
            return
        self.waiting[result.shard_id] = getattr(result, "rows", None) or []
        while self.next < len(self.order) and self.order[self.next] in self.waiting:
            shard_id = self.order[self.next]
            for row in self.waiting.pop(shard_id):
                for rule in self.rules:
                    reason = rule.decide(shard_id, row)
                    if reason is not None:
                        self.funnel.drop(row, reason)
                        break
            self.next += 1


class DryReporter(Reporter):
    """What the dry driver tells the user while shards are read (`Reporter`'s start, progress, shard_done),
    then `stopped` once every shard is in. This base class stays silent."""

    def stopped(self) -> None: ...


def dry_run(
    sources: list[ShardSource],
    out: Path,
    settings: Settings,
    *,
    executor: str = "local",
    ray_address: str | None = None,
    restart_run: bool = False,
    reporter: DryReporter | None = None,
) -> Funnel:
    """What `convert` with these settings would do with `sources` (into an empty OUT), without writing."""
    reporter = reporter or DryReporter()
    out = Path(out).absolute()
    if settings.webshart:  # what convert would refuse, a dry run refuses too (exit 2, the same line)
        check_inputs(sources, Layout(out), restart=restart_run)
    plan = _preflight(Layout(out), sources, settings, restart_run)
    start = time.monotonic()
    funnel = Funnel(out=out, shards=len(sources), bytes_in=sum(src.size for src in sources))
    funnel.complete = len(plan.skipped)
    ordered = _InShardOrder(sources, cross_shard_rules(settings), funnel)
    runner = make_executor(executor, settings.workers or default_workers(), ray_address)
    reporter.start(Plan(list(sources), [], {}), funnel.bytes_in)

    def on_result(result: ShardResult) -> None:
        funnel.add(result)
        ordered.settle(result)
        reporter.shard_done(result)

    try:
        runner.run([ShardTask(src, str(out), settings, dry=True) for src in sources], reporter.progress, on_result)
    finally:
        reporter.stopped()
    funnel.seconds = time.monotonic() - start
    return funnel


def _preflight(layout: Layout, sources: list[ShardSource], settings: Settings, restart_run: bool) -> Plan:
    """The refusals of `convert` that need no writing (OUT's kind, its settings, a user's folder in the way);
    then which shards a real run would skip (none with `--restart`)."""
    check_out_dir(layout.out, write=False)
    refuse_unsafe_out(layout, settings, restart_run=restart_run)
    if not restart_run:
        check_settings(layout, settings)
    plan = plan_run(layout, sources, retry_failed=False)
    if restart_run:
        plan = Plan(list(sources), [], {})
    refuse_foreign_folders(layout, settings, plan)
    return plan


__all__ = ["CrossShardRule", "DryReporter", "FlatNames", "Funnel", "cross_shard_rules", "dry_run"]
