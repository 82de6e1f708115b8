"""`dalle3-etl verify OUT`: will SimpleTuner start on this output, and is everything there?

Every check below is named; the report gives, per check, how many things fail it and the first few.

- dataloader: `multidatabackend.json` is a JSON list with an image entry whose `instance_data_dir` and
  `parquet.path` are absolute and exist, a known `caption_strategy`, filenames with extension, and a
  text-embeds entry.
- parquet: that path is ONE readable parquet file with the entry's columns, of types pandas reads.
- missing_image / duplicate_row / image_without_row: rows and images on disk match one to one, keyed as
  SimpleTuner keys them (path relative to `instance_data_dir`, extension kept).
- missing_caption_file / empty_caption_file / multiline_caption_file: with textfile captions, every image
  on disk has a non-empty `<stem>.txt` without a newline (SimpleTuner reads each line as a caption and
  stops at start-up when an image has no caption file). An output made with `--extra-captions` holds one
  caption a line: several lines are expected there, and an empty line is an empty caption file.
- empty_caption, bad_size: no null or blank caption (in a list of captions: none of them); width and height
  positive.
- shard_rows: rows per shard equal the shard's completion record (less, with --dedup, the duplicates of
  earlier shards the merge left out: `dedup.json`).
- stray_file: no temporary files, staging or unpublished `--flat` files left by an interrupted run. The tool
  writes temporaries only beside its own files at the top of OUT and in its state folder, never where a
  member can land (OUT/data), so an image named like a temporary is never flagged.
- the entry must describe THIS output: an entry whose paths point at another folder (a copied or moved
  output) fails `dataloader`, and the other checks then look at this output, not at the original.
- header_size: each image's header gives the row's width and height (`--deep`: every image; without it a
  sample of about HEADER_SAMPLE rows spread over the parquet).

Memory stays bounded whatever the size: the parquet is streamed in batches of the needed columns, and the
one thing that grows with the dataset is the set of image paths found on disk. Each row removes its own
path from that set; what remains at the end has no row.

What the entry says is read in `check.target`; the results and their printing are in `check.report`.
"""

from __future__ import annotations

import fnmatch
import heapq
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dalle3_etl.check.report import MAX_EXAMPLES, Check, VerifyReport
from dalle3_etl.check.target import Target, is_image_name, read_target
from dalle3_etl.check.trainsize import check_train_size
from dalle3_etl.check.webshart import is_webshart, verify_webshart
from dalle3_etl.run.dedup import read_dedup_counts
from dalle3_etl.shard import imageheader
from dalle3_etl.sources.base import natural_key
from dalle3_etl.store.inplace import input_folder
from dalle3_etl.store.layout import TMP_GLOB, Layout
from dalle3_etl.store.locks import lock_holder
from dalle3_etl.store.manifest import pinned_parquet, pinned_settings
from dalle3_etl.store.records import all_records

BATCH_ROWS = 65_536
#: Without --deep, the image headers of about this many rows, spread evenly over the parquet, are read: a size
#: taken from the wrong JSON fields is wrong on every row, so a sample finds it in milliseconds.
HEADER_SAMPLE = 100
TEMP_PATTERNS = (TMP_GLOB,)  # write_atomic / merge temporaries (beside the tool's own files only)

ROW_CHECKS = (
    "missing_image",
    "duplicate_row",
    "image_without_row",
    "empty_caption",
    "bad_size",
    "shard_rows",
    "header_size",
)
CAPTION_FILE_CHECKS = ("missing_caption_file", "empty_caption_file", "multiline_caption_file")


def is_temp_name(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in TEMP_PATTERNS)


# --- the checks -------------------------------------------------------------------------------------


def _check_state(layout: Layout, check: Check) -> None:
    """Temporaries beside OUT's files and in the state folder; anything in a folder a run leaves empty.

    At the top of OUT only temporaries of the tool's own files count (a user's file there is theirs)."""
    for entry in layout.own_temporaries({pinned_parquet(layout).name}):
        check.fail(str(entry))
    # folders of OUT/.dalle3-etl that are empty after a completed run, and what an entry in them means
    leftover = {
        layout.staging_dir: "unfinished shard",
        layout.tasks_dir: "unfinished shard split into tasks",
        layout.flat_dir: "unpublished --flat files",
        layout.trash: "left by --restart",
    }
    for folder in (layout.state, *(p for p in layout.state.iterdir() if p.is_dir())):
        if folder in leftover:
            check.fail(*(f"{entry} ({leftover[folder]})" for entry in sorted(folder.iterdir())))
            continue
        for entry in sorted(folder.iterdir()):
            if is_temp_name(entry.name):
                check.fail(str(entry))


