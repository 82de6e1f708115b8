"""Where rows and files go: a shard's parquet part (batched Arrow record batches) and its files.

One schema for every part and for the merged parquet, so parts concatenate without casts.

The part's Arrow arrays are assembled from buffers (`column_array`) rather than with `pa.array`:
`pa.array` on a Python list imports pandas when pandas is installed (as it is wherever SimpleTuner
runs), which costs every pool worker ~0.2 s and ~47 MB of RSS. Building from buffers costs ~0.4 µs
per row more than `pa.array` (measured: ~5 ms vs ~2 ms per 8,192-row batch of the base columns), i.e.
~7 ms per real 17,000-sample shard against 0.2 s per worker. The arrays are the same as `pa.array`'s
(tests/shard/test_sinks.py holds them to it); past the 32-bit offset range, or for a type not handled here,
`pa.array` itself is used.
"""

from __future__ import annotations

import errno
import os
import sys
from array import array
from itertools import accumulate
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dalle3_etl.settings import CAPTIONS_COLUMN, LIST_FIELDS, Settings
from dalle3_etl.shard.tarbytes import NEW_FILE
from dalle3_etl.store.fsio import Root


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
    if settings.extra_captions:  # every caption of the row, the first (`caption`) included
        cols.append(pa.field(CAPTIONS_COLUMN, pa.list_(pa.string()), nullable=False))
    for name in settings.fields:
        cols.append(pa.field(name, pa.list_(pa.string()) if name in LIST_FIELDS else pa.string()))
    return pa.schema(cols)


#: --dedup: the part's last column, the sample's 16-byte key (null: field missing); never in the merged parquet.
DEDUP_COLUMN = "_dedup"
DEDUP_KEY_BYTES = 16


#: --webshart: the part's last two columns, where the image member's data is in the tar (first byte, length);
#: never in the merged parquet (`run.merge` drops them, `run.webshart` reads them).
WEBSHART_COLUMNS = ("_offset", "_length")


def part_schema(settings: Settings) -> pa.Schema:
    """A shard part's schema: the merged parquet's, with --dedup the hidden key column, then with --webshart
    the member's place in the tar (last)."""
    schema = schema_for(settings)
    if settings.dedup:
        schema = schema.append(pa.field(DEDUP_COLUMN, pa.binary(DEDUP_KEY_BYTES)))
    for name in WEBSHART_COLUMNS if settings.webshart else ():
        schema = schema.append(pa.field(name, pa.int64(), nullable=False))
    return schema


def key_array(keys: list[bytes | None]) -> pa.Array:
    """The `_dedup` column from 16-byte keys (None: null), from buffers like `column_array`."""
    nulls = keys.count(None)
    zero = bytes(DEDUP_KEY_BYTES)
    data = b"".join(zero if k is None else k for k in keys) if nulls else b"".join(keys)
    return pa.Array.from_buffers(
        pa.binary(DEDUP_KEY_BYTES), len(keys), [_validity(keys, nulls), pa.py_buffer(data)], null_count=nulls
    )


def int64_array(values: list[int]) -> pa.Array:
    """`pa.array(values, pa.int64())` from a buffer (see the module's note on pandas)."""
    if _LITTLE_ENDIAN and array("q").itemsize == 8:
        return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(array("q", values))])
    return pa.array(values, pa.int64())


def parquet_writer(path: Path, schema: pa.Schema, compression: str) -> pq.ParquetWriter:
    # No statistics timestamps or pandas metadata: the bytes depend only on the rows.
    return pq.ParquetWriter(str(path), schema, compression=compression, write_statistics=True)


#: Bytes a string array (or elements a list array) may hold before `pa.array` is used instead.
MAX_OFFSET = 2**31 - 1
_LITTLE_ENDIAN = sys.byteorder == "little"
_INT_IS_32 = array("i").itemsize == 4


