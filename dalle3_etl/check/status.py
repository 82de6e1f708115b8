"""`dalle3-etl status OUT`: which shards are done, damaged, failed or pending, with counts.

done: complete. damaged: complete up to a read error (the samples before it are in the dataset).
failed: nothing committed last time (output I/O error, worker died); the next run redoes it.
pending: a run was given it and did not finish it (interrupted, killed, or left for a plain run by
--retry-failed); the next run converts it.
Only shards some run was given are known here; status cannot see inputs never passed to convert.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from dalle3_etl.check.webshart import changed_tars
from dalle3_etl.run.dedup import read_dedup_counts
from dalle3_etl.safetext import safe
from dalle3_etl.shard.shape import FILTERS, filtered_notes
from dalle3_etl.sources.base import natural_key
from dalle3_etl.store.layout import Layout
from dalle3_etl.store.locks import lock_holder
from dalle3_etl.store.manifest import pinned_parquet
from dalle3_etl.store.records import all_records
from dalle3_etl.store.tasks import tasks_done


def shard_states(out: Path) -> dict[str, dict]:
    layout = Layout(out)
    records = all_records(layout)
    dedup = read_dedup_counts(layout)  # --dedup: what the merge decided (records keep the conversion's counts)
    states: dict[str, dict] = {}
    for sid, rec in records.items():
        dups = dedup.get(sid, {})
        states[sid] = {
            "state": "damaged" if rec.damaged else "done",
            "samples": rec.samples - dups.get("dropped", 0),
            "rejects": sum(rec.rejects.values()) + dups.get("duplicates", 0),
            "detail": rec.error or "",
        }
        if dups:
            states[sid]["duplicates"] = dups.get("duplicates", 0)
    for sid, why in changed_tars(layout).items():  # --webshart: the index's offsets no longer hold
        states[sid].update(state="tar changed", detail=why)
    for sid in layout.failed_ids():
        if sid not in states:
            info = orjson.loads(layout.failed(sid).read_bytes())
            states[sid] = {"state": "failed", "samples": 0, "rejects": 0, "detail": info.get("failure") or ""}
    for sid in layout.seen_ids():
        states.setdefault(sid, {"state": "pending", "samples": 0, "rejects": 0, "detail": ""})
        parts = tasks_done(layout, sid) if sid not in records else None
        if parts is not None:  # a split shard partly done (the next run redoes only its unfinished parts)
            states[sid]["detail"] = "; ".join(
                filter(None, (f"{parts[0]} of {parts[1]} parts done", states[sid]["detail"]))
            )
    return dict(sorted(states.items(), key=lambda kv: natural_key(kv[0])))


def print_status(out: Path, console: Console | None = None) -> None:
    console = console or Console()
    states = shard_states(out)
    table = Table(title=safe(f"dalle3-etl status: {out}"), title_justify="left")
    for col, justify in (
        ("shard", "left"),
        ("state", "left"),
        ("samples", "right"),
        ("rejects", "right"),
        ("detail", "left"),
    ):
        table.add_column(col, justify=justify)
    for sid, st in states.items():
        color = {"done": "green", "damaged": "yellow", "failed": "red", "pending": "cyan"}.get(st["state"], "red")
        table.add_row(
            safe(sid), Text(st["state"], style=color), f"{st['samples']:,}", f"{st['rejects']:,}", safe(st["detail"])
        )
    console.print(table)
    counts = Counter(st["state"] for st in states.values())
    samples = sum(st["samples"] for st in states.values())
    console.print(
        f"done {counts['done']}, damaged {counts['damaged']}, failed {counts['failed']}, pending {counts['pending']}; "
        f"{samples:,} samples",
        highlight=False,
    )
    filtered = filtered_counts(Path(out))
    if filtered:
        shown = ", ".join(f"{name} {count:,}" for name, count in filtered.items())
        console.print(safe(f"filtered: {sum(filtered.values()):,} samples ({shown})"))
    duplicates = sum(st.get("duplicates", 0) for st in states.values())
    if duplicates:
        console.print(f"{duplicates:,} duplicates left out by --dedup (counted in rejects).", highlight=False)
    for line in _dataset_lines(Path(out), samples):
        console.print(safe(line))


def filtered_counts(out: Path) -> dict[str, int]:
    """Samples left out by each filter (--min-side...), over the completed shards, from their records' notes."""
    total: Counter[str] = Counter()
    for rec in all_records(Layout(out)).values():
        total.update(filtered_notes(rec.notes))
    return {name: total[name] for name in FILTERS if total[name]}


def _dataset_lines(out: Path, samples: int) -> list[str]:
    layout = Layout(out)
    lines = []
    holder = lock_holder(layout)
    if holder is not None:
        lines.append(f"A convert run is in progress (lock held by {holder}).")
    parquet = pinned_parquet(layout)
    if parquet.exists():
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(parquet).metadata.num_rows
        newest = max((layout.record(sid).stat().st_mtime_ns for sid in layout.record_ids()), default=0)
        fresh = rows == samples and parquet.stat().st_mtime_ns >= newest  # merged after the last shard completed
        state = "up to date" if fresh else "out of date: run convert again to merge"
        lines.append(f"{parquet.name}: {rows:,} rows ({state}).")
    else:
        lines.append(f"{parquet.name}: not written yet (run convert again to finish).")
    return lines
