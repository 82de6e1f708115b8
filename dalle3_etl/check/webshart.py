"""Checks of a `--webshart` output (`verify` and `status`): the indexes still describe the tars.

Every offset of an index is only right for the tar it was made from: a tar changed after indexing (size or
mtime other than its completion record's) is reported by `status` and fails `verify`. `verify` also reads, for
every entry, the 512-byte tar header just before its offset:

- the header's checksum is valid, it is a regular file, and its size field is the entry's `length`;
- its name matches: equal to the entry's member name; for a name a ustar header cannot hold (over 100 bytes,
  or not ASCII), which the tar carries in a GNU long-name or pax record before that header, the header's
  own (truncated) name must be a non-empty start of the member name (its UTF-8 bytes, or with each non-ASCII
  character as '?', which is how Python's tarfile and GNU tar fill it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from dalle3_etl.check.report import MAX_EXAMPLES, Check, VerifyReport
from dalle3_etl.run.dedup import read_dedup_counts
from dalle3_etl.run.webshart import read_tars
from dalle3_etl.sources.base import natural_key
from dalle3_etl.store.layout import Layout
from dalle3_etl.store.manifest import pinned_settings
from dalle3_etl.store.records import all_records

BLOCK = 512


def is_webshart(layout: Layout) -> bool:
    return bool(pinned_settings(layout).get("webshart"))


def changed_tars(layout: Layout) -> dict[str, str]:
    """Completed shards whose tar is gone or changed (size or mtime) since it was indexed: shard id -> why."""
    tars = read_tars(layout)
    source = tars.get("source")
    if not source:
        return {}
    out = {}
    for sid, rec in all_records(layout).items():
        path = os.path.join(source, tars.get("tars", {}).get(sid, f"{sid}.tar"))
        was = rec.source or {}
        try:
            st = os.stat(path)
        except OSError as exc:
            out[sid] = f"its tar {path} cannot be read ({exc.strerror or exc}): webshart cannot train on it"
            continue
        if was.get("size") not in (None, st.st_size) or was.get("mtime_ns") not in (None, st.st_mtime_ns):
            out[sid] = (
                f"its tar {path} changed after it was indexed (size {was.get('size')} -> {st.st_size}, or its "
                "mtime): every offset may be wrong; convert it again"
            )
    return out


def _header_name(header: bytes) -> bytes:
    name = header[:100].split(b"\0", 1)[0]
    if header[257:263] == b"ustar\0":  # POSIX ustar: a prefix (155 bytes) goes before the name
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name


def _checksum_ok(header: bytes) -> bool:
    try:
        stored = int(header[148:156].split(b"\0", 1)[0].strip() or b"-1", 8)
    except ValueError:
        return False
    return stored == sum(header[:148]) + 8 * 32 + sum(header[156:])


def header_problem(header: bytes, name: str, length: int) -> str | None:
    """Why the 512 bytes before an entry's offset are not the header of that member, or None."""
    if len(header) < BLOCK or not _checksum_ok(header):
        return "no valid tar header just before its offset"
    if header[156:157] not in (b"0", b"\0"):
        return f"the header before its offset is not a regular file (type {header[156:157]!r})"
    size_field = header[124:136]
    if size_field[:1] != b"\x80" and int(size_field.split(b"\0", 1)[0].strip() or b"0", 8) != length:
        return "the header before its offset gives another size than the index's length"
    got = _header_name(header)
    wanted = name.encode("utf-8", "surrogateescape")
    if os.path.normpath(got.decode("utf-8", "surrogateescape")).lstrip("/") == name:
        return None
    carried = len(wanted) > 100 or not name.isascii()  # in a GNU long-name or pax record before the header
    if carried and got and (wanted.startswith(got) or name.encode("ascii", "replace").startswith(got)):
        return None
    return f"the header before its offset names {got[:100]!r}"


def _check_entries(fh, sid: str, files: dict[str, Any], size: int, check: Check) -> None:
    for name, info in files.items():
        offset, length = info.get("offset"), info.get("length")
        if not isinstance(offset, int) or not isinstance(length, int) or offset < BLOCK or offset + length > size:
            check.fail(f"{sid}: {name!r}: offset/length missing or outside the tar")
            continue
        problem = header_problem(os.pread(fh, BLOCK, offset - BLOCK), name, length)
        if problem is not None:
            check.fail(f"{sid}: {name!r}: {problem}")
        w, h, captions = info.get("width"), info.get("height"), info.get("captions")
        if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
            check.fail(f"{sid}: {name!r}: no width/height (webshart skips it as metadata_missing)")
        texts = captions if isinstance(captions, list) else [captions]
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            check.fail(f"{sid}: {name!r}: no caption, or an empty one (webshart skips it)")