def _validity(values: list, nulls: int) -> pa.Buffer | None:
    """Arrow validity bitmap (bit set = not null), or None when nothing is null."""
    if not nulls:
        return None
    bits = bytearray((len(values) + 7) // 8)
    for i, v in enumerate(values):
        if v is not None:
            bits[i >> 3] |= 1 << (i & 7)
    return pa.py_buffer(bits)


def _offsets(lengths, total: int) -> pa.Buffer | None:
    if total > MAX_OFFSET:
        return None
    return pa.py_buffer(array("i", list(accumulate(lengths, initial=0))))


def _string_array(values: list) -> pa.Array | None:
    nulls = values.count(None)
    texts = [("" if v is None else v) for v in values] if nulls else values
    joined = "".join(texts)
    data = joined.encode("utf-8")  # the same bytes as encoding each string and concatenating
    if len(data) == len(joined):  # all ASCII: a string's length in characters is its length in bytes
        lengths = map(len, texts)
    else:
        lengths = map(len, map(str.encode, texts))
    offsets = _offsets(lengths, len(data))
    if offsets is None:
        return None
    return pa.Array.from_buffers(pa.string(), len(values), [_validity(values, nulls), offsets, pa.py_buffer(data)])


def _string_list_array(values: list) -> pa.Array | None:
    nulls = values.count(None)
    lists = [(() if v is None else v) for v in values] if nulls else values
    child = _string_array([item for v in lists for item in v])
    lengths = list(map(len, lists))
    offsets = _offsets(lengths, sum(lengths))
    if child is None or offsets is None:
        return None
    return pa.Array.from_buffers(
        pa.list_(pa.string()), len(values), [_validity(values, nulls), offsets], children=[child]
    )


def column_array(values: list, type_: pa.DataType) -> pa.Array:
    """`pa.array(values, type_)` for the part's column types, without pyarrow importing pandas."""
    array_ = None
    if _LITTLE_ENDIAN:
        if type_ == pa.string():
            array_ = _string_array(values)
        elif type_ == pa.int32() and _INT_IS_32 and None not in values:
            try:
                array_ = pa.Array.from_buffers(pa.int32(), len(values), [None, pa.py_buffer(array("i", values))])
            except (OverflowError, TypeError):
                array_ = None  # pa.array raises its own, clearer error
        elif type_ == pa.list_(pa.string()):
            array_ = _string_list_array(values)
    return array_ if array_ is not None else pa.array(values, type_)


class PartWriter:
    """Collects rows (tuples in schema order) and writes one record batch every `batch_rows` rows.
    With --dedup, each row's key is appended to `keys` before the row is added (the hidden last column).

    A path ending in `.arrow` is written as an Arrow IPC file instead of parquet: the part of one task of a split
    shard, read back once by the driver (`run.tasks`), memory-mapped, with no parquet encoding on either side."""

    def __init__(self, path: Path, settings: Settings):
        self.path = path
        self.schema = part_schema(settings)
        self.batch_rows = settings.batch_rows
        self.pending: list[tuple] = []
        self.keys: list[bytes | None] | None = [] if settings.dedup else None
        self.places: list[tuple[int, int]] | None = [] if settings.webshart else None  # (offset, length) per row
        self.rows = 0
        if path.suffix == ".arrow":
            self._writer = pa.ipc.new_file(str(path), self.schema)
        else:
            self._writer = parquet_writer(path, self.schema, "zstd")

    def add(self, values: tuple) -> None:
        pending = self.pending
        pending.append(values)
        if len(pending) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        columns = zip(*self.pending)  # rows -> columns, in C
        arrays = [column_array(list(values), type_) for values, type_ in zip(columns, self.schema.types)]
        if self.keys is not None:
            arrays.append(key_array(self.keys))
            self.keys = []
        if self.places is not None:
            arrays.extend(int64_array(list(column)) for column in zip(*self.places))
            self.places = []
        batch = pa.record_batch(arrays, schema=self.schema)
        self._writer.write_batch(batch)
        self.rows += batch.num_rows
        self.pending = []

    def close(self) -> None:
        self.flush()
        self._writer.close()

    def abort(self) -> None:
        """Close without finishing; the half-written file goes with its shard's staging folder."""
        self._writer.close()


class FileTree:
    """Creates files under a root, making parent directories once each.

    Names are never reused: a file is created exclusively (O_EXCL), and a folder that exists without
    this tree having made it is another member's file or folder. So on a case-insensitive file system
    (macOS) `Case.jpg` after `case.jpg`, or a name after its other Unicode normalization, fails with
    EEXIST instead of replacing (or sharing) what an earlier member wrote. Folders are made and
    removed iteratively: a name thousands of folders deep does not hit Python's recursion limit."""

    def __init__(self, root: Path, fs: Root):
        self.root = root
        self.fs = fs  # removes what `prune` takes back
        self._prefix = os.path.join(root, "")  # "root/": one concatenation per file, not os.path.join
        self._made: set[str] = set()  # folders made here that exist (the root included)

    def path(self, relpath: str) -> str:
        """`root/relpath`, its folder created once. `relpath` is relative (tarstream rejects absolute names)."""
        full = self._prefix + relpath
        parent = full[: full.rfind("/")]
        if parent not in self._made:
            self._make_folders(parent)
        return full

    def _make_folders(self, folder: str) -> None:
        missing = []
        while folder not in self._made and len(folder) >= len(self._prefix):
            missing.append(folder)
            folder = folder[: folder.rfind("/")]
        if folder not in self._made:  # the root
            os.makedirs(folder, exist_ok=True)
            self._made.add(folder)
        for folder in reversed(missing):
            os.mkdir(folder)  # EEXIST: a file, or a folder this tree did not make (a case-folded twin)
            self._made.add(folder)

    def prune(self, relpath: str) -> None:
        """Remove the folders on the way to `relpath` that are empty now, deepest first (after a sample
        whose name could not be created: nothing of it is left, not even a folder)."""
        parent = self._prefix + relpath
        parent = parent[: parent.rfind("/")]
        while len(parent) >= len(self._prefix):
            try:
                if not self.fs.remove_empty_folder(parent) and os.path.lexists(parent):
                    break  # not empty (another sample's folder): keep it
            except OSError as exc:
                if exc.errno != errno.ENAMETOOLONG:  # not even nameable: nothing was made there
                    break  # cannot be removed: keep it
            self._made.discard(parent)
            parent = parent[: parent.rfind("/")]

    def write_text(self, relpath: str, text: str) -> int:
        data = text.encode("utf-8")
        fd = os.open(self.path(relpath), NEW_FILE, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return len(data)


def caption_relpath(image_relpath: str) -> str:
    """SimpleTuner's textfile strategy reads `<image path without extension>.txt`."""
    return os.path.splitext(image_relpath)[0] + ".txt"


def written_names(filename: str, images: bool, captions: bool) -> list[str]:
    """The files a row stands for under OUT/data: its image and/or caption file, as the run wrote them."""
    names = []
    if images:
        names.append(filename)
    if captions:
        names.append(caption_relpath(filename))
    return names
