"""The files of a split shard's tasks, written straight into ONE folder the shard's tasks share.

Every task of a shard creates its images and caption files in `tasks/<shard>/files/<shard>/` (`Layout.task_files`),
so putting the shard together moves that one folder instead of every file (86,000 renames for a shard of 4 KB
images). Two tasks of a split that holds never create the same entry there: a split point is valid only where no name
token (the first component of a member's name without its extension, ignoring case and normalisation, the start of
every path its sample writes) has members on both sides (`shard.scan` places points so; guessed points,
`shard.probe`, are checked after the tasks, and a shard whose tasks met the same token is dropped whole, shared
folder included, and converted again whole).

So that a task cut short (killed, its worker lost, its pool retried) can be taken back without touching the files of
the shard's other tasks, a task logs each top-level entry it is about to create, before creating it, one JSON string a
line in `files.jsonl` of its own staging folder (`forget_task_files` removes the logged entries, through `fsio`).
The log is a file mapped into memory (`MappedLog`): a line copied there is in the OS's page cache at once, where a
later process reads it even if this one was killed, without a system call per file (one `write` per entry cost a
task ~2.5 µs a sample). It is trimmed to its lines when the task closes it; a killed task's log ends in zero bytes.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import orjson

from dalle3_etl.shard.sinks import FileTree
from dalle3_etl.store.fsio import Root
from dalle3_etl.store.layout import Layout

#: In a task's staging (then done) folder: the top-level entries it created in the shared folder, one a line.
FILES_LOG = "files.jsonl"


class MappedLog:
    """Lines appended to a file through a shared memory map, grown by doubling; `close` trims the file to them."""

    def __init__(self, path: Path, size: int = 1 << 20):
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)  # in a fresh staging folder
        self._size = size
        os.ftruncate(self._fd, size)
        self._map = mmap.mmap(self._fd, size)

    def write(self, line: bytes) -> None:
        try:
            self._map.write(line)  # at the map's position, which it moves on (one C call: ~0.3 us a line less)
        except ValueError:  # past the end: grow the file and its map, then write again
            pos = self._map.tell()
            self._map.close()
            while pos + len(line) > self._size:
                self._size *= 2
            os.ftruncate(self._fd, self._size)
            self._map = mmap.mmap(self._fd, self._size)
            self._map.seek(pos)
            self._map.write(line)

    def close(self) -> None:
        if self._fd < 0:
            return
        pos = self._map.tell()
        self._map.close()
        os.ftruncate(self._fd, pos)
        os.close(self._fd)
        self._fd = -1


class TaskFiles(FileTree):
    """A `FileTree` rooted at the shared `<files>/<shard>` folder that logs each new top-level entry first.

    Takes the writer's relative paths (`<shard>/<member path>`, never `--flat`: a split shard is never flat). The
    `<shard>` folder itself is shared: it is made with `exist_ok` and never pruned (another task may be filling it)."""

    def __init__(self, files_dir: Path, shard_id: str, fs: Root, log: Path):
        super().__init__(files_dir / shard_id, fs)
        self._lead = shard_id + "/"
        self._logged: set[str] = set()
        self._log = MappedLog(log)

    def _inner(self, relpath: str) -> str:
        if not relpath.startswith(self._lead):
            raise ValueError(f"not below the shard's folder: {relpath!r}")
        return relpath[len(self._lead) :]

    def path(self, relpath: str) -> str:
        # once per file written (a sample's caption is a top-level entry of its own): `_inner` inlined
        if not relpath.startswith(self._lead):
            raise ValueError(f"not below the shard's folder: {relpath!r}")
        inner = relpath[len(self._lead) :]
        entry = inner.partition("/")[0]
        if entry not in self._logged:
            self._log.write(orjson.dumps(entry) + b"\n")  # in the OS's page cache before the entry exists
            self._logged.add(entry)
        return super().path(inner)

    def prune(self, relpath: str) -> None:
        super().prune(self._inner(relpath))  # stops below the root: the shared `<shard>` folder stays

    def close(self) -> None:
        self._log.close()


def logged_entries(log: Path) -> list[str]:
    """The entries a task logged (a line cut short by a kill is skipped: its entry was never created)."""
    try:
        lines = log.read_bytes().rstrip(b"\0").splitlines()  # a killed task's mapped log ends in zero bytes
    except FileNotFoundError:
        return []
    entries = []
    for line in lines:
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(entry, str) and entry not in ("", ".", "..") and "/" not in entry and "\0" not in entry:
            entries.append(entry)
    return entries


def forget_task_files(fs: Root, files_dir: Path, shard_id: str, task_dir: Path) -> int:
    """Remove from the shared folder what the task whose staging or done folder is `task_dir` created; the number of
    entries removed. Its log goes last, with the folder (the caller's)."""
    root = files_dir / shard_id
    removed = 0
    for entry in logged_entries(task_dir / FILES_LOG):
        removed += fs.remove_tree(root / entry)
    return removed


def move_task_files(layout: Layout, shard_id: str) -> None:
    """Put the files of a shard's tasks (all done) in the shard's staging folder, as a whole-shard conversion leaves
    them: one rename; no `<shard>` folder when no file is left in it (a whole shard's `FileTree` prunes it)."""
    fs = layout.fs
    shared = layout.task_files(shard_id) / shard_id
    try:
        with os.scandir(shared) as entries:
            empty = next(entries, None) is None
    except FileNotFoundError:
        return
    if empty:
        fs.remove_empty_folder(shared)
        return
    target = layout.staged_files(shard_id) / shard_id
    target.parent.mkdir(parents=True, exist_ok=True)
    fs.rename_new(shared, target)


__all__ = ["FILES_LOG", "MappedLog", "TaskFiles", "forget_task_files", "logged_entries", "move_task_files"]
