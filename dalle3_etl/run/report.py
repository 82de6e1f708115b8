"""What a run shows: a rich progress bar on a terminal, periodic plain lines otherwise, a summary table."""

from __future__ import annotations

import time
from collections import Counter

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from dalle3_etl.run.pipeline import Reporter, RunSummary
from dalle3_etl.run.plan import Plan
from dalle3_etl.run.webshart import webshart_lines
from dalle3_etl.safetext import human_bytes, plain, safe
from dalle3_etl.settings import CAPTIONS_COLUMN
from dalle3_etl.shard.convert import ShardResult
from dalle3_etl.shard.hubsplit import is_hub
from dalle3_etl.store.inplace import input_folder
from dalle3_etl.store.layout import Layout
from dalle3_etl.store.manifest import pinned_settings

LOG_EVERY = 10.0  # seconds between plain progress lines when stdout is not a terminal


class RichReporter(Reporter):
    def __init__(self, console: Console | None = None, quiet: bool = False, verb: str = "Converting"):
        self.console = console or Console(stderr=False)
        self.quiet = quiet
        self.verb = verb  # what the run does to the shards it lists at the start
        self.live = self.console.is_terminal and not quiet
        self.bar: Progress | None = None
        self.shard_bytes: dict[str, int] = {}
        self.shard_samples: dict[str, int] = {}
        self.finished = 0
        self.total_shards = 0
        self.total_bytes = 0
        self.t0 = time.monotonic()
        self.last_log = self.t0
        self.scan_total = 0  # bytes of the hf:// shards read whole before the run (`scanning`)
        self.scan_bytes: dict[str, int] = {}

    # -- Reporter ----------------------------------------------------------------------------------

    def start(self, plan: Plan, total_bytes: int) -> None:
        self._stop()  # the scans' bar, if any
        self.total_shards = len(plan.todo)
        self.total_bytes = total_bytes
        self.t0 = self.last_log = time.monotonic()
        if self.quiet:
            return
        if plan.skipped:
            self.console.print(f"Resuming: {len(plan.skipped)} shard(s) already complete, skipped.")
        for line in plan.notices():
            self._print(safe(line))
        if plan.todo:
            self.console.print(f"{self.verb} {len(plan.todo)} shard(s), {human_bytes(total_bytes)}.")
        if self.live and plan.todo:
            self.bar = self._bytes_bar("[bold]{task.description}", TextColumn("{task.fields[rate]}"), transient=False)
            self.task = self.bar.add_task(self._desc(), total=total_bytes or None, rate="")
            self.bar.start()

    def _bytes_bar(self, label: str, *more, transient: bool) -> Progress:
        """A bar of bytes done (with speed and time left) labelled `label`; `more` columns before the time left."""
        return Progress(
            TextColumn(label),
            BarColumn(),
            TaskProgressColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            *more,
            TimeRemainingColumn(),
            console=self.console,
            transient=transient,
        )

    def scanning(self, sources) -> None:
        if self.quiet:
            return
        hub = sum(1 for src in sources if is_hub(src))
        what = f"{len(sources)} shard(s)" + (f", {hub} of them from the Hub (read in full)" if hub else "")
        self.console.print(f"Reading the headers of {what} to find where to split them; the conversion starts after.")
        self.scan_total = sum(src.size for src in sources if is_hub(src))
        self.scan_bytes = {}
        if self.live and self.scan_total:
            self.bar = self._bytes_bar("[bold]finding split points", transient=True)
            self.task = self.bar.add_task("scan", total=self.scan_total)
            self.bar.start()

    def scan_progress(self, shard_id: str, nbytes: int) -> None:
        self.scan_bytes[shard_id] = nbytes
        done = sum(self.scan_bytes.values())
        if self.bar is not None:
            self.bar.update(self.task, completed=done)
        elif not self.quiet and time.monotonic() - self.last_log >= LOG_EVERY:
            self.last_log = time.monotonic()
            pct = 100 * done / self.scan_total if self.scan_total else 100.0
            self._print(f"finding split points: {human_bytes(done)}/{human_bytes(self.scan_total)} ({pct:.1f}%)")

    def _desc(self) -> str:
        return f"shards {self.finished}/{self.total_shards}"

    def _samples(self) -> int:
        return sum(self.shard_samples.values())

    def progress(self, shard_id: str, nbytes: int, samples: int) -> None:
        self.shard_bytes[shard_id] = nbytes
        self.shard_samples[shard_id] = samples
        self._update()

    def shard_done(self, result: ShardResult) -> None:
        self.finished += 1
        self.shard_bytes[result.shard_id] = result.bytes_in
        self.shard_samples[result.shard_id] = result.samples
        if not self.quiet:
            if not result.ok:
                self._print(Text.assemble(("FAILED", "red"), " ", plain(f"{result.shard_id}: {result.failure}")))
            elif result.error:
                self._print(
                    Text.assemble(
                        ("DAMAGED", "yellow"),
                        " ",
                        plain(f"{result.shard_id}: {result.error}"),
                        f" ({result.samples} samples before the damage were kept)",
                    )
                )
        self._update()

    def _print(self, text: str | Text) -> None:
        """Print a line: a str is rich markup (write only trusted text in it), a Text is printed as it is."""
        self.console.print(text, highlight=False)

    def _update(self) -> None:
        done = sum(self.shard_bytes.values())
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        rate = self._samples() / elapsed
        if self.bar is not None:
            self.bar.update(self.task, completed=done, description=self._desc(), rate=f"{rate:,.0f} samples/s")
        elif not self.quiet and time.monotonic() - self.last_log >= LOG_EVERY:
            self.last_log = time.monotonic()
            pct = 100 * done / self.total_bytes if self.total_bytes else 100.0
            eta = (self.total_bytes - done) / (done / elapsed) if done else float("nan")
            self._print(
                f"progress: {self._desc()}, {human_bytes(done)}/{human_bytes(self.total_bytes)} "
                f"({pct:.1f}%), {rate:,.0f} samples/s, ETA {eta:,.0f}s"
            )

    def merging(self) -> None:
        self._stop()
        if not self.quiet:
            self._print("Merging parts into one parquet...")

    def _stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def finish(self, summary: RunSummary) -> None:
        self._stop()
        if summary.interrupted:
            self.console.print(
                "[yellow]Interrupted.[/yellow] Completed shards are kept. Run the same command again to resume.",
                highlight=False,
            )
            return
        if self.quiet:
            return
        self.console.print(summary_table(summary))
        damaged = [r.shard_id for r in summary.failed if r.ok]  # read error in the input: kept up to it
        failed = [r.shard_id for r in summary.failed if not r.ok]  # nothing committed (output error, crash)
        if damaged:
            self._print(
                Text.assemble(
                    (f"{len(damaged)} shard(s) could not be read completely", "red"),
                    " (samples before the damage "
                    f"are kept): {plain(', '.join(damaged))}. See above; fix or download the input again and run with "
                    "--retry-failed to read them again.",
                )
            )
        if failed:
            self._print(
                Text.assemble(
                    (f"{len(failed)} shard(s) failed, nothing of them was committed", "red"),
                    f": {plain(', '.join(failed))}. "
                    "See above (e.g. disk full, a worker killed); fix the cause and run the same command again: they "
                    "are redone.",
                )
            )
        for line in summary.notices():
            self._print(safe(line, "yellow"))
        self._print(safe(f"SimpleTuner-ready output in {summary.out}:"))
        self._print(safe(f"  parquet:    {summary.parquet}"))
        lines = (
            webshart_lines(summary.webshart, summary.out)
            if summary.webshart
            else [f"  images:     {input_folder(Layout(summary.out)) or summary.out / 'data'}"]  # --link none
        )
        for line in lines:
            self._print(safe(line))
        self._print(safe(f"  dataloader: {summary.dataloader}"))