def _read_caption(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except (FileNotFoundError, IsADirectoryError):
        return None


def _blank_line(data: bytes) -> int:
    """The number of the first empty (or blank) line of a caption file, 0 when there is none."""
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            return number
    return 0


def _walk_images(
    target: Target,
    report: VerifyReport,
    progress: Callable[[int], None],
    several: bool = False,
    only: set[str] | None = None,
) -> set[str]:
    """Keys of the images SimpleTuner finds under instance_data_dir; checks caption files and temporaries.
    `several`: the output was made with --extra-captions, its caption files hold one caption a line. `only`
    (--link none: the input folder still holds its rejected samples' images): the images looked at."""
    checks = report.checks
    textfile = target.caption_strategy == "textfile"
    keys: set[str] = set()
    root = str(target.data_dir)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        progress(len(keys))
        names = set(filenames)
        for name in sorted(filenames):
            if not is_image_name(name):
                continue
            if only is not None and prefix + name not in only:
                report.counts["input_images_without_row"] += 1
                if textfile and name.rpartition(".")[0] + ".txt" not in names:
                    # SimpleTuner's textfile strategy reads a caption for every image it lists
                    checks["missing_caption_file"].fail(prefix + name.rpartition(".")[0] + ".txt")
                    checks["missing_caption_file"].note = (
                        "the input folder keeps its rejected samples' images, with no caption file: "
                        "`dalle3-etl entry OUT` writes the entry with the parquet caption strategy"
                    )
                continue
            keys.add(prefix + name)
            if not textfile:
                continue
            caption = name.rpartition(".")[0] + ".txt"
            data = _read_caption(os.path.join(dirpath, caption)) if caption in names else None
            if data is None:
                checks["missing_caption_file"].fail(prefix + caption)
                continue
            report.counts["caption_files"] += 1
            if not data.strip():
                checks["empty_caption_file"].fail(prefix + caption)
            elif several:
                blank = _blank_line(data)
                if blank:
                    checks["empty_caption_file"].fail(f"{prefix}{caption}: line {blank} is empty")
            elif b"\n" in data or b"\r" in data:
                checks["multiline_caption_file"].fail(prefix + caption)
    report.counts["images_on_disk"] = len(keys)
    return keys


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _is_caption(kind: pa.DataType) -> bool:
    """Text, or a list of texts (--extra-captions' `captions` column: SimpleTuner takes a list cell)."""
    return _is_text(kind) or (pa.types.is_list(kind) and _is_text(kind.value_type))


def _blank_captions(captions: pa.Array) -> pa.Array:
    """Per row: whether the caption is empty or blank (a list: empty, or any of its captions is)."""
    if not pa.types.is_list(captions.type):
        return pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(captions)), 0)
    blank = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(pc.list_flatten(captions))), 0), True)
    rows = pc.filter(pc.list_parent_indices(captions), blank)
    return pc.or_(pc.is_in(pa.array(range(len(captions))), value_set=rows), pc.equal(pc.list_value_length(captions), 0))


def _open_parquet(target: Target, check: Check) -> pq.ParquetFile | None:
    path = target.parquet
    if path.is_dir():
        check.fail(f"{path} is a directory; SimpleTuner reads ONE parquet file")
        return None
    try:
        pf = pq.ParquetFile(path)
    except FileNotFoundError:
        check.fail(f"{path} does not exist")
        return None
    except (OSError, pa.ArrowException) as exc:
        check.fail(f"{path} cannot be read as parquet: {exc}")
        return None
    schema = pf.schema_arrow
    usable = True
    for name, want in (
        (target.filename, _is_text),
        (target.caption, _is_caption),
        (target.width, pa.types.is_integer),
        (target.height, pa.types.is_integer),
    ):
        if name not in schema.names:
            check.fail(f"{path}: no column {name!r} (columns: {', '.join(schema.names)})")
            usable = False
        elif not want(schema.field(name).type):
            check.fail(f"{path}: column {name!r} has type {schema.field(name).type}")
            usable = False
    try:
        import pandas  # noqa: F401  (SimpleTuner reads the parquet with pandas)
    except ImportError:
        pass
    else:
        try:
            schema.empty_table().to_pandas()
        except Exception as exc:  # any failure here is pandas refusing the schema
            check.fail(f"{path}: pandas cannot load this schema: {exc}")
    if pf.metadata.num_rows == 0:
        check.fail(f"{path} has 0 rows: SimpleTuner would have nothing to train on (see rejects.jsonl for why)")
    return pf if usable else None


