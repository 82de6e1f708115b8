"""One finished sample to files and a row: its size (JSON, else image header), the filters (`shape`, before
anything is written), its image and caption files, created exclusively in the shard's staging folder, its row
in the shard's parquet part, and reject lines.

`SampleWriter` also takes an image member in as it is read (`image_ref`): its signature is checked, then it
is left in the tar (seekable input: only its offset is kept, the body is copied later with `copy_range`),
staged to disk as it streams past, or (streaming without images) probed for its size right away.
"""

from __future__ import annotations

import errno
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from dalle3_etl.settings import Settings
from dalle3_etl.shard import imageheader
from dalle3_etl.shard.folderstream import data_files
from dalle3_etl.shard.rows import JsonInfo, Reason, Reject
from dalle3_etl.shard.samples import Entry
from dalle3_etl.shard.shape import NOTE_PREFIX, Filters, filter_of
from dalle3_etl.shard.sinks import NEW_FILE, FileTree, PartWriter, caption_relpath
from dalle3_etl.shard.tarstream import Member, TarReader
from dalle3_etl.store.crash import crash_point
from dalle3_etl.store.layout import Layout

#: Folders a member name may go down. Deeper trees break tools that walk or delete folders recursively
#: (Python's os.walk before 3.12 and shutil.rmtree before 3.13 stop near 1,000 levels): such a name is
#: name_unusable, whatever the file system allows.
MAX_FOLDER_DEPTH = 256
# Errors creating an output file that come from the member's NAME (reject that sample), not from the
# disk (ENOSPC, EIO, EFBIG...: those fail the shard, which is redone next run).
_CLASH_ERRNOS = frozenset((errno.EEXIST, errno.ENOTDIR, errno.EISDIR))
_NAME_ERRNOS = _CLASH_ERRNOS | {errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL}
_EQUIVALENT_EXT = {"jpeg": "jpg"}


@dataclass(slots=True)
class ImageRef:
    offset: int = -1  # seekable input: where the body is in the tar
    size: int = 0
    staged: str | None = None  # streamed input: staged copy of the body
    probed: bool = False  # streamed input without images: the size was probed as the body went by ...
    probe: tuple[int, int] | None = None  # ... with this result (None: header unreadable)
    at: int = -1  # where the body starts in the tar (stream or file), for --webshart's index


