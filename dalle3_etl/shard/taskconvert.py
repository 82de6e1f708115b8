"""One task of a split shard, in a worker: the members whose first header lies in the task's byte range, converted
as `convert.ShardConverter` converts a whole shard, into the task's own staging folder (its part and reject lines)
and the folder all tasks of the shard share (its files, `shard.taskfiles`), then made done.

The range starts and ends at points where the whole-shard conversion has nothing waiting and no name carries
over, so the task's rows, files and reject lines are exactly that stretch of the whole shard's. The points are
the full scan's (`scan`), or guesses (`probe`) that each task checks at its end (`ShardResult.boundary`: the
header walk landed on the end, nothing waited there, no pax global header, no damage) and whose names the
driver checks across tasks (the task's name tokens, `tokens.bin`); a failed check has the shard redone whole.
Done = the staging folder renamed to `done-<i>` with `result.json` inside, after a sync; the driver puts the
shard together once all its tasks are done (`run.tasks`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson

from dalle3_etl.settings import Settings
from dalle3_etl.shard import tarstream
from dalle3_etl.shard.convert import ProgressFn, ShardConverter, ShardResult
from dalle3_etl.shard.hubsplit import open_task_input
from dalle3_etl.shard.rows import Reason
from dalle3_etl.shard.scan import key_tokens
from dalle3_etl.shard.taskfiles import FILES_LOG, TaskFiles, forget_task_files
from dalle3_etl.shard.writer import SampleWriter
from dalle3_etl.sources.base import ShardSource
from dalle3_etl.store.crash import crash_point, sync_filesystem
from dalle3_etl.store.layout import Layout
from dalle3_etl.store.tasks import RESULT_NAME, TaskLayout, TaskRange, write_task_tokens

#: Joins a shard id and a task index in progress reports (a control character: never in a shard id).
TASK_SEP = "\x1f"


def task_key(shard_id: str, index: int) -> str:
    return f"{shard_id}{TASK_SEP}{index}"


class TaskConverter(ShardConverter):
    """Converts one byte range of a shard into `tasks/<shard>/staging-<i>`, then renames it `done-<i>`."""

    def __init__(self, src: ShardSource, out: Path, settings: Settings, part: TaskRange, progress=None):
        self.out_layout = Layout(Path(out))
        layout = TaskLayout(self.out_layout.out, self.out_layout.task_staging(src.shard_id, part.index))
        super().__init__(src, layout, settings, _keyed(progress, task_key(src.shard_id, part.index)))
        self.part = part
        self.sample_keys = set()  # the sample members' keys (`ShardConverter._convert_members`): their tokens
        self._reader: tarstream.TarReader | None = None

    def run(self) -> ShardResult:
        start = time.monotonic()
        fs = self.layout.fs
        self.forget_earlier_attempt()
        self.staging.mkdir(parents=True)
        self.writer = writer = SampleWriter(self.shard_id, self.layout, self.settings, self.staging)
        files_dir = self.out_layout.task_files(self.shard_id)
        writer.files = files = TaskFiles(files_dir, self.shard_id, fs, self.staging / FILES_LOG)  # shared folder
        try:
            error = self.read_all()
            writer.close()
        except BaseException:
            writer.abort()
            raise
        finally:
            files.close()
        result = self.result(error, start)
        result.bytes_in = self.part.length(self.src.size)
        result.part = self.part.index
        tokens = key_tokens(self.sample_keys)
        result.boundary = self.boundary(error, tokens)
        write_task_tokens(self.staging, tokens)
        (self.staging / RESULT_NAME).write_bytes(orjson.dumps(result.to_json()))
        sync_filesystem(self.out_layout.state)  # done must never reach the disk before the task's files
        crash_point("task", self.shard_id, self.part.index)
        done = self.out_layout.task_done(self.shard_id, self.part.index)
        fs.remove_tree(done)  # a task done twice (a retried pool): the later one counts, the same bytes
        fs.rename_new(self.staging, done)
        return result

    def boundary(self, error: str | None, tokens: list[str]) -> str | None:
        """Why the end of this task's range is not a point where the whole shard may be cut (None: it is one)."""
        if any("\0" in t for t in tokens):
            return "a member name holds a NUL character"
        end, reader = self.part.end, self._reader
        if end is None:
            return None  # the shard's end
        if error is not None or reader is None:
            return f"the shard could not be read to the end of the range: {error}"
        if reader.next_header != end:
            return f"the range ends at offset {end}, inside a member (its next header is at {reader.next_header})"
        if self.pending_at_end:
            return f"a sample waits for its partner across offset {end}"
        if reader.saw_global_header:
            return f"a pax global header comes before offset {end}"
        return None

    def forget_earlier_attempt(self) -> None:
        """What an earlier attempt at this task left (a retried Ray task or pool): its files in the shared folder,
        then its folder. A done one is first made not done (renamed back to staging), so a kill in between never
        leaves a done task without its files."""
        fs, out, sid = self.layout.fs, self.out_layout, self.shard_id
        files_dir = out.task_files(sid)
        forget_task_files(fs, files_dir, sid, self.staging)
        fs.remove_tree(self.staging)
        done = out.task_done(sid, self.part.index)
        if os.path.lexists(done):
            fs.rename_new(done, self.staging)
            forget_task_files(fs, files_dir, sid, self.staging)
            fs.remove_tree(self.staging)

    def read_all(self) -> str | None:
        writer = self.writer
        with open_task_input(self.src, self.part, self.out_layout) as fh:
            try:
                fh.seek(self.part.start)
                writer.reader = self._reader = reader = tarstream.TarReader(fh, seekable=True, stop_at=self.part.end)
                self._convert_members(reader)
            except tarstream.TarFormatError as exc:
                writer.reject(exc.member or f"@{exc.offset}", Reason.SHARD_UNREADABLE, str(exc))
                return f"{self.src.uri}: {exc}"
        return None


def _keyed(progress: ProgressFn | None, key: str) -> ProgressFn | None:
    if progress is None:
        return None
    return lambda _sid, nbytes, samples: progress(key, nbytes, samples)


def convert_task(
    src: ShardSource, out: Path, settings: Settings, part: TaskRange, progress: ProgressFn | None = None
) -> ShardResult:
    """Convert one task; an output I/O error gives a failed result (the task is redone next run)."""
    converter = TaskConverter(src, out, settings, part, progress)
    try:
        return converter.run()
    except OSError as exc:
        converter.forget_earlier_attempt()  # this attempt's files and folder
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return ShardResult(
            shard_id=src.shard_id,
            ok=False,
            failure=f"{type(exc).__name__}: {exc.strerror or exc}{where}",
            part=part.index,
        )


__all__ = ["TASK_SEP", "TaskConverter", "convert_task", "task_key"]
