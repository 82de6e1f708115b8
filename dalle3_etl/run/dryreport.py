"""What `convert --dry-run` shows: progress while the shards are read, then the funnel, as rich tables on a
terminal and plain text otherwise (`--json`: `Funnel.to_json`, printed by `cli`).

Sources, shard names and messages come from the inputs: they are printed through `safetext`.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from dalle3_etl.run.dry import DUPLICATE, FILTER_NOTE_PREFIX, FILTERED, DryReporter, Funnel, top_counts
from dalle3_etl.run.report import RichReporter
from dalle3_etl.safetext import human_bytes, plain, safe
from dalle3_etl.shard.rows import Reason

TITLE = "dalle3-etl convert --dry-run (nothing written)"


class RichDryReporter(RichReporter, DryReporter):
    """`RichReporter`'s progress bar (terminal) or progress lines, and its FAILED / DAMAGED lines."""

    def __init__(self, console: Console | None = None, quiet: bool = False):
        super().__init__(console, quiet, verb="Dry run: reading")

    def stopped(self) -> None:
        self._stop()


def funnel_rows(funnel: Funnel) -> list[tuple[str, str]]:
    """(what, how many) from the shards read to the samples kept, then the bytes; indented by step."""
    rejects = funnel.rejects
    rows = [("input shards", f"{funnel.shards:,} ({human_bytes(funnel.bytes_in)})")]
    if funnel.complete:
        rows.append(("  already complete in OUT (a real run skips them)", f"{funnel.complete:,}"))
    rows.append(("samples read", f"{funnel.read:,}"))
    for reason, n in sorted(rejects.items()):
        if reason not in (FILTERED, DUPLICATE) and n:
            label = "damage (not a sample)" if reason == Reason.SHARD_UNREADABLE else "rejected"
            rows.append((f"  {label}: {reason}", f"{n:,}"))
    if rejects.get(FILTERED) or funnel.filtered:
        rows.append(("  filtered", f"{rejects.get(FILTERED, 0):,}"))
        rows += [(f"    by {name}", f"{n:,}") for name, n in funnel.filtered.items()]
    if rejects.get(DUPLICATE):
        rows.append(("  duplicates", f"{rejects[DUPLICATE]:,}"))
    rows.append(("kept (rows in the parquet)", f"{funnel.kept:,}"))
    for note, n in sorted(funnel.notes.items()):
        if not note.startswith(FILTER_NOTE_PREFIX):
            rows.append((f"  note: {note.replace('_', ' ')}", f"{n:,}"))
    rows.append(("bytes a full run would write", human_bytes(funnel.bytes_out)))
    rows.append(("  images", human_bytes(funnel.image_bytes)))
    rows.append(("  caption files", human_bytes(funnel.caption_bytes)))
    if funnel.damaged:
        rows.append(("shards damaged (counted up to the damage)", f"{len(funnel.damaged):,}"))
    if funnel.failed:
        rows.append(("shards failed (not counted)", f"{len(funnel.failed):,}"))
    rows.append(("time", f"{funnel.seconds:.1f} s"))
    return rows


def _kept_by(funnel: Funnel, what: str, top: int) -> tuple[str, list[tuple[str, str, str]]]:
    counts = funnel.sources if what == "source" else funnel.resolutions
    shown = top_counts(counts, top)
    scope = f"all {len(counts):,}" if len(counts) <= top else f"top {top:,} of {len(counts):,}"
    rows = [(value, f"{n:,}", f"{100 * n / funnel.kept:.1f}" if funnel.kept else "") for value, n in shown]
    return f"kept rows by {what} ({scope})", rows


def print_funnel(funnel: Funnel, top: int, console: Console) -> None:
    """The funnel and the kept rows by source and resolution (`top` of each), then what went wrong."""
    tables = [_kept_by(funnel, "source", top), _kept_by(funnel, "resolution", top)]
    if console.is_terminal:
        summary = Table(title=TITLE, show_header=False, title_justify="left")
        summary.add_column("what", style="bold")
        summary.add_column("value", justify="right")
        for label, value in funnel_rows(funnel):
            summary.add_row(safe(label), value)
        console.print(summary)
        for (title, rows), label in zip(tables, ("source", "resolution")):
            table = Table(title=title, title_justify="left", min_width=len(title))
            table.add_column(label)
            table.add_column("rows", justify="right")
            table.add_column("%", justify="right")
            for value, n, pct in rows:
                table.add_row(safe(value), n, pct)
            console.print(table)
    else:
        lines = [TITLE]
        lines += [f"{plain(label):<50} {value:>16}" for label, value in funnel_rows(funnel)]
        for title, rows in tables:
            lines += ["", title]
            lines += [f"  {plain(value):<48} {n:>10} {pct:>5}%" for value, n, pct in rows]
        console.print(Text("\n".join(lines)), highlight=False, soft_wrap=True)
    for shard_id, why in funnel.damaged.items():
        console.print(Text.assemble(("damaged", "yellow"), " ", plain(f"{shard_id}: {why}")), highlight=False)
    for shard_id, why in funnel.failed.items():
        console.print(Text.assemble(("failed", "red"), " ", plain(f"{shard_id}: {why}")), highlight=False)


__all__ = ["RichDryReporter", "funnel_rows", "print_funnel"]