class SampleWriter:
    """Writes a shard's samples into its staging folder: files under `files/`, rows to `part.parquet`, reject
    lines to `rejects.jsonl`; counts rejects by reason (`counts`) and notes (`notes`)."""

    def __init__(self, shard_id: str, layout: Layout, settings: Settings, staging: Path):
        self.shard_id = shard_id
        self.layout = layout
        self.settings = settings
        self.staging = staging
        self.counts: Counter[str] = Counter()  # rejects by reason
        self.notes: Counter[str] = Counter()
        self.samples = 0
        self.bytes_out = 0
        self.files = FileTree(layout.staged_files(shard_id), layout.fs)
        # --link none: `filename` is the path in the input folder, nothing goes under OUT/data (shard.folderstream)
        self.prefix = "" if settings.flat or settings.link == "none" else f"{shard_id}/"
        self.images, self.captions = data_files(settings)
        # --link none --captions-in-place: the folder reader writes each caption beside its image
        self.captions_in_place = settings.captions_in_place and settings.captions
        self.write_files = self.images or self.captions or settings.captions_in_place
        self.reader: TarReader | None = None  # set once the shard is open: image bodies are copied from it
        self.stage_streamed = settings.images  # streamed image bodies staged until their JSON comes (else probed)
        self._pending_seq = 0
        filters = Filters.from_settings(self.settings)
        self.filters = filters if filters.active else None
        self.extra_captions = bool(self.settings.extra_captions)
        # --dedup: keys of this shard's rows so far; samples repeating one are listed in the dups file
        self._keys: set[bytes] = set()
        self._dups_fh = None
        self._open_sinks()

    def _open_sinks(self) -> None:
        """Where reject lines and rows go: the staged `rejects.jsonl` and parquet part (`shard.dry`: counted)."""
        self._rejects_fh = open(self.layout.staged_rejects(self.shard_id), "wb")
        self.part = PartWriter(self.layout.staged_part(self.shard_id), self.settings)
        if self.settings.dedup:
            self._dups_fh = open(self.layout.staged_dups(self.shard_id), "wb")

    def close(self) -> None:
        """Finish the part and the reject lines (the shard is read to its end)."""
        self.part.close()
        self._rejects_fh.close()
        if self._dups_fh is not None:
            self._dups_fh.close()

    def abort(self) -> None:
        """Close without finishing; what was written goes with the shard's staging folder."""
        self._rejects_fh.close()
        if self._dups_fh is not None:
            self._dups_fh.close()
        self.part.abort()

    def reject(self, member: str, reason: Reason, detail: str) -> None:
        self.counts[str(reason)] += 1  # the plain code: the counts are written as JSON keys (see Reason)
        line = {"shard": self.shard_id, "member": _printable(member), "reason": reason, "detail": _printable(detail)}
        self._rejects_fh.write(orjson.dumps(line) + b"\n")

    def discard(self, ref: Any) -> None:
        if isinstance(ref, ImageRef) and ref.staged:
            self.layout.fs.unlink(ref.staged)
            ref.staged = None

    # -- an image member, as it is read ----------------------------------------------------------------

    def image_ref(self, reader: TarReader, member: Member, ext: str, need_size: bool) -> ImageRef | Reject:
        """The image member being read: its signature is checked (`ext`: its extension, lower case), then
        it is left in the tar (seekable), staged (stream) or, streaming without images, probed now."""
        head = reader.read(imageheader.SIGNATURE_BYTES)  # seekable: usually in the header's read-ahead
        problem = imageheader.signature_problem(ext, head)
        if problem is not None:
            return Reject(Reason.IMAGE_INVALID, problem)
        if reader.seekable:
            return ImageRef(offset=member.offset, size=member.size, at=member.offset)
        if self.stage_streamed:
            self._pending_seq += 1
            path = os.path.join(self.layout.staged_pending(self.shard_id), f"{self._pending_seq}")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(head)
                reader.copy_to(fh)
            return ImageRef(size=member.size, staged=path, at=member.offset)
        # Streaming without copying images: probe now (if the size may be needed), as far as the header
        # goes, and keep no bytes, so a member waiting for its JSON costs no memory.
        probe = imageheader.probe_stream(reader.read, member.size, head) if need_size else None
        return ImageRef(size=member.size, probed=True, probe=probe, at=member.offset)

    # -- a finished sample -----------------------------------------------------------------------------

    # Over 60 lines: one sample's steps in order (member faults, caption, size, name, --dedup, files, row).
    def finish(self, entry: Entry) -> None:
        """Write a paired sample's files and row, or reject it (one line for each member at fault)."""
        info = entry.json.payload
        ref: ImageRef = entry.image.payload
        image_member = entry.image.member
        if type(info) is not JsonInfo or type(ref) is not ImageRef:  # a member at fault: one line for each
            self.discard(ref)
            for half in (entry.image, entry.json):
                if isinstance(half.payload, Reject):
                    self.reject(half.member, half.payload.reason, half.payload.detail)
            return
        if info.caption is None:
            self.discard(ref)
            self.reject(image_member, Reason.NO_CAPTION, f"no usable caption ({info.caption_detail})")
            return
        size = self._size(info, ref, image_member)
        if size is None:
            return
        width, height = size
        if self.filters is not None and self._filtered(info, width, height, ref, image_member):
            return
        ext = image_member[image_member.rfind(".") :]
        if info.image_ext is not None and not _same_ext(info.image_ext, ext[1:]):
            # the member's name wins: image_name is not known to always match it
            self.notes["image_name_ext_differs"] += 1
        filename = f"{self.prefix}{entry.key}{ext}"
        if len(image_member) > 2 * MAX_FOLDER_DEPTH and image_member.count("/") > MAX_FOLDER_DEPTH:
            self.discard(ref)
            self.reject(
                image_member,
                Reason.NAME_UNUSABLE,
                f"the name is {image_member.count('/')} folders deep, more than {MAX_FOLDER_DEPTH} (deeper "
                f"folder trees break tools that walk or delete folders recursively)",
            )
            return
        if self.settings.dedup and self._repeated(info.dedup_key, image_member, ref):
            return
        try:
            if self.write_files:
                self.bytes_out += self._write_sample(filename, ref, self._caption_text(info))
        except OSError as exc:
            if exc.errno not in _NAME_ERRNOS:
                raise  # the disk, not the name: the shard fails and is redone next run
            self.discard(ref)
            clash = exc.errno in _CLASH_ERRNOS
            why = (
                " (the path is taken by another member's file or folder; on a case-insensitive file system "
                "names that differ only in letter case or Unicode normalization are the same)"
                if clash
                else ""
            )
            where = f"{filename!r} in the output"
            if self.settings.captions_in_place:  # the error names the input folder's file
                where, why = f"the caption file of {filename!r}", ""
            self.reject(
                image_member,
                Reason.NAME_CLASH if clash else Reason.NAME_UNUSABLE,
                f"cannot create {where}: {exc.strerror}{why}",
            )
            return
        if self.settings.dedup:
            self._keep_key(info.dedup_key)
        if self.part.places is not None:  # --webshart: where the image is in the tar
            self.part.places.append(tar_place(ref))
        self._add_row(filename, info, width, height, entry.key)
        self.samples += 1
        crash_point("sample", self.shard_id, self.samples)

    def _caption_text(self, info: JsonInfo) -> str:
        """The caption file's text: the caption, or with --extra-captions one caption a line (no newline at the end)."""
        return "\n".join(info.captions) if self.extra_captions else info.caption

    def _add_row(self, filename: str, info: JsonInfo, width: int, height: int, key: str) -> None:
        extras = info.extras.values()
        if self.extra_captions:  # the captions column comes before the --fields ones
            self.notes["extra_captions"] += len(info.captions) - 1
            extras = (info.captions, *extras)
        self.part.add((filename, info.caption, width, height, key, self.shard_id, info.source, *extras))

    def _filtered(self, info: JsonInfo, width: int, height: int, ref: ImageRef, image_member: str) -> bool:
        """Whether a filter leaves the sample out (then rejected as `filtered`, counted per filter)."""
        rejected = self.filters.check(info, width, height)
        if rejected is None:
            return False
        self.discard(ref)
        self.notes[NOTE_PREFIX + filter_of(rejected.detail)] += 1
        self.reject(image_member, rejected.reason, rejected.detail)
        return True

    def _repeated(self, key: bytes | None, image_member: str, ref: ImageRef) -> bool:
        """--dedup: a sample whose key a row of this shard already has is left out (no file, no row) and listed
        in the shard's dups file; the merge writes its reject line, naming the sample kept, which may be in an
        earlier shard. `at`: the rows before it, so the merge puts its line in member order among the rows'."""
        if key is None or key not in self._keys:
            return False
        self.discard(ref)
        self._list_repeat({"member": _printable(image_member), "key": key.hex(), "at": self.samples})
        return True

    def _list_repeat(self, line: dict) -> None:
        """A repeat within the shard, for the merge to reject (`shard.dry` counts it instead)."""
        self._dups_fh.write(orjson.dumps(line) + b"\n")

    def _keep_key(self, key: bytes | None) -> None:
        """--dedup: the key of a row about to be added (None: the field is missing, the sample is kept)."""
        if key is None:
            self.notes["dedup_field_missing"] += 1
        else:
            self._keys.add(key)
        if self.part.keys is not None:
            self.part.keys.append(key)

    def _size(self, info: JsonInfo, ref: ImageRef, image_member: str) -> tuple[int, int] | None:
        """(width, height): the JSON's, else the image header's; None when the sample is rejected for it."""
        if info.width is not None:
            return info.width, info.height
        size = self._probe_size(ref)
        if size is None:
            self.discard(ref)
            self.reject(
                image_member, Reason.SIZE_UNREADABLE, f"{info.size_detail}, and the image header cannot be read"
            )
            return None
        width, height = size
        limit = self.settings.max_dimension
        if width > limit or height > limit:
            self.discard(ref)
            self.reject(
                image_member,
                Reason.SIZE_INVALID,
                f"{info.size_detail}, and the image header says {width}x{height}, above {limit}",
            )
            return None
        self.notes["size_from_header"] += 1
        if info.size_invalid:
            self.notes["json_size_invalid"] += 1  # converted with the header's size
        return width, height

    def _probe_size(self, ref: ImageRef) -> tuple[int, int] | None:
        if ref.probed:
            return ref.probe
        if ref.offset >= 0:
            return imageheader.probe_range(self.reader.pread, ref.offset, ref.size)
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
            if self.images:
                dst = self.files.path(filename)
                if ref.staged:
                    os.close(os.open(dst, NEW_FILE, 0o644))  # claim the name, then move the image onto it
                    created.append(dst)
                    self.layout.fs.replace(ref.staged, dst)
                    ref.staged = None
                else:  # copied out of the tar; an extracted folder's file linked or copied (its reader decides)
                    self.reader.place(ref.offset, dst, created, ref.size)
                written += ref.size
            if self.captions:
                written += self.files.write_text(caption_relpath(filename), caption)
            elif self.captions_in_place:  # beside the image in the input folder (shard.folderstream)
                written += self.reader.write_caption(ref.offset, caption)
        except Exception as exc:
            if not disk_error(exc):
                for path in created:
                    self.layout.fs.unlink(path)
                self.files.prune(filename)
            raise
        return written


def tar_place(ref: ImageRef) -> tuple[int, int]:
    """(offset, length) of an image member's data in its tar; --webshart refuses inputs where it is unknown."""
    if ref.at < 0:
        raise RuntimeError("--webshart: an image member's place in the tar is unknown")
    return ref.at, ref.size


def disk_error(exc: BaseException) -> bool:
    """An OSError from the disk (ENOSPC, EIO, EROFS, EFBIG...), not from a member's name."""
    return isinstance(exc, OSError) and exc.errno is not None and exc.errno not in _NAME_ERRNOS


def _printable(text: str) -> str:
    """Text safe to write as JSON: a name with non-UTF-8 bytes shows them as \\xNN escapes."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape" if _only_escapes(text) else "surrogatepass").decode(
            "utf-8", "backslashreplace"
        )


def _only_escapes(text: str) -> bool:
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def _same_ext(a: str, b: str) -> bool:
    """Extensions naming the same format ('jpg', 'JPG', 'jpeg'); equal strings need no more work."""
    if a == b:
        return True
    a, b = a.lower(), b.lower()
    return _EQUIVALENT_EXT.get(a, a) == _EQUIVALENT_EXT.get(b, b)