def _check_index(layout: Layout, source: str, sid: str, tar: str, check: Check) -> int:
    """One shard's index against its tar; returns its number of entries."""
    try:
        index = orjson.loads(layout.webshart_index(sid).read_bytes())
        files = index["files"]
        assert isinstance(files, dict)
    except FileNotFoundError:
        check.fail(f"{sid}: no index {layout.webshart_index(sid)} (`dalle3-etl convert ... --webshart` writes it)")
        return 0
    except (orjson.JSONDecodeError, KeyError, TypeError, AssertionError):
        check.fail(f"{sid}: {layout.webshart_index(sid)} is not a webshart index")
        return 0
    path = os.path.join(source, tar)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        check.fail(f"{sid}: its tar {path} cannot be read ({exc.strerror or exc})")
        return len(files)
    try:
        size = os.fstat(fd).st_size
        if index.get("path") != tar or index.get("filesize") != size:
            check.fail(f"{sid}: the index says {index.get('path')!r}, {index.get('filesize')} bytes; {tar} has {size}")
        _check_entries(fd, sid, files, size, check)
    finally:
        os.close(fd)
    return len(files)


def _check_entry(layout: Layout, source: str, check: Check, mount: Path | None = None) -> None:
    """multidatabackend.json holds the webshart entry of this output (written for `mount`, the path OUT will have
    on the training machine, when given: `metadata` is then under it; the tars' folder is outside OUT, so it must
    be the same absolute path there as here)."""
    try:
        entries = orjson.loads(layout.dataloader_config.read_bytes())
        entry = next(e for e in entries if isinstance(e, dict) and e.get("type") == "webshart")
    except (OSError, orjson.JSONDecodeError, TypeError, StopIteration):
        check.fail(f"{layout.dataloader_config}: no webshart entry (`dalle3-etl entry {layout.out}` writes it)")
        return
    got = entry.get("source")
    if not isinstance(got, str) or not os.path.isabs(got) or not os.path.isdir(got):
        check.fail(f"source {got!r}: not an absolute path of an existing folder")
    elif os.path.realpath(got) != os.path.realpath(source):
        check.fail(f"source {got!r}: this output's tars are in {source}")
    got = entry.get("metadata")
    if mount is not None:
        want = str(mount / layout.webshart_dir.relative_to(layout.out))
        if got != want:
            fix = f"`dalle3-etl entry {layout.out} --mount-path {mount}`"
            check.fail(f"metadata {got!r}: for --mount-path {mount} it must be {want}; write it with {fix}")
    elif not isinstance(got, str) or not os.path.isabs(got) or not os.path.isdir(got):
        check.fail(f"metadata {got!r}: not an absolute path of an existing folder")
    elif os.path.realpath(got) != os.path.realpath(layout.webshart_dir):
        check.fail(f"metadata {got!r}: this output's is {layout.webshart_dir.resolve()}")
    if entry.get("caption_strategy") != "webshart" or entry.get("metadata_backend") != "webshart":
        check.fail("caption_strategy and metadata_backend must be 'webshart'")


def verify_webshart(layout: Layout, report: VerifyReport, mount: Path | None = None) -> None:
    """The `webshart` check (and `dataloader`, `shard_rows` for a webshart output); the checks of images and
    caption files on disk are skipped: the images stay in the tars."""
    checks = report.checks
    for code in ("missing_image", "duplicate_row", "image_without_row", "header_size", "imagefolder"):
        checks[code].skip("--webshart: the images stay in the tars")
    for code in ("missing_caption_file", "empty_caption_file", "multiline_caption_file"):
        checks[code].skip("--webshart: captions are in the indexes")
    check = checks["webshart"]
    tars = read_tars(layout)
    source = tars.get("source", "")
    _check_entry(layout, source, checks["dataloader"], mount)
    for sid, why in changed_tars(layout).items():
        check.fail(f"{sid}: {why}")
    dropped = read_dedup_counts(layout)
    for sid, rec in sorted(all_records(layout).items(), key=lambda kv: natural_key(kv[0])):
        entries = _check_index(layout, source, sid, tars.get("tars", {}).get(sid, f"{sid}.tar"), check)
        report.counts["rows"] += entries
        want = rec.samples - dropped.get(sid, {}).get("dropped", 0)
        if entries != want:
            checks["shard_rows"].fail(f"{sid}: {entries} index entries, its completion record says {want}")
    report.counts["shards"] = len(all_records(layout))
    _check_folder(layout, source, set(tars.get("tars", {}).values()), check)


def _check_folder(layout: Layout, source: str, indexed: set[str], check: Check) -> None:
    """Every tar webshart finds in the source folder has an index (one without is skipped silently and shifts
    every later shard's number)."""
    try:
        names = sorted(n for n in os.listdir(source) if n.endswith(".tar"))
    except OSError as exc:
        check.fail(f"the tars' folder {source!r} cannot be listed ({exc.strerror or exc})")
        return
    missing = [n for n in names if n not in indexed or not layout.webshart_index(n[:-4]).is_file()]
    check.fail(*(f"{source}/{n}: no index (webshart skips it)" for n in missing[:MAX_EXAMPLES]), count=len(missing))


__all__ = ["changed_tars", "header_problem", "is_webshart", "verify_webshart"]
