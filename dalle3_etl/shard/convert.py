"""One shard end to end: members -> samples -> rows + files, staged, then committed atomically.

Follow one sample top to bottom in `ShardConverter.run`: each tar member is classified
(`samples.classify`), JSON members are parsed once (`rows.parse_json`), image members are taken in by
`writer.SampleWriter.image_ref` (left in the tar, staged, or probed) and members are paired by key
(`samples.Pairing`). When both halves of a sample are there, `SampleWriter.finish` picks the size (JSON,
else image header), writes the image and caption file into the shard's staging folder and appends the
row to the shard's parquet part. `commit` then moves all of it into place and the completion record is
written last.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dalle3_etl.settings import Settings
from dalle3_etl.shard import tarstream, textmembers
from dalle3_etl.shard.commit import forget_shard, move_in_shard_files
from dalle3_etl.shard.folderloop import convert_unit
from dalle3_etl.shard.folderstream import FolderReader, data_files, open_members
from dalle3_etl.shard.rows import Reason, Reject, parse_json
from dalle3_etl.shard.samples import Duplicate, Entry, Pairing, classify
from dalle3_etl.shard.writer import ImageRef, SampleWriter, disk_error
from dalle3_etl.sources.base import ShardSource
from dalle3_etl.sources.hub.errors import HubError
from dalle3_etl.sources.hub.stream import HubStream
from dalle3_etl.store.crash import crash_point, sync_filesystem
from dalle3_etl.store.layout import Layout
from dalle3_etl.store.records import ShardRecord, write_record

PROGRESS_EVERY = 0.25  # seconds between progress reports from a worker

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
    part: int | None = None  # the result of one task of a split shard (`run.tasks`): its index
    boundary: str | None = None  # a task: why its range's end is not a point the whole shard allows (None: it is)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def source_fingerprint(src: ShardSource) -> dict[str, Any]:
    return dict(src.fingerprint)


class ShardConverter:
    """Converts one shard: reads its members, pairs them into samples and hands each finished one to a
    `SampleWriter`; then commits what was staged and writes the completion record."""

    def __init__(self, src: ShardSource, layout: Layout, settings: Settings, progress: ProgressFn | None = None):
        self.src = src
        self.layout = layout
        self.settings = settings
        self.progress = progress
        self.shard_id = src.shard_id
        self.staging = layout.staging(self.shard_id)
        self.write_files = any(data_files(settings))
        self.writer: SampleWriter | None = None  # made by `run`, in the staging folder
        # A task of a split shard (`taskconvert`) collects the keys of its sample members and notes whether a
        # member still waited for its partner when its range ended: what says its end was a true boundary.
        self.sample_keys: set[str] | None = None
        self.pending_at_end = False

    # -- pairing members into samples ---------------------------------------------------------------

    def _report_unpaired(self, entry: Entry, where: str) -> None:
        """Report the members of an entry that never got its partner (`where`: "in this shard"...)."""
        if entry.ready:  # incomplete but convertible (text members named): converted with what it has
            self._finish_ready(entry)
            return
        texts = [] if entry.texts is None or entry.image is not None else entry.texts.values()
        for half, reason, missing in (
            (entry.image, Reason.IMAGE_WITHOUT_JSON, "JSON"),
            (entry.json, Reason.JSON_WITHOUT_IMAGE, "image"),
            *((text, Reason.TEXT_WITHOUT_IMAGE, "image") for text in texts),
        ):
            if half is None:
                continue
            detail = entry.why or f"no {missing} member with key {entry.key!r} {where}"
            if isinstance(half.payload, Reject):  # the member was bad itself: that is the reason
                self.writer.reject(half.member, half.payload.reason, f"{half.payload.detail} (also: {detail})")
            else:
                self.writer.reject(half.member, reason, detail)
        if entry.image is not None:
            self.writer.discard(entry.image.payload)

    def _finish_ready(self, entry: Entry) -> None:
        """Convert a sample handed back incomplete; an unexpected error rejects it alone (also at the shard's end)."""
        notes = self.writer.notes
        if len(entry.texts or ()) < len(self.settings.text_exts):
            notes["text_member_missing"] += 1  # the caption chain went on without it
        if entry.json is None:
            notes["sample_without_json"] += 1
        try:
            self.writer.finish(textmembers.resolve(entry, self.settings))
        except Exception as exc:
            if _fails_the_shard(exc):
                raise
            self.writer.discard(entry.image.payload)
            why = _describe_error(exc)
            self.writer.reject(
                entry.image.member, Reason.SAMPLE_ERROR, f"unexpected error converting the sample: {why}"
            )

    def _settle(self, done: Entry | None, problems: list[Entry | Duplicate]) -> None:
        """Act on what `Pairing.add` gave back: report the problems, convert the completed sample."""
        for problem in problems:
            if isinstance(problem, Duplicate):
                self.writer.discard(problem.payload)
                self.writer.reject(problem.member, Reason.DUPLICATE_MEMBER, problem.reason)
            else:
                self._report_unpaired(problem, "")
        if done is not None:
            self.writer.finish(textmembers.resolve(done, self.settings) if self.settings.text_exts else done)

    def _sample_failed(
        self, exc: Exception, member: tarstream.Member, pairing: Pairing, done: Entry | None, problems: list | None
    ) -> None:
        """An unexpected error while handling one member or sample: reject that sample, go on."""
        why = _describe_error(exc)
        if done is not None:  # converting a paired sample: the writer has removed its files
            ref = done.image.payload
            if isinstance(ref, ImageRef) and ref.staged:
                self.layout.fs.unlink(ref.staged)
            self.writer.reject(
                done.image.member,
                Reason.SAMPLE_ERROR,
                f"unexpected error converting the sample of {done.image.member!r} and {done.json.member!r}: {why}",
            )
            return
        why = f"unexpected error reading member {member.name!r}: {why}"
        key, role, ext = classify(member.name, self.settings.text_exts)
        role = "." + ext.lower() if role == "text" else role
        added = None
        if problems is None and role is not None:
            # Not paired yet: it goes in as a rejected member, so its partner is reported with it, on one line.
            try:
                added = pairing.add(key, role, member.name, Reject(Reason.SAMPLE_ERROR, why))
            except Exception:  # the pairing itself failed: a line for this member alone
                pass
        if added is None:
            self.writer.reject(member.name, Reason.SAMPLE_ERROR, why)
        else:
            self._settle(*added)

    def _json_payload(
        self, reader: tarstream.TarReader, member: tarstream.Member, data: bytes | None = None
    ) -> tuple[Any, int]:
        """(parsed JSON or reject, bytes held) of the JSON member being read (`data`: read already); a too large
        one is skipped unread."""
        settings = self.settings
        if member.size > settings.max_json_bytes:  # skipped unread, in stream mode too
            return Reject(
                Reason.JSON_TOO_LARGE,
                f"JSON member is {member.size} bytes, more than max_json_bytes={settings.max_json_bytes}; not read",
            ), 0
        if data is None:
            data = reader.read()
        return parse_json(data, settings), len(data)

    def _convert_members(self, reader: tarstream.TarReader) -> None:
        pairing = textmembers.pairing_for(self.settings)
        try:
            if isinstance(reader, FolderReader) and not self.settings.text_exts and self.sample_keys is None:
                convert_unit(self, reader, pairing)  # a sample's two files at once (shard.folderloop)
            else:
                last = time.monotonic()
                for member in reader:
                    if self.progress is not None:
                        now = time.monotonic()
                        if now - last >= PROGRESS_EVERY:
                            self.progress(self.shard_id, reader.position, self.writer.samples)
                            last = now
                    self._member(reader, member, pairing)
        except tarstream.TarFormatError as exc:
            for entry in pairing.leftovers():
                self._report_unpaired(entry, f"before the shard became unreadable at offset {exc.offset}")
            raise
        self.pending_at_end = bool(pairing.pending)
        for entry in pairing.leftovers():
            self._report_unpaired(entry, "in this shard")

    def _member(self, reader: tarstream.TarReader, member: tarstream.Member, pairing: Pairing) -> None:
        """One member: classified, read and paired; the sample it completes converted. One sample's trouble,
        whatever it is, rejects that sample, never the shard."""
        done = problems = None
        try:
            if member.kind == "dir" and member.problem is None:
                self.writer.notes["other_members"] += 1  # never created; files make their own folders
                return
            key, role, ext = classify(member.name, self.settings.text_exts)
            if self.sample_keys is not None and role is not None:
                self.sample_keys.add(key)  # a task of a split shard (`taskconvert`)
            weight = 0
            payload: Any
            if member.problem is not None:
                payload = Reject(getattr(member, "reason", Reason.UNSAFE_MEMBER), member.problem)
                if role is None:
                    self.writer.reject(member.name, payload.reason, payload.detail)
                    return
                role = "." + ext.lower() if role == "text" else role
                # else it takes its partner down with it: one line for the sample, not two
            elif role is None:
                self.writer.notes["other_members"] += 1
                return
            elif role == "text":
                role = "." + ext.lower()
                payload, weight = textmembers.read_text(reader, member, self.settings)
            elif role == "json":
                payload, weight = self._json_payload(reader, member)
            else:
                waiting = pairing.pending.get(key)
                json_half = waiting.json if waiting is not None else None
                need_size = not (
                    json_half is not None
                    and (isinstance(json_half.payload, Reject) or json_half.payload.width is not None)
                )
                payload = self.writer.image_ref(reader, member, ext.lower(), need_size)
            done, problems = pairing.add(key, role, member.name, payload, weight)
            self._settle(done, problems)
        except Exception as exc:
            self._trouble(exc, member, pairing, done, problems)

    def _trouble(
        self, exc: Exception, member: tarstream.Member, pairing: Pairing, done: Entry | None, problems: list | None
    ) -> None:
        """An exception handling `member` (or the sample `done` it completed): raised again when it fails the
        shard, else that sample is rejected (`_sample_failed`)."""
        if _fails_the_shard(exc):
            raise exc
        self._sample_failed(exc, member, pairing, done, problems)

    # -- the whole shard ----------------------------------------------------------------------------

    def run(self) -> ShardResult:
        start = time.monotonic()
        layout = self.layout
        forget_shard(layout, self.shard_id, self.settings)
        self.staging.mkdir(parents=True)
        self.writer = writer = SampleWriter(self.shard_id, layout, self.settings, self.staging)
        try:
            error = self.read_all()
            writer.close()
            crash_point("staged", self.shard_id)
            self.commit()
        except BaseException:
            writer.abort()
            raise
        result = self.result(error, start)
        sync_filesystem(layout.state)  # the record must never reach the disk before the files it describes
        crash_point("committed", self.shard_id)
        write_record(
            layout,
            ShardRecord(
                shard=self.shard_id,
                source=source_fingerprint(self.src),
                settings=self.settings.output_fingerprint(),
                samples=writer.samples,
                rejects=result.rejects,
                notes=result.notes,
                error=error,
                published=not self.settings.flat,
            ),
        )
        crash_point("recorded", self.shard_id)
        return result

    def read_all(self) -> str | None:
        """Read the shard to its end through `self.writer`; returns the damage that stopped it early (also
        a `shard_unreadable` line), None when the tar was read whole."""
        writer = self.writer
        with self.src.open() as fh:
            try:
                writer.reader = reader = open_members(self.src, fh, self.layout, self.settings)
                self._convert_members(reader)
            except tarstream.TarFormatError as exc:
                if isinstance(fh, HubStream):
                    fh.finish()  # damage in bytes that are not the Hub's fails the shard (HubIntegrityError)
                writer.reject(exc.member or f"@{exc.offset}", Reason.SHARD_UNREADABLE, str(exc))
                return f"{self.src.uri}: {exc}"
        return None

    def result(
        self, error: str | None, start: float, result_type: type[ShardResult] | None = None, **more: Any
    ) -> ShardResult:
        """The shard's counts for the driver; a dry run (`shard.dry`) gives its own `result_type` and fields."""
        writer = self.writer
        return (result_type or ShardResult)(
            shard_id=self.shard_id,
            ok=True,
            samples=writer.samples,
            rejects=dict(sorted(writer.counts.items())),
            notes=dict(sorted(writer.notes.items())),
            bytes_in=self.src.size,
            bytes_out=writer.bytes_out,
            seconds=time.monotonic() - start,
            error=error,
            **more,
        )

    def commit(self) -> None:
        """Move the staged part, rejects and files into place. The record is written after this."""
        layout, sid, fs = self.layout, self.shard_id, self.layout.fs
        fs.remove_tree(layout.staged_pending(sid))
        files = layout.staged_files(sid)
        if self.settings.flat:
            if files.exists():
                fs.rename_new(files, layout.flat_files(sid))
        elif self.write_files:
            move_in_shard_files(layout, sid, files / sid)
        crash_point("commit", sid)
        fs.replace(layout.staged_part(sid), layout.part(sid))
        fs.replace(layout.staged_rejects(sid), layout.rejects(sid))
        if self.settings.dedup:
            layout.dups_dir.mkdir(exist_ok=True)
            fs.replace(layout.staged_dups(sid), layout.dups(sid))
        fs.remove_tree(self.staging)


def _fails_the_shard(exc: Exception) -> bool:
    """Not one sample's trouble: the disk failing (the shard is redone next run), the tar damaged (handled
    by `run`), memory running out, the Hub's bytes not matching its sha256 or not coming (the shard fails)."""
    return disk_error(exc) or isinstance(exc, (tarstream.TarFormatError, MemoryError, HubError))


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


def convert_shard(src: ShardSource, out: Path, settings: Settings, progress: ProgressFn | None = None) -> ShardResult:
    """Convert and commit one shard. Output I/O errors give a failed result; nothing partial survives."""
    layout = Layout(Path(out))
    try:
        return ShardConverter(src, layout, settings, progress).run()
    except OSError as exc:
        forget_shard(layout, src.shard_id, settings)
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return ShardResult(
            shard_id=src.shard_id, ok=False, failure=f"{type(exc).__name__}: {exc.strerror or exc}{where}"
        )
