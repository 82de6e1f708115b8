"""Where rows and files go: a shard's parquet part (batched Arrow record batches) and its files.

One schema for every part and for the merged parquet, so parts concatenate without casts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dalle3_etl.settings import LIST_FIELDS, Settings

BASE_COLUMNS = ("filename", "caption", "width", "height", "key", "shard", "source")


def schema_for(settings: Settings) -> pa.Schema:
    cols = [
        pa.field("filename", pa.string(), nullable=False),
        pa.field("caption", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("source", pa.string()),
    ]
    for name in settings.fields:
        cols.append(pa.field(name, pa.list_(pa.string()) if name in LIST_FIELDS else pa.string()))
    return pa.schema(cols)


def parquet_writer(path: Path, schema: pa.Schema, compression: str) -> pq.ParquetWriter:
    # No statistics timestamps or pandas metadata: the bytes depend only on the rows.
    return pq.ParquetWriter(str(path), schema, compression=compression, write_statistics=True)


class PartWriter:
    """Collects rows column-wise and writes one record batch every `batch_rows` rows."""

    def __init__(self, path: Path, settings: Settings):
        self.path = path
        self.schema = schema_for(settings)
        self.names = self.schema.names
        self.batch_rows = settings.batch_rows
        self.columns: list[list[Any]] = [[] for _ in self.names]
        self.rows = 0
        self._writer = parquet_writer(path, self.schema, "zstd")

    def add(self, values: tuple) -> None:
        for column, value in zip(self.columns, values):
            column.append(value)
        if len(self.columns[0]) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        if not self.columns[0]:
            return
        batch = pa.record_batch(self.columns, schema=self.schema)
        self._writer.write_batch(batch)
        self.rows += batch.num_rows
        self.columns = [[] for _ in self.names]

    def close(self) -> None:
        self.flush()
        self._writer.close()

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            self.path.unlink(missing_ok=True)


class FileTree:
    """Creates files under a root, making parent directories once each."""

    def __init__(self, root: Path):
        self.root = root
        self._prefix = os.path.join(root, "")  # "root/": one concatenation per file, not os.path.join
        self._made: set[str] = set()

    def path(self, relpath: str) -> str:
        """`root/relpath`, its folder created once. `relpath` is relative (tarstream rejects absolute names)."""
        full = self._prefix + relpath
        parent = full[: full.rfind("/")]
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            self._made.add(parent)
        return full

    def write_text(self, relpath: str, text: str) -> int:
        data = text.encode("utf-8")
        fd = os.open(self.path(relpath), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return len(data)


def caption_relpath(image_relpath: str) -> str:
    """SimpleTuner's textfile strategy reads `<image path without extension>.txt`."""
    return os.path.splitext(image_relpath)[0] + ".txt"