def _fail_where(check: Check, mask: pa.Array, filenames: pa.Array, why: str) -> None:
    """Fail `check` for each row where `mask` is true or null."""
    hits = pc.indices_nonzero(pc.fill_null(mask, True))
    names = filenames.take(hits[:MAX_EXAMPLES]).to_pylist()
    check.fail(*(f"{name}: {why}" for name in names), count=len(hits))


def _check_rows(
    pf: pq.ParquetFile, target: Target, disk: set[str], report: VerifyReport, progress: Callable[[int], None]
) -> Counter[str]:
    """Stream the rows: caption and size checks per batch, then match each row with an image on disk.

    Returns the rows per shard (empty when the parquet has no `shard` column).
    """
    checks = report.checks
    has_shard = "shard" in pf.schema_arrow.names
    per_shard: Counter[str] = Counter()
    every = 1 if report.deep else max(1, pf.metadata.num_rows // HEADER_SAMPLE)
    root = target.data_dir
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=target.columns + (["shard"] if has_shard else [])):
        filenames, captions, widths, heights = (batch.column(i) for i in range(4))
        blank = _blank_captions(captions)
        _fail_where(checks["empty_caption"], blank, filenames, "null or empty caption")
        bad = pc.or_(pc.less_equal(widths, 0), pc.less_equal(heights, 0))
        _fail_where(checks["bad_size"], bad, filenames, "width or height missing or not positive")
        if has_shard:
            counts = pc.value_counts(batch.column(4))
            per_shard.update(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())))
        names = filenames.to_pylist()
        sizes = zip(widths.to_pylist(), heights.to_pylist())
        for row, (name, size) in enumerate(zip(names, sizes), start=report.counts["rows"]):
            if name is None:
                checks["missing_image"].fail(f"row {row}: null filename")
            elif name in disk:
                disk.remove(name)
                if row % every == 0 and size[0] and size[1] and size[0] > 0 and size[1] > 0:  # else bad_size
                    report.counts["headers_read"] += 1
                    _check_header(root / name, name, size, checks["header_size"])
            elif is_image_name(name) and (root / name).is_file():
                checks["duplicate_row"].fail(name)
            else:
                checks["missing_image"].fail(name)
        report.counts["rows"] += batch.num_rows
        progress(report.counts["rows"])
    checks["image_without_row"].fail(*heapq.nsmallest(MAX_EXAMPLES, disk), count=len(disk))
    return per_shard


def _check_shard_rows(layout: Layout, per_shard: Counter[str], report: VerifyReport) -> None:
    check = report.checks["shard_rows"]
    dropped = read_dedup_counts(layout)  # --dedup: rows the merge left out as duplicates of earlier shards
    records = {sid: rec.samples - dropped.get(sid, {}).get("dropped", 0) for sid, rec in all_records(layout).items()}
    report.counts["shards"] = len(records)
    for sid in sorted(set(records) | set(per_shard), key=lambda s: natural_key(str(s))):
        if sid not in records:
            check.fail(f"{sid}: {per_shard[sid]} row(s) but no completion record")
        elif per_shard[sid] != records[sid]:
            check.fail(f"{sid}: {per_shard[sid]} row(s), its completion record says {records[sid]}")


def _check_header(path: Path, name: str, size: tuple[int, int], check: Check) -> None:
    try:
        with open(path, "rb") as fh:
            header = imageheader.image_size(fh)
    except OSError as exc:
        check.fail(f"{name}: cannot be read ({exc.strerror or exc})")
        return
    if header is None:
        check.fail(f"{name}: the image header cannot be read")
    elif header != size:
        check.fail(f"{name}: row says {size[0]}x{size[1]}, the image header {header[0]}x{header[1]}")


def _check_imagefolder(layout: Layout, pf: pq.ParquetFile, check: Check) -> None:
    """With --also imagefolder: OUT/data/metadata.jsonl holds one line per parquet row, in order, with the row's
    file, caption(s) and size, as `datasets`' imagefolder loader and diffusers' scripts read it."""
    if "imagefolder" not in (pinned_settings(layout).get("also") or ()):
        check.skip("not made with --also imagefolder")
        return
    path = layout.imagefolder_metadata
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        check.fail(f"{path} is missing (`dalle3-etl entry {layout.out} --also imagefolder` writes it)")
        return
    text = "captions" if "captions" in pf.schema_arrow.names else "caption"
    columns = ["filename", text, "width", "height"]
    rows = (row for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns) for row in batch.to_pylist())
    for n, (line, row) in enumerate(zip(lines, rows)):
        try:
            got = orjson.loads(line)
        except orjson.JSONDecodeError:
            check.fail(f"line {n + 1}: not JSON")
            continue
        want = {"file_name": row["filename"], "text": row[text], "width": row["width"], "height": row["height"]}
        if any(got.get(k) != v for k, v in want.items()):
            check.fail(f"line {n + 1}: {got.get('file_name')!r} differs from the parquet's row {row['filename']!r}")
    if len(lines) != pf.metadata.num_rows:
        check.fail(f"{path} has {len(lines):,} line(s), the parquet {pf.metadata.num_rows:,} row(s)")


