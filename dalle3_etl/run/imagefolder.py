"""`--also imagefolder`: OUT/data/metadata.jsonl, so Hugging Face `datasets` (and diffusers' example scripts)
read OUT/data as an `imagefolder`: one line per parquet row, in parquet order."""

from __future__ import annotations

import os
from collections.abc import Iterator

import orjson
import pyarrow.parquet as pq

from dalle3_etl.settings import CAPTIONS_COLUMN, Settings
from dalle3_etl.store.layout import Layout, StateError

BATCH_ROWS = 8192


def imagefolder_lines(layout: Layout, settings: Settings) -> Iterator[bytes]:
    """One JSON line per row: `file_name` (relative to OUT/data), `text` (the caption; with --extra-captions
    the list of every caption), `width`, `height`, then the --fields columns."""
    text = CAPTIONS_COLUMN if settings.extra_captions else "caption"
    columns = ["filename", text, "width", "height", *settings.fields]
    names = ["file_name", "text", "width", "height", *settings.fields]
    pf = pq.ParquetFile(layout.parquet(settings.parquet_name))
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns):  # one batch in memory at a time
        values = [batch.column(i).to_pylist() for i in range(len(columns))]
        yield b"".join(orjson.dumps(dict(zip(names, row, strict=True))) + b"\n" for row in zip(*values, strict=True))


def write_imagefolder(layout: Layout, settings: Settings) -> None:
    """Write OUT/data/metadata.jsonl (the claim first: from then on the file is the tool's, kept up to date by
    every later run and removed by --restart). A metadata.jsonl the tool did not write is refused."""
    refuse_foreign_metadata(layout)
    layout.fs.write_atomic(layout.imagefolder_claim, b"")
    layout.fs.write_atomic_chunks(layout.imagefolder_metadata, imagefolder_lines(layout, settings))


def refuse_foreign_metadata(layout: Layout) -> None:
    """A StateError when OUT/data/metadata.jsonl is there and not the tool's (it is left as it is)."""
    path = layout.imagefolder_metadata
    if os.path.islink(path):
        raise StateError(
            f"{path} is a symlink: dalle3-etl never writes through a link; remove it to write the imagefolder"
        )
    if os.path.lexists(path) and not layout.imagefolder_claim.exists():
        raise StateError(f"{path} exists and was not written by dalle3-etl: move it away to write the imagefolder")


def keep_imagefolder(layout: Layout, settings: Settings) -> None:
    """At the end of a run: write the imagefolder when asked for now or written before (it follows the parquet)."""
    if "imagefolder" in settings.also or layout.imagefolder_claim.exists():
        write_imagefolder(layout, settings)


__all__ = ["imagefolder_lines", "keep_imagefolder", "refuse_foreign_metadata", "write_imagefolder"]
