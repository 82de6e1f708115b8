"""What a run does with each input shard (resume lives here).

A shard is complete when it has a completion record (written last, after its files):

- complete, input unchanged (same path, size, mtime): skipped ("Resuming: N shard(s) already complete");
- complete, input changed: redone;
- complete but *damaged* (its tar could not be read to the end; the samples before the damage are
  in the dataset): skipped like a complete shard, and reported; `--retry-failed` reads it again;
- no record (never converted, interrupted, or *failed*: nothing was committed): redone from scratch,
  after whatever it left behind is removed;
- with `--retry-failed`, only failed and damaged shards (and changed inputs) are redone; shards never
  converted are left for a plain run and reported.

Shards completed by earlier runs stay in the dataset even when a later run does not name them:
OUT grows as shards are added.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from dalle3_etl.settings import Settings
from dalle3_etl.shard.convert import source_fingerprint
from dalle3_etl.sources.base import ShardSource
from dalle3_etl.store.layout import Layout, StateError
from dalle3_etl.store.records import read_record


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
            out.append(
                f"{len(self.damaged)} of them damaged in an earlier run (kept up to the damage): "
                f"{', '.join(self.damaged)}; add --retry-failed to read them again."
            )
        if self.deferred:
            out.append(
                f"--retry-failed: {len(self.deferred)} shard(s) never converted are left for a plain run: "
                f"{', '.join(self.deferred)}."
            )
        return out


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


def refuse_foreign_folders(layout: Layout, settings: Settings, plan: Plan) -> None:
    """A shard's output folder `OUT/data/<shard>` that the user made (not the tool) is never written into
    nor removed: refuse before any work, naming it."""
    if settings.flat or not (settings.images or settings.captions):
        return
    taken = [
        src
        for src in plan.todo
        if os.path.lexists(layout.shard_data(src.shard_id)) and not layout.owns_shard_data(src.shard_id)
    ]
    if taken:
        names = ", ".join(str(layout.shard_data(src.shard_id)) for src in taken[:5])
        more = f" and {len(taken) - 5} more" if len(taken) > 5 else ""
        raise StateError(
            f"{names}{more} already exist(s) and were not written by dalle3-etl (same name as the "
            f"shard{'s' if len(taken) > 1 else ''} to convert); move or rename "
            f"{'them' if len(taken) > 1 else 'it'}: nothing was converted or removed"
        )


__all__ = ["Plan", "plan_run", "incomplete_shards", "refuse_foreign_folders"]
