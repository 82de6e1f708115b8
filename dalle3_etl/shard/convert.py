"""One shard end to end: members -> samples -> rows + files, staged, then committed atomically.

Follow one sample top to bottom in `ShardConverter.run`: each tar member is classified
(`samples.classify`), JSON members are parsed once (`records.parse_json`), image members are left in
the tar (seekable input: only their offset is kept, the body is copied later with `copy_range`) or
staged to disk as they stream past (non-seekable input). When both halves of a sample are there,
`_finish` picks the size (JSON, else image header), writes the image and caption file into the
shard's staging folder and appends the row to the shard's parquet part. `commit` then moves all of it
into place and writes the completion record last.
"""

from __future__ import annotations

import errno
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson

from dalle3_etl.shard import imageheader

from dalle3_etl.shard import tarstream
from dalle3_etl.shard.tarcompress import open_tar
from dalle3_etl.shard.rows import JsonInfo, Reason, Reject, parse_json
from dalle3_etl.shard.samples import Duplicate, Entry, Pairing, classify
from dalle3_etl.settings import Settings
from dalle3_etl.shard.commit import forget_shard, move_in_shard_files
from dalle3_etl.shard.sinks import NEW_FILE, FileTree, PartWriter, caption_relpath
from dalle3_etl.sources.base import ShardSource
from dalle3_etl.store.layout import Layout, crash_point, sync_filesystem, write_record

PROGRESS_EVERY = 0.25  # seconds between progress reports from a worker
#: Folders a member name may go down. Deeper trees break tools that walk or delete folders recursively
#: (Python's os.walk before 3.12 and shutil.rmtree before 3.13 stop near 1,000 levels): such a name is
#: name_unusable, whatever the file system allows.
MAX_FOLDER_DEPTH = 256
# Errors creating an output file that come from the member's NAME (reject that sample), not from the
# disk (ENOSPC, EIO, EFBIG...: those fail the shard, which is redone next run).
_CLASH_ERRNOS = frozenset((errno.EEXIST, errno.ENOTDIR, errno.EISDIR))
_NAME_ERRNOS = _CLASH_ERRNOS | {errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL}
_EQUIVALENT_EXT = {"jpeg": "jpg"}

ProgressFn = Callable[[str, int, int], None]  # (shard id, bytes read, samples written)


@dataclass
class ShardResult:
    shard_id: str
    ok: bool
    samples: int = 0
    rejects: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)  # not rejects: size_from_header, other_members
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    error: str | None = None  # the shard could not be read to the end (good samples before it are kept)
    failure: str | None = None  # nothing committed (I/O error on output, crash): the shard is redone next run

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(slots=True)
class ImageRef:
    offset: int = -1  # seekable input: where the body is in the tar
    size: int = 0
    staged: str | None = None  # streamed input: staged copy of the body
    probed: bool = False  # streamed input without images: the size was probed as the body went by ...
    probe: tuple[int, int] | None = None  # ... with this result (None: header unreadable)


def source_fingerprint(src: ShardSource) -> dict[str, Any]:
    return dict(src.fingerprint)


