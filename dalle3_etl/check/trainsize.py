"""The `train_size` check: how many rows SimpleTuner will skip as smaller than the entry's `minimum_image_size`.

SimpleTuner's metadata backends (parquet and webshart alike) drop an image before bucketing when it is below
`minimum_image_size`, by its `resolution_type` (its `meets_resolution_requirements`):

- `area`: `minimum_image_size` is in megapixels: skipped when width x height < it x 1,000,000; with
  `crop: true` and a square `crop_aspect` (SimpleTuner's default when cropping), also when a side is shorter
  than floor(sqrt(it x 1,000,000));
- `pixel`: skipped when the width or the height is below it.

When every row is skipped SimpleTuner stops at start-up ("Dataset produced no usable samples"), which is what
happens with the default entry on img2dataset's 256-pixel images: a warning with the fix (the output itself is
complete and right, and the trainer's own config may set other sizes, so verify still exits 0; the last line
says "OK, with warnings"). Some rows skipped is a note. Other resolution types are not checked (said in the note).
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dalle3_etl.check.report import Check
from dalle3_etl.store.layout import Layout

BATCH_ROWS = 65536


def image_entry(layout: Layout) -> dict[str, Any] | None:
    """The image dataset entry of OUT's multidatabackend.json (None when there is none usable)."""
    try:
        entries = orjson.loads(layout.dataloader_config.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(entries, list):
        return None
    return next((e for e in entries if isinstance(e, dict) and e.get("dataset_type", "image") == "image"), None)


def rule(entry: dict[str, Any]) -> tuple[str, float, int] | None:
    """(resolution_type, minimum_image_size, shortest side allowed) of the entry, or None when not checked."""
    kind, minimum = entry.get("resolution_type", "pixel"), entry.get("minimum_image_size")
    if isinstance(minimum, bool) or not isinstance(minimum, (int, float)) or minimum <= 0:
        return None
    if kind == "area":
        square = entry.get("crop", False) and entry.get("crop_aspect", "square") == "square"
        return kind, float(minimum), math.floor(math.sqrt(minimum * 1_000_000)) if square else 0
    if kind == "pixel":
        return kind, float(minimum), math.ceil(minimum)
    return None


def count_too_small(pf: pq.ParquetFile, width: str, height: str, how: tuple[str, float, int]) -> int:
    kind, minimum, side = how
    skipped = 0
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=[width, height]):
        w, h = (pc.cast(col, "int64") for col in batch.columns)
        small = pc.or_(pc.less(w, side), pc.less(h, side))
        if kind == "area":
            small = pc.or_(small, pc.less(pc.multiply(w, h), minimum * 1_000_000))
        skipped += pc.sum(pc.cast(pc.fill_null(small, False), "int64")).as_py() or 0
    return skipped


def keeps_all(pf: pq.ParquetFile, width: str, height: str, kind: str) -> str:
    """A `minimum_image_size` at which SimpleTuner keeps every row (without a square crop): the smallest area in
    megapixels, rounded down to 2 decimals (`area`), or the smallest side (`pixel`)."""
    least = None
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=[width, height]):
        w, h = (pc.cast(col, "int64") for col in batch.columns)
        size = pc.multiply(w, h) if kind == "area" else pc.min_element_wise(w, h)
        low = pc.min(size).as_py()
        if low is not None:
            least = low if least is None else min(least, low)
    if least is None:
        return "..."
    if kind == "area":
        return f"{max(math.floor(least / 10_000) / 100, 0.01):g}"
    return str(least)


def check_train_size(layout: Layout, pf: pq.ParquetFile, width: str, height: str, check: Check) -> None:
    entry = image_entry(layout)
    how = rule(entry) if entry is not None else None
    if how is None:
        kind = entry.get("resolution_type") if entry else None
        check.skip(f"resolution_type {kind!r} or minimum_image_size not checked" if entry else "no image entry")
        return
    kind, minimum, _side = how
    rows = pf.metadata.num_rows
    skipped = count_too_small(pf, width, height, how)
    unit = "megapixels" if kind == "area" else "pixels a side"
    what = f"smaller than the entry's minimum_image_size {minimum:g} ({unit}, resolution_type {kind})"
    if rows and skipped == rows:
        check.warn(
            f"every one of the {rows:,} rows is {what}: SimpleTuner skips them all and stops ('Dataset produced no "
            f"usable samples'); lower it, e.g. `dalle3-etl entry {layout.out} --minimum-image-size "
            f"{keeps_all(pf, width, height, kind)}` (and a --resolution for images this small)",
            count=rows,
        )
    elif skipped:
        check.note = f"{skipped:,} of {rows:,} rows are {what}: SimpleTuner skips them"


__all__ = ["check_train_size", "count_too_small", "image_entry", "rule"]