def _check_webshart_parquet(layout: Layout, report: VerifyReport) -> None:
    """The parquet of a --webshart output (not in its entry): readable, captions and sizes."""
    target = Target(layout.data, layout.parquet(pinned_parquet(layout).name), "parquet")
    pf = _open_parquet(target, report.checks["parquet"])
    if pf is None:
        return
    check_train_size(layout, pf, target.width, target.height, report.checks["train_size"])
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=target.columns):
        filenames, captions, widths, heights = batch.columns
        _fail_where(report.checks["empty_caption"], _blank_captions(captions), filenames, "null or empty caption")
        bad = pc.or_(pc.less_equal(widths, 0), pc.less_equal(heights, 0))
        _fail_where(report.checks["bad_size"], bad, filenames, "width or height missing or not positive")


def verify(
    out: Path,
    *,
    deep: bool = False,
    mount_path: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> VerifyReport:
    """Run every check on an output directory (the caller has made sure it is one); the entry checked as
    written for `mount_path` (the path OUT will have on the training machine) when given."""
    out = Path(out).absolute()
    layout = Layout(out)
    report = VerifyReport(out=out, deep=deep, running=lock_holder(layout))
    checks = report.checks
    say = progress or (lambda _text: None)

    if is_webshart(layout):  # the images stay in the tars: the indexes are checked instead (check.webshart)
        _check_state(layout, checks["stray_file"])
        _check_webshart_parquet(layout, report)
        verify_webshart(layout, report, Path(os.path.normpath(mount_path)) if mount_path is not None else None)
        return report
    checks["webshart"].skip("not made with --webshart")
    target, problems = read_target(out, mount_path)
    for problem in problems:
        checks["dataloader"].fail(problem)
    _check_state(layout, checks["stray_file"])

    textfile = target.caption_strategy == "textfile"
    if not textfile:
        for code in CAPTION_FILE_CHECKS:
            checks[code].skip("caption_strategy is parquet")
    several = bool(pinned_settings(layout).get("extra_captions"))
    if several:
        checks["multiline_caption_file"].skip("made with --extra-captions: one caption a line")
    disk = _walk_images(
        target,
        report,
        lambda n: say(f"looking for images under {target.data_dir}: {n:,} so far"),
        several,
        _row_names(target) if input_folder(layout) is not None else None,
    )
    left = report.counts.get("input_images_without_row", 0)
    if left and not textfile:
        checks["image_without_row"].warn(
            f"{left:,} image(s) in the input folder have no row (rejected samples, see rejects.jsonl): "
            "SimpleTuner skips each with a 'Could not load caption' error line; a trainer that reads every "
            "image of the folder would take them without a caption",
            left,
        )

    say(f"reading {target.parquet}")
    pf = _open_parquet(target, checks["parquet"])
    if pf is None:
        for code in ROW_CHECKS:
            checks[code].skip("the parquet cannot be used")
        return report
    total = pf.metadata.num_rows
    check_train_size(layout, pf, target.width, target.height, checks["train_size"])
    _check_imagefolder(layout, pf, checks["imagefolder"])
    per_shard = _check_rows(pf, target, disk, report, lambda n: say(f"checked {n:,} of {total:,} rows"))

    if "shard" in pf.schema_arrow.names:
        _check_shard_rows(layout, per_shard, report)
    else:
        checks["shard_rows"].skip("the parquet has no 'shard' column")
    if checks["missing_image"].status == "failed":
        if pinned_settings(layout).get("images") is False:
            checks["missing_image"].note = (
                "converted with --no-images: point instance_data_dir at the folder "
                "holding the images, laid out as the filename column says"
            )
    return report


def _row_names(target: Target) -> set[str] | None:
    """--link none: the parquet's filenames (the input folder's other images are its rejected samples')."""
    try:
        return set(pq.read_table(target.parquet, columns=[target.filename]).column(0).to_pylist())
    except (OSError, KeyError, pa.ArrowException):
        return None


__all__ = ["is_temp_name", "verify"]