class ShardConverter:
    def __init__(self, src: ShardSource, layout: Layout, settings: Settings, progress: ProgressFn | None = None):
        self.src = src
        self.layout = layout
        self.settings = settings
        self.progress = progress
        self.shard_id = src.shard_id
        self.counts: Counter[str] = Counter()  # rejects by reason
        self.notes: Counter[str] = Counter()
        self.samples = 0
        self.bytes_out = 0
        self.staging = layout.staging(self.shard_id)
        self.files = FileTree(self.staging / "files", layout.fs)
        self.prefix = "" if settings.flat else f"{self.shard_id}/"
        self.write_files = settings.images or settings.captions
        self._pending_seq = 0
        self._rejects_fh = None
        self._reader: tarstream.TarReader | None = None

    # -- output helpers ---------------------------------------------------------------------------

    def _reject(self, member: str, reason: str, detail: str) -> None:
        self.counts[reason] += 1
        line = {"shard": self.shard_id, "member": _printable(member), "reason": reason, "detail": _printable(detail)}
        self._rejects_fh.write(orjson.dumps(line) + b"\n")

    def _discard(self, ref: Any) -> None:
        if isinstance(ref, ImageRef) and ref.staged:
            self.layout.fs.unlink(ref.staged)
            ref.staged = None

    # -- reading ----------------------------------------------------------------------------------

    def _image_ref(self, reader: tarstream.TarReader, member: tarstream.Member, ext: str,
                   need_size: bool) -> ImageRef | Reject:
        """The image member being read: its signature is checked (`ext`: its extension, lower case), then
        it is left in the tar (seekable), staged (stream) or, streaming without images, probed now."""
        head = reader.read(imageheader.SIGNATURE_BYTES)  # seekable: usually in the header's read-ahead
        problem = imageheader.signature_problem(ext, head)
        if problem is not None:
            return Reject(Reason.IMAGE_INVALID, problem)
        if reader.seekable:
            return ImageRef(offset=member.offset, size=member.size)
        if self.settings.images:
            self._pending_seq += 1
            path = os.path.join(self.staging, "pending", f"{self._pending_seq}")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(head)
                reader.copy_to(fh)
            return ImageRef(size=member.size, staged=path)
        # Streaming without copying images: probe now (if the size may be needed), as far as the header
        # goes, and keep no bytes, so a member waiting for its JSON costs no memory.
        probe = imageheader.probe_stream(reader.read, member.size, head) if need_size else None
        return ImageRef(size=member.size, probed=True, probe=probe)

    def _probe_size(self, ref: ImageRef) -> tuple[int, int] | None:
        if ref.probed:
            return ref.probe
        if ref.offset >= 0:
            return imageheader.probe_range(self._reader.pread, ref.offset, ref.size)
        if ref.staged:
            fd = os.open(ref.staged, os.O_RDONLY)
            try:
                return imageheader.probe_range(lambda offset, n: os.pread(fd, n, offset), 0, ref.size)
            finally:
                os.close(fd)
        return None

    def _write_sample(self, filename: str, ref: ImageRef, caption: str) -> int:
        """Write the image and caption files of one sample; returns bytes written.

        Every file is new (O_EXCL): a name already taken, also by a twin that differs only in case or
        Unicode normalization on a case-insensitive file system, raises EEXIST and replaces nothing.
        On an error that does not come from the disk (a name error, see _NAME_ERRNOS, or any other
        exception) the files of this sample are removed before it is re-raised, so the caller can
        reject the sample and go on."""
        created: list[str] = []
        written = 0
        try:
            if self.settings.images:
                dst = self.files.path(filename)
                if ref.staged:
                    os.close(os.open(dst, NEW_FILE, 0o644))  # claim the name, then move the image onto it
                    created.append(dst)
                    self.layout.fs.replace(ref.staged, dst)
                    ref.staged = None
                else:
                    fd = os.open(dst, NEW_FILE, 0o644)
                    created.append(dst)
                    try:
                        self._reader.copy_range(ref.offset, ref.size, fd)
                    finally:
                        os.close(fd)
                written += ref.size
            if self.settings.captions:
                written += self.files.write_text(caption_relpath(filename), caption)
        except Exception as exc:
            if not _disk_error(exc):
                for path in created:
                    self.layout.fs.unlink(path)
                self.files.prune(filename)
            raise
        return written

    def _finish(self, entry: Entry) -> None:
        info = entry.json.payload
        ref: ImageRef = entry.image.payload
        image_member = entry.image.member
        if type(info) is not JsonInfo or type(ref) is not ImageRef:  # a member at fault: one line for each
            self._discard(ref)
            for part in (entry.image, entry.json):
                if isinstance(part.payload, Reject):
                    self._reject(part.member, part.payload.reason, part.payload.detail)
            return
        if info.caption is None:
            self._discard(ref)
            self._reject(image_member, Reason.NO_CAPTION, f"no usable caption ({info.caption_detail})")
            return
        width, height = info.width, info.height
        if width is None:
            size = self._probe_size(ref)
            if size is None:
                self._discard(ref)
                self._reject(image_member, Reason.SIZE_UNREADABLE,
                             f"{info.size_detail}, and the image header cannot be read")
                return
            width, height = size
            limit = self.settings.max_dimension
            if width > limit or height > limit:
                self._discard(ref)
                self._reject(image_member, Reason.SIZE_INVALID,
                             f"{info.size_detail}, and the image header says {width}x{height}, above {limit}")
                return
            self.notes["size_from_header"] += 1
            if info.size_invalid:
                self.notes["json_size_invalid"] += 1  # converted with the header's size
        ext = image_member[image_member.rfind(".") :]
        if info.image_ext is not None and not _same_ext(info.image_ext, ext[1:]):
            self.notes["image_name_ext_differs"] += 1  # the member's name wins: image_name is not known to always match it
        filename = f"{self.prefix}{entry.key}{ext}"
        if len(image_member) > 2 * MAX_FOLDER_DEPTH and image_member.count("/") > MAX_FOLDER_DEPTH:
            self._discard(ref)
            self._reject(image_member, Reason.NAME_UNUSABLE,
                         f"the name is {image_member.count('/')} folders deep, more than {MAX_FOLDER_DEPTH} (deeper "
                         f"folder trees break tools that walk or delete folders recursively)")
            return
        try:
            if self.write_files:
                self.bytes_out += self._write_sample(filename, ref, info.caption)
        except OSError as exc:
            if exc.errno not in _NAME_ERRNOS:
                raise  # the disk, not the name: the shard fails and is redone next run
            self._discard(ref)
            clash = exc.errno in _CLASH_ERRNOS
            why = (" (the path is taken by another member's file or folder; on a case-insensitive file system "
                   "names that differ only in letter case or Unicode normalization are the same)" if clash else "")
            self._reject(image_member, Reason.NAME_CLASH if clash else Reason.NAME_UNUSABLE,
                         f"cannot create {filename!r} in the output: {exc.strerror}{why}")
            return
        self.part.add((filename, info.caption, width, height, entry.key, self.shard_id, info.source,
                       *info.extras.values()))
        self.samples += 1
        crash_point("sample", self.shard_id, self.samples)

    def _report_unpaired(self, entry: Entry, where: str) -> None:
        """Report the members of an entry that never got its partner (`where`: "in this shard"...)."""
        for part, reason, missing in ((entry.image, Reason.IMAGE_WITHOUT_JSON, "JSON"),
                                      (entry.json, Reason.JSON_WITHOUT_IMAGE, "image")):
            if part is None:
                continue
            detail = entry.why or f"no {missing} member with key {entry.key!r} {where}"
            if isinstance(part.payload, Reject):  # the member was bad itself: that is the reason
                self._reject(part.member, part.payload.reason, f"{part.payload.detail} (also: {detail})")
            else:
                self._reject(part.member, reason, detail)
        if entry.image is not None:
            self._discard(entry.image.payload)

    def _settle(self, done: Entry | None, problems: list[Entry | Duplicate]) -> None:
        """Act on what `Pairing.add` gave back: report the problems, convert the completed sample."""
        for problem in problems:
            if isinstance(problem, Duplicate):
                self._discard(problem.payload)
                self._reject(problem.member, Reason.DUPLICATE_MEMBER, problem.reason)
            else:
                self._report_unpaired(problem, "")
        if done is not None:
            self._finish(done)

    def _sample_failed(self, exc: Exception, member: tarstream.Member, pairing: Pairing, done: Entry | None,
                       problems: list | None) -> None:
        """An unexpected error while handling one member or sample: reject that sample, go on."""
        why = _describe_error(exc)
        if done is not None:  # converting a paired sample: _write_sample has removed its files
            ref = done.image.payload
            if isinstance(ref, ImageRef) and ref.staged:
                self.layout.fs.unlink(ref.staged)
            self._reject(done.image.member, Reason.SAMPLE_ERROR,
                         f"unexpected error converting the sample of {done.image.member!r} and "
                         f"{done.json.member!r}: {why}")
            return
        why = f"unexpected error reading member {member.name!r}: {why}"
        key, role, _ = classify(member.name)
        added = None
        if problems is None and role is not None:
            # Not paired yet: it goes in as a rejected member, so its partner is reported with it, on one line.
            try:
                added = pairing.add(key, role, member.name, Reject(Reason.SAMPLE_ERROR, why))
            except Exception:  # the pairing itself failed: a line for this member alone
                pass
        if added is None:
            self._reject(member.name, Reason.SAMPLE_ERROR, why)
        else:
            self._settle(*added)

    def _convert_members(self, reader: tarstream.TarReader) -> None:
        settings = self.settings
        pairing = Pairing(settings.max_pending)
        last = time.monotonic()
        try:
            for member in reader:
                if self.progress is not None:
                    now = time.monotonic()
                    if now - last >= PROGRESS_EVERY:
                        self.progress(self.shard_id, reader.position, self.samples)
                        last = now
                done = problems = None
                try:  # one sample's trouble, whatever it is, rejects that sample, never the shard
                    if member.kind == "dir" and member.problem is None:
                        self.notes["other_members"] += 1  # never created; files make their own folders
                        continue
                    key, role, ext = classify(member.name)
                    weight = 0
                    payload: Any
                    if member.problem is not None:
                        payload = Reject(Reason.UNSAFE_MEMBER, member.problem)
                        if role is None:
                            self._reject(member.name, payload.reason, payload.detail)
                            continue
                        # else it takes its partner down with it: one line for the sample, not two
                    elif role is None:
                        self.notes["other_members"] += 1
                        continue
                    elif role == "json":
                        if member.size > settings.max_json_bytes:  # skipped unread, in stream mode too
                            payload = Reject(Reason.JSON_TOO_LARGE, f"JSON member is {member.size} bytes, more "
                                                                    f"than max_json_bytes={settings.max_json_bytes}; "
                                                                    f"not read")
                        else:
                            data = reader.read()
                            weight = len(data)
                            payload = parse_json(data, settings)
                    else:
                        waiting = pairing.pending.get(key)
                        json_part = waiting.json if waiting is not None else None
                        need_size = not (json_part is not None and (isinstance(json_part.payload, Reject)
                                                                    or json_part.payload.width is not None))
                        payload = self._image_ref(reader, member, ext.lower(), need_size)
                    done, problems = pairing.add(key, role, member.name, payload, weight)
                    self._settle(done, problems)
                except Exception as exc:
                    if _fails_the_shard(exc):
                        raise
                    self._sample_failed(exc, member, pairing, done, problems)
        except tarstream.TarFormatError as exc:
            for entry in pairing.leftovers():
                self._report_unpaired(entry, f"before the shard became unreadable at offset {exc.offset}")
            raise
        for entry in pairing.leftovers():
            self._report_unpaired(entry, "in this shard")

    # -- the whole shard ----------------------------------------------------------------------------

    def run(self) -> ShardResult:
        start = time.monotonic()
        layout = self.layout
        forget_shard(layout, self.shard_id, self.settings)
        self.staging.mkdir(parents=True)
        error = None
        self._rejects_fh = open(self.staging / "rejects.jsonl", "wb")
        self.part = PartWriter(self.staging / "part.parquet", self.settings)
        try:
            with self.src.open() as fh:
                try:
                    self._reader = reader = open_tar(fh)
                    self._convert_members(reader)
                except tarstream.TarFormatError as exc:
                    error = f"{self.src.uri}: {exc}"
                    self._reject(exc.member or f"@{exc.offset}", "shard_unreadable", str(exc))
            self.part.close()
            self._rejects_fh.close()
            crash_point("staged", self.shard_id)
            self.commit()
        except BaseException:
            self._rejects_fh.close()
            self.part.abort()
            raise
        result = ShardResult(
            shard_id=self.shard_id, ok=True, samples=self.samples, rejects=dict(sorted(self.counts.items())),
            notes=dict(sorted(self.notes.items())),
            bytes_in=self.src.size, bytes_out=self.bytes_out, seconds=time.monotonic() - start, error=error,
        )
        sync_filesystem(layout.state)  # the record must never reach the disk before the files it describes
        crash_point("committed", self.shard_id)
        write_record(layout, self.shard_id, {
            "shard": self.shard_id, "source": source_fingerprint(self.src), "settings": self.settings.output_fingerprint(),
            "samples": self.samples, "rejects": result.rejects, "notes": result.notes, "error": error, "published": not self.settings.flat,
        })
        crash_point("recorded", self.shard_id)
        return result

    def commit(self) -> None:
        """Move the staged part, rejects and files into place. The record is written after this."""
        layout, sid, fs = self.layout, self.shard_id, self.layout.fs
        fs.remove_tree(self.staging / "pending")
        files = self.staging / "files"
        if self.settings.flat:
            if files.exists():
                fs.rename_new(files, layout.flat_files(sid))
        elif self.write_files:
            move_in_shard_files(layout, sid, files / sid)
        crash_point("commit", sid)
        fs.replace(self.staging / "part.parquet", layout.part(sid))
        fs.replace(self.staging / "rejects.jsonl", layout.rejects(sid))
        fs.remove_tree(self.staging)