def summary_table(summary: RunSummary) -> Table:
    results = summary.results
    rejects: Counter[str] = Counter()
    notes: Counter[str] = Counter()
    for r in results:
        rejects.update(r.rejects)
        notes.update(r.notes)
    samples = sum(r.samples for r in results)
    table = Table(title="dalle3-etl convert", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("shards converted", str(sum(1 for r in results if r.ok)))
    table.add_row("shards skipped (already complete)", str(len(summary.plan.skipped)))
    table.add_row("shards failed or damaged", str(len(summary.failed)))
    table.add_row("samples converted this run", f"{samples:,}")
    table.add_row("rows in parquet", f"{summary.rows:,}")
    embedded = captions_to_embed(summary)
    if embedded is not None:
        table.add_row("captions SimpleTuner will embed (rows + extra captions)", f"{embedded:,}")
    for reason, count in sorted(rejects.items()):
        table.add_row(f"rejected: {reason}", f"{count:,}")
    if summary.duplicates is not None:
        table.add_row("duplicates left out (--dedup, whole output)", f"{summary.duplicates:,}")
    for note, count in sorted(notes.items()):
        table.add_row(note.replace("_", " "), f"{count:,}")
    table.add_row("bytes read", human_bytes(sum(r.bytes_in for r in results)))
    table.add_row("bytes written", human_bytes(sum(r.bytes_out for r in results)))
    table.add_row("time", f"{summary.seconds:.1f} s")
    table.add_row("samples/s", f"{samples / summary.seconds:,.0f}" if summary.seconds > 0 else "-")
    return table


def captions_to_embed(summary: RunSummary) -> int | None:
    """With --extra-captions: the captions of the whole dataset, each a text embedding in SimpleTuner's cache
    (rows + the extra captions every completed shard's record counts); None without extra captions."""
    layout = Layout(summary.out)
    if not pinned_settings(layout).get("extra_captions") or summary.parquet is None or not summary.parquet.exists():
        return None
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    # the merged parquet's `captions` lists: exact also when --dedup left rows of completed shards out
    lists = pq.read_table(summary.parquet, columns=[CAPTIONS_COLUMN]).column(CAPTIONS_COLUMN)
    return int(pc.sum(pc.list_value_length(lists)).as_py() or 0)


__all__ = ["RichReporter", "captions_to_embed", "summary_table"]
