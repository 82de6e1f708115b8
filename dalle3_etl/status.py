"""`dalle3-etl status OUT`: which shards are done, damaged, failed or pending, with counts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from dalle3_etl.sources import natural_key
from dalle3_etl.state import Layout, all_records


def shard_states(out: Path) -> dict[str, dict]:
    layout = Layout(out)
    records = all_records(layout)
    states: dict[str, dict] = {}
    for sid, rec in records.items():
        states[sid] = {"state": "damaged" if rec.get("error") else "done", "samples": rec.get("samples", 0),
                       "rejects": sum(rec.get("rejects", {}).values()), "detail": rec.get("error") or ""}
    failed_dir = layout.state / "failed"
    if failed_dir.is_dir():
        for path in failed_dir.glob("*.json"):
            if path.stem not in states:
                info = orjson.loads(path.read_bytes())
                states[path.stem] = {"state": "failed", "samples": 0, "rejects": 0, "detail": info.get("failure") or ""}
    seen_dir = layout.state / "seen"
    if seen_dir.is_dir():
        for path in seen_dir.iterdir():
            states.setdefault(path.name, {"state": "pending", "samples": 0, "rejects": 0, "detail": ""})
    return dict(sorted(states.items(), key=lambda kv: natural_key(kv[0])))


def print_status(out: Path, console: Console | None = None) -> None:
    console = console or Console()
    states = shard_states(out)
    table = Table(title=f"dalle3-etl status: {out}", title_justify="left")
    for col, justify in (("shard", "left"), ("state", "left"), ("samples", "right"), ("rejects", "right"), ("detail", "left")):
        table.add_column(col, justify=justify)
    for sid, st in states.items():
        color = {"done": "green", "damaged": "yellow", "failed": "red", "pending": "cyan"}[st["state"]]
        table.add_row(sid, f"[{color}]{st['state']}[/{color}]", f"{st['samples']:,}", f"{st['rejects']:,}", st["detail"])
    console.print(table)
    counts = Counter(st["state"] for st in states.values())
    console.print(
        f"done {counts['done']}, damaged {counts['damaged']}, failed {counts['failed']}, pending {counts['pending']}; "
        f"{sum(st['samples'] for st in states.values()):,} samples",
        highlight=False,
    )