def _printable(text: str) -> str:
    """Text safe to write as JSON: a name with non-UTF-8 bytes shows them as \\xNN escapes."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape" if _only_escapes(text) else "surrogatepass").decode(
            "utf-8", "backslashreplace")


def _only_escapes(text: str) -> bool:
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def _disk_error(exc: BaseException) -> bool:
    """An OSError from the disk (ENOSPC, EIO, EROFS, EFBIG...), not from a member's name."""
    return isinstance(exc, OSError) and exc.errno is not None and exc.errno not in _NAME_ERRNOS


def _fails_the_shard(exc: Exception) -> bool:
    """Not one sample's trouble: the disk failing (the shard is redone next run), the tar damaged (handled
    by `run`), memory running out."""
    return _disk_error(exc) or isinstance(exc, (tarstream.TarFormatError, MemoryError))


def _describe_error(exc: Exception) -> str:
    """`Type: message (at file:line in function)`, the innermost frame, for a sample_error detail."""
    message = str(exc)
    if len(message) > 300:
        message = message[:297] + "..."
    tb = exc.__traceback__
    where = ""
    if tb is not None:
        while tb.tb_next is not None:
            tb = tb.tb_next
        code = tb.tb_frame.f_code
        where = f" (at {os.path.basename(code.co_filename)}:{tb.tb_lineno} in {code.co_name})"
    return f"{type(exc).__name__}: {message}{where}"


def _same_ext(a: str, b: str) -> bool:
    """Extensions naming the same format ('jpg', 'JPG', 'jpeg'); equal strings need no more work."""
    if a == b:
        return True
    a, b = a.lower(), b.lower()
    return _EQUIVALENT_EXT.get(a, a) == _EQUIVALENT_EXT.get(b, b)


def convert_shard(src: ShardSource, out: Path, settings: Settings, progress: ProgressFn | None = None) -> ShardResult:
    """Convert and commit one shard. Output I/O errors give a failed result; nothing partial survives."""
    layout = Layout(Path(out))
    try:
        return ShardConverter(src, layout, settings, progress).run()
    except OSError as exc:
        forget_shard(layout, src.shard_id, settings)
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return ShardResult(shard_id=src.shard_id, ok=False, failure=f"{type(exc).__name__}: {exc.strerror or exc}{where}")
