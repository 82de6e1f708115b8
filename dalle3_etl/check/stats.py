"""`dalle3-etl stats OUT`: what is in a converted output, as tables, JSON or a plot (command in `cli`).

Reads the parquet the dataloader entry names (else where convert writes it) row group by row group,
with only the columns it needs; counts are made with pyarrow.compute, so memory stays flat for 1.2 M rows
(the caption lengths, one int32 per row, are the largest thing kept).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from rich.table import Table

from dalle3_etl.check.target import is_image_name, open_output
from dalle3_etl.optional import require
from dalle3_etl.safetext import human_bytes, safe
from dalle3_etl.settings import CAPTIONS_COLUMN
from dalle3_etl.shard.shape import filter_of
from dalle3_etl.sources.base import natural_key
from dalle3_etl.store.layout import Layout

PERCENTILES = (5, 25, 50, 75, 95, 99)
MISSING_VALUE = "(none)"


@dataclass
class Stats:
    out: Path
    parquet: Path
    samples: int = 0
    parquet_bytes: int = 0
    images: int = 0
    image_bytes: int = 0
    captions: int = 0
    caption_bytes: int = 0
    shards: Counter = field(default_factory=Counter)
    sources: Counter = field(default_factory=Counter)
    resolutions: Counter = field(default_factory=Counter)
    caption_chars: pa.ChunkedArray = field(default_factory=lambda: pa.chunked_array([], pa.int32()))
    rejects: Counter = field(default_factory=Counter)
    filtered: Counter = field(default_factory=Counter)  # `filtered` rejects by filter, from their details

    def caption_distribution(self) -> dict[str, float]:
        lengths = self.caption_chars
        if len(lengths) == 0:
            return {}
        minmax = pc.min_max(lengths).as_py()
        quantiles = pc.quantile(lengths, q=[p / 100 for p in PERCENTILES]).to_pylist()
        dist: dict[str, float] = {"min": minmax["min"]}
        dist.update({f"p{p}": round(q, 1) for p, q in zip(PERCENTILES, quantiles)})
        dist.update({"max": minmax["max"], "mean": round(pc.mean(lengths).as_py(), 1)})
        return dist

    def to_json(self, top: int) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "parquet": str(self.parquet),
            "samples": self.samples,
            "bytes": {
                "images": self.image_bytes,
                "captions": self.caption_bytes,
                "parquet": self.parquet_bytes,
                "total": self.image_bytes + self.caption_bytes + self.parquet_bytes,
            },
            "files": {"images": self.images, "captions": self.captions},
            "shards": dict(sorted(self.shards.items(), key=lambda kv: natural_key(kv[0]))),
            "sources": dict(self.sources.most_common(top)),
            "sources_distinct": len(self.sources),
            "resolutions": dict(self.resolutions.most_common(top)),
            "resolutions_distinct": len(self.resolutions),
            "caption_chars": self.caption_distribution(),
            "rejects": dict(self.rejects.most_common()),
            "rejects_total": sum(self.rejects.values()),
            "filtered": dict(self.filtered.most_common()),
        }


def _count_into(counter: Counter, array: pa.Array) -> None:
    counts = pc.value_counts(array)
    for value, n in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()):
        counter[MISSING_VALUE if value is None else value] += n


def _disk_usage(stats: Stats, root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            if is_image_name(name):
                stats.images += 1
                stats.image_bytes += os.stat(os.path.join(dirpath, name)).st_size
            elif name.endswith(".txt"):
                stats.captions += 1
                stats.caption_bytes += os.stat(os.path.join(dirpath, name)).st_size


def compute_stats(out: Path) -> Stats:
    target, pf = open_output(out)
    stats = Stats(
        out=Path(out).absolute(),
        parquet=target.parquet,
        samples=pf.metadata.num_rows,
        parquet_bytes=target.parquet.stat().st_size,
    )
    names = pf.schema_arrow.names
    # every caption a row has (--extra-captions: the list; SimpleTuner reads them all, from the caption file's
    # lines or the list cell), whichever caption strategy the entry uses
    caption = CAPTIONS_COLUMN if CAPTIONS_COLUMN in names else target.caption
    wanted = [c for c in (caption, target.width, target.height, "shard", "source") if c in names]
    lengths = []
    for i in range(pf.num_row_groups):
        group = pf.read_row_group(i, columns=wanted)
        if "shard" in names:
            _count_into(stats.shards, group.column("shard"))
        if "source" in names:
            _count_into(stats.sources, group.column("source"))
        if target.width in names and target.height in names:
            resolution = pc.binary_join_element_wise(
                pc.cast(group.column(target.width), pa.string()), pc.cast(group.column(target.height), pa.string()), "x"
            )
            _count_into(stats.resolutions, resolution)
        if caption in names:
            captions = group.column(caption)
            if pa.types.is_list(captions.type):
                captions = pc.list_flatten(captions)
            lengths.extend(pc.drop_null(pc.utf8_length(captions)).chunks)
    stats.caption_chars = pa.chunked_array(lengths, pa.int32())
    _disk_usage(stats, target.data_dir)
    rejects = Layout(Path(out)).merged_rejects
    if rejects.exists():
        with open(rejects, "rb") as fh:
            for line in fh:
                if line.strip():
                    reject = orjson.loads(line)
                    stats.rejects[reject.get("reason", "?")] += 1
                    if reject.get("reason") == "filtered":
                        stats.filtered[filter_of(reject.get("detail", "")) or "?"] += 1
    return stats


def _counts_table(title: str, counts: dict[str, int], total: int, label: str, distinct: int | None = None) -> Table:
    if distinct is not None:
        title += f" (all {distinct:,})" if distinct <= len(counts) else f" (top {len(counts):,} of {distinct:,})"
    table = Table(title=title, title_justify="left", min_width=len(title))
    table.add_column(label)
    table.add_column("rows", justify="right")
    table.add_column("%", justify="right")
    for value, n in counts.items():
        table.add_row(safe(value), f"{n:,}", f"{100 * n / total:.1f}" if total else "")
    return table


def print_stats(stats: Stats, top: int, console: Console) -> None:
    data = stats.to_json(top)
    summary = Table(title=safe(f"dalle3-etl stats: {stats.out}"), show_header=False, title_justify="left")
    summary.add_column("what", style="bold")
    summary.add_column("value", justify="right")
    summary.add_row("samples", f"{stats.samples:,}")
    summary.add_row("images", f"{stats.images:,} files, {human_bytes(stats.image_bytes)}")
    summary.add_row("caption files", f"{stats.captions:,} files, {human_bytes(stats.caption_bytes)}")
    summary.add_row("parquet", human_bytes(stats.parquet_bytes))
    summary.add_row("total on disk", human_bytes(data["bytes"]["total"]))
    summary.add_row("rejected samples", f"{data['rejects_total']:,}")
    console.print(summary)
    console.print(_counts_table("rows by shard", data["shards"], stats.samples, "shard"))
    console.print(_counts_table("rows by source", data["sources"], stats.samples, "source", len(stats.sources)))
    console.print(
        _counts_table("rows by resolution", data["resolutions"], stats.samples, "resolution", len(stats.resolutions))
    )
    dist = data["caption_chars"]
    if dist:
        table = Table(title="caption length (characters)", title_justify="left")
        for key in dist:
            table.add_column(key, justify="right")
        table.add_row(*(f"{v:,}" if isinstance(v, int) else f"{v:,.1f}" for v in dist.values()))
        console.print(table)
    if data["rejects"]:
        console.print(_counts_table("rejects by reason", data["rejects"], data["rejects_total"], "reason"))
    if data["filtered"]:
        filtered = data["rejects"].get("filtered", 0)
        console.print(_counts_table("filtered by filter", data["filtered"], filtered, "filter"))


def require_matplotlib() -> None:
    require("matplotlib", "plot", "stats --plot")


def plot_stats(stats: Stats, path: Path, top: int) -> None:
    """Resolution and caption-length histograms in one PNG (matplotlib, Agg canvas: no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax_res, ax_cap = fig.subplots(1, 2, width_ratios=(3, 2))
    common = stats.resolutions.most_common(top)
    labels = [str(r) for r, _ in common]
    counts = [n for _, n in common]
    other = stats.samples - sum(counts)
    if other > 0:
        labels.append("other")
        counts.append(other)
    ax_res.bar(range(len(counts)), counts, color="tab:blue")
    ax_res.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax_res.set_title(f"rows by resolution ({len(stats.resolutions):,} distinct)")
    ax_res.set_ylabel("rows")
    lengths = stats.caption_chars.to_numpy()
    ax_cap.hist(lengths, bins=50, color="tab:green")
    ax_cap.set_title(f"caption length ({len(lengths):,} captions)")
    ax_cap.set_xlabel("characters")
    ax_cap.set_ylabel("captions")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


__all__ = ["Stats", "compute_stats", "plot_stats", "print_stats", "require_matplotlib"]
