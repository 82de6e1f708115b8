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

import io
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson

from dalle3_etl import imageheader, tarstream
from dalle3_etl.records import JsonInfo, Reason, Reject, parse_json
from dalle3_etl.samples import Duplicate, Entry, Pairing, classify
from dalle3_etl.settings import Settings
from dalle3_etl.sinks import FileTree, PartWriter, caption_relpath
from dalle3_etl.sources import ShardSource
from dalle3_etl.state import Layout, clear_shard, remove_path, write_record

PROGRESS_EVERY = 0.25  # seconds between progress reports from a worker
STREAM_HEAD_BYTES = 256 * 1024
PROBE_READ_BYTES = 64 * 1024  # one pread usually holds the whole header, even behind EXIF  # image head kept for the size probe when streaming without copying images

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
    head: bytes | None = None  # streamed input without images: first bytes, for the size probe


def source_fingerprint(src: ShardSource) -> dict[str, Any]:
    return dict(src.fingerprint)


def forget_shard(layout: Layout, shard_id: str, settings: Settings) -> None:
    """Remove every trace of a shard (record first), including files a --flat shard already published."""
    layout.record(shard_id).unlink(missing_ok=True)
    if settings.flat:
        from dalle3_etl.merge import unpublish_flat

        unpublish_flat(layout, shard_id, settings)
    clear_shard(layout, shard_id, flat=settings.flat)


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
        self.files = FileTree(self.staging / "files")
        self.prefix = "" if settings.flat else f"{self.shard_id}/"
        self.write_files = settings.images or settings.captions
        self._pending_seq = 0
        self._rejects_fh = None
        self._reader: tarstream.TarReader | None = None

    # -- output helpers ---------------------------------------------------------------------------

    def _reject(self, member: str, reason: str, detail: str) -> None:
        self.counts[reason] += 1
        line = {"shard": self.shard_id, "member": member, "reason": reason, "detail": detail}
        self._rejects_fh.write(orjson.dumps(line) + b"\n")

    def _discard(self, ref: Any) -> None:
        if isinstance(ref, ImageRef) and ref.staged:
            os.unlink(ref.staged)

    # -- reading ----------------------------------------------------------------------------------

    def _image_ref(self, reader: tarstream.TarReader, member: tarstream.Member) -> ImageRef:
        if reader.seekable:
            return ImageRef(offset=member.offset, size=member.size)
        if self.settings.images:
            self._pending_seq += 1
            path = os.path.join(self.staging, "pending", f"{self._pending_seq}")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as fh:
                reader.copy_to(fh)
            return ImageRef(size=member.size, staged=path)
        return ImageRef(size=member.size, head=reader.read(STREAM_HEAD_BYTES))

    def _probe_size(self, ref: ImageRef) -> tuple[int, int] | None:
        if ref.offset >= 0:
            view = imageheader.RangeReader(self._reader.pread, ref.offset, ref.size)
            return imageheader.image_size(io.BufferedReader(view, buffer_size=PROBE_READ_BYTES))
        if ref.staged:
            with open(ref.staged, "rb") as fh:
                return imageheader.image_size(fh)
        return imageheader.image_size_from_bytes(ref.head or b"")

    def _finish(self, entry: Entry) -> None:
        info = entry.json.payload
        ref: ImageRef = entry.image.payload
        image_member = entry.image.member
        if isinstance(info, Reject):
            self._discard(ref)
            self._reject(entry.json.member, info.reason, info.detail)
            return
        assert isinstance(info, JsonInfo)
        if info.caption is None:
            self._discard(ref)
            self._reject(image_member, Reason.NO_CAPTION, f"no usable caption ({info.caption_detail})")
            return
        width, height = info.width, info.height
        if width is None:
            size = self._probe_size(ref)
            if size is None:
                self._discard(ref)
                self._reject(image_member, Reason.SIZE_UNREADABLE, f"{info.size_detail} and the image header cannot be read")
                return
            width, height = size
            limit = self.settings.max_dimension
            if width > limit or height > limit:
                self._discard(ref)
                self._reject(image_member, Reason.SIZE_INVALID, f"image header says {width}x{height}, above {limit}")
                return
            self.notes["size_from_header"] += 1
        ext = image_member[image_member.rfind(".") :]
        filename = f"{self.prefix}{entry.key}{ext}"
        if self.settings.images:
            dst = self.files.path(filename)
            if ref.staged:
                os.replace(ref.staged, dst)
            else:
                fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    self._reader.copy_range(ref.offset, ref.size, fd)
                finally:
                    os.close(fd)
            self.bytes_out += ref.size
        if self.settings.captions:
            self.bytes_out += self.files.write_text(caption_relpath(filename), info.caption)
        self.part.add((filename, info.caption, width, height, entry.key, self.shard_id, info.source,
                       *info.extras.values()))
        self.samples += 1

    def _report_unpaired(self, entry: Entry, why: str) -> None:
        if entry.image is not None:
            self._discard(entry.image.payload)
            self._reject(entry.image.member, Reason.IMAGE_WITHOUT_JSON, f"no JSON member with key {entry.key!r}{why}")
        if entry.json is not None:
            self._reject(entry.json.member, Reason.JSON_WITHOUT_IMAGE, f"no image member with key {entry.key!r}{why}")

    def _convert_members(self, reader: tarstream.TarReader) -> None:
        settings = self.settings
        pairing = Pairing(settings.max_pending)
        last = time.monotonic()
        for member in reader:
            if self.progress is not None:
                now = time.monotonic()
                if now - last >= PROGRESS_EVERY:
                    self.progress(self.shard_id, reader.position, self.samples)
                    last = now
            if member.kind == "dir" and member.problem is None:
                continue
            if member.problem is not None:
                self._reject(member.name, Reason.UNSAFE_MEMBER, member.problem)
                continue
            key, role, _ = classify(member.name)
            if role is None:
                self.notes["other_members"] += 1
                continue
            if role == "json":
                if member.size > settings.max_json_bytes:
                    self._reject(member.name, Reason.JSON_TOO_LARGE,
                                 f"JSON member is {member.size} bytes, limit is {settings.max_json_bytes}")
                    continue
                payload: Any = parse_json(reader.read(), settings)
            else:
                payload = self._image_ref(reader, member)
            done, problems = pairing.add(key, role, member.name, payload)
            for problem in problems:
                if isinstance(problem, Duplicate):
                    self._discard(problem.payload)
                    self._reject(problem.member, Reason.DUPLICATE_MEMBER, problem.reason)
                else:
                    self._report_unpaired(problem, f" within {settings.max_pending} pending members")
            if done is not None:
                self._finish(done)
        for entry in pairing.leftovers():
            self._report_unpaired(entry, " in this shard")

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
                    self._reader = reader = tarstream.open_tar(fh)
                    self._convert_members(reader)
                except tarstream.TarFormatError as exc:
                    error = f"{self.src.uri}: {exc}"
                    self._reject(exc.member or f"@{exc.offset}", "shard_unreadable", str(exc))
            self.part.close()
            self._rejects_fh.close()
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
        write_record(layout, self.shard_id, {
            "shard": self.shard_id, "source": source_fingerprint(self.src), "settings": self.settings.output_fingerprint(),
            "samples": self.samples, "rejects": result.rejects, "notes": result.notes, "error": error, "published": not self.settings.flat,
        })
        return result

    def commit(self) -> None:
        """Move the staged part, rejects and files into place. The record is written after this."""
        layout, sid = self.layout, self.shard_id
        remove_path(self.staging / "pending")
        files = self.staging / "files"
        if self.settings.flat:
            if files.exists():
                os.replace(files, layout.flat_files(sid))
        elif self.write_files:
            target = layout.shard_data(sid)
            remove_path(target)
            staged = files / sid
            if staged.exists():
                os.replace(staged, target)
            else:
                target.mkdir()
        os.replace(self.staging / "part.parquet", layout.part(sid))
        os.replace(self.staging / "rejects.jsonl", layout.rejects(sid))
        remove_path(self.staging)


def convert_shard(src: ShardSource, out: Path, settings: Settings, progress: ProgressFn | None = None) -> ShardResult:
    """Convert and commit one shard. Output I/O errors give a failed result; nothing partial survives."""
    layout = Layout(Path(out))
    try:
        return ShardConverter(src, layout, settings, progress).run()
    except OSError as exc:
        forget_shard(layout, src.shard_id, settings)
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return ShardResult(shard_id=src.shard_id, ok=False, failure=f"{type(exc).__name__}: {exc.strerror or exc}{where}")
