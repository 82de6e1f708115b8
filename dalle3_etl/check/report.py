"""The report of `dalle3-etl verify`: each named check's result (`Check`, `VerifyReport`), as JSON or tables.

`CHECKS` names every check and what it holds; `verify` fills the report, `print_report` shows it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_EXAMPLES = 10

CHECKS: dict[str, str] = {
    "dataloader": "multidatabackend.json valid, paths absolute and existing",
    "parquet": "one readable parquet file with the entry's columns and at least one row",
    "missing_image": "every row's image is on disk",
    "duplicate_row": "at most one row per image",
    "image_without_row": "every image on disk has a row",
    "missing_caption_file": "every image has its <stem>.txt",
    "empty_caption_file": "no empty caption file",
    "multiline_caption_file": "no newline in a caption file",
    "empty_caption": "no null or empty caption in the parquet",
    "bad_size": "width and height positive",
    "shard_rows": "rows per shard = its completion record",
    "stray_file": "no temporary files or staging leftovers",
    "header_size": "width/height = image header (~100 rows spread out; --deep: every row)",
    "imagefolder": "metadata.jsonl: a line per row, same file, caption and size (--also imagefolder)",
    "train_size": "SimpleTuner keeps some rows at the entry's minimum_image_size",
    "webshart": "indexes match their unchanged tars: sizes, member headers, captions, one per tar (--webshart)",
}


@dataclass
class Check:
    code: str
    title: str
    status: str = "ok"  # ok | failed | skipped | warning (something to know that does not fail verify)
    count: int = 0
    examples: list[str] = field(default_factory=list)
    note: str = ""

    def fail(self, *examples: str, count: int | None = None) -> None:
        """Record problems: `count` of them (default: one per example), keeping the first examples."""
        count = len(examples) if count is None else count
        if count == 0:
            return
        self.status = "failed"
        self.count += count
        self.examples.extend(examples[: MAX_EXAMPLES - len(self.examples)])

    def warn(self, note: str, count: int = 0) -> None:
        """Not a problem of the output, but something the user should act on (verify still exits 0)."""
        if self.status == "ok":
            self.status = "warning"
            self.note = note
            self.count = count

    def skip(self, note: str) -> None:
        if self.status == "ok":
            self.status = "skipped"
            self.note = note

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.code,
            "title": self.title,
            "status": self.status,
            "count": self.count,
            "examples": self.examples,
            "note": self.note,
        }


@dataclass
class VerifyReport:
    out: Path
    deep: bool
    checks: dict[str, Check] = field(default_factory=lambda: {c: Check(c, t) for c, t in CHECKS.items()})
    counts: dict[str, int] = field(default_factory=Counter)
    running: str | None = None  # `host pid` of a convert run working on this output now

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks.values() if c.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "out": str(self.out),
            "deep": self.deep,
            "running": self.running,
            "counts": dict(self.counts),
            "problems": [c.code for c in self.failed],
            "checks": [c.to_json() for c in self.checks.values()],
        }


def print_report(report: VerifyReport, console) -> None:
    from rich.table import Table
    from rich.text import Text

    from dalle3_etl.safetext import safe

    table = Table(title=safe(f"dalle3-etl verify: {report.out}"), title_justify="left")
    table.add_column("check")
    table.add_column("what")
    table.add_column("result")
    table.add_column("count", justify="right")
    shown = {
        "ok": Text("ok", "green"),
        "failed": Text("FAILED", "red"),
        "skipped": Text("skipped", "dim"),
        "warning": Text("warning", "yellow"),
    }
    for check in report.checks.values():
        table.add_row(check.code, Text(check.title), shown[check.status], f"{check.count:,}" if check.count else "")
    console.print(table)
    for check in report.failed:
        console.print(Text.assemble((check.code, "red"), f": {check.count:,} problem(s)"))
        for example in check.examples:
            console.print(safe(f"  {example}"))
        if check.count > len(check.examples):
            console.print(f"  ... and {check.count - len(check.examples):,} more", highlight=False)
        if check.note:
            console.print(safe(f"  note: {check.note}"))
    for check in report.checks.values():
        if check.status in ("ok", "warning") and check.note:
            console.print(Text.assemble((check.code, "yellow"), safe(f": {check.note}")))
    counts = report.counts
    summary = (
        f"{counts.get('rows', 0):,} rows, {counts.get('images_on_disk', 0):,} images on disk, "
        f"{counts.get('caption_files', 0):,} caption files, {counts.get('shards', 0):,} shards"
    )
    if report.running:
        console.print(
            Text.assemble(
                ("note", "yellow"),
                safe(
                    f": a convert run is in progress on this output (lock "
                    f"held by {report.running}); checks may change when it "
                    "finishes."
                ),
            )
        )
    warned = [c.code for c in report.checks.values() if c.status == "warning"]
    if report.ok and warned:
        console.print(
            f"[yellow]OK, with warnings[/yellow]: the output is complete ({summary}); read the warning(s) above "
            f"before training: {', '.join(warned)}.",
            highlight=False,
        )
    elif report.ok:
        console.print(f"[green]OK[/green]: SimpleTuner can start on this output ({summary}).", highlight=False)
    else:
        console.print(f"[red]FAILED[/red]: {len(report.failed)} check(s) failed ({summary}).", highlight=False)


__all__ = ["CHECKS", "MAX_EXAMPLES", "Check", "VerifyReport", "print_report"]
