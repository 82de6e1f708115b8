"""The folder a split shard's tasks share (`shard.taskfiles`): entries logged before they exist, taken back by the
log alone, moved in one piece."""

from __future__ import annotations

import os

import pytest

from dalle3_etl.shard.taskfiles import (
    FILES_LOG,
    MappedLog,
    TaskFiles,
    forget_task_files,
    logged_entries,
    move_task_files,
)
from dalle3_etl.store.layout import Layout

SID = "data-000007"


def _layout(tmp_path) -> Layout:
    layout = Layout(tmp_path / "out")
    layout.ensure()
    layout.shard_tasks(SID).mkdir(parents=True)
    return layout


def _task(layout: Layout, index: int) -> tuple[TaskFiles, os.PathLike]:
    staging = layout.task_staging(SID, index)
    staging.mkdir()
    return TaskFiles(layout.task_files(SID), SID, layout.fs, staging / FILES_LOG), staging


def test_each_top_level_entry_is_logged_once_and_before_it_exists(tmp_path):
    layout = _layout(tmp_path)
    files, staging = _task(layout, 0)
    shared = layout.task_files(SID) / SID
    seen_at_log = []
    real_write = MappedLog.write

    def spy(self, data):  # when an entry is logged (a JSON string line), it must not exist yet
        entry = data.decode().strip().strip('"')
        seen_at_log.append((entry, os.path.lexists(shared / entry)))
        return real_write(self, data)

    MappedLog.write = spy
    try:
        files.write_text(f"{SID}/a.txt", "one")
        open(files.path(f"{SID}/a.jpg"), "wb").close()
        files.write_text(f"{SID}/sub.d/b.txt", "two")
        # a kill now: the log is read by another process as it is, mapped and not trimmed
        assert logged_entries(staging / FILES_LOG) == ["a.txt", "a.jpg", "sub.d"]
        files.write_text(f"{SID}/sub.d/c.txt", "three")
    finally:
        MappedLog.write = real_write
        files.close()
    assert seen_at_log == [("a.txt", False), ("a.jpg", False), ("sub.d", False)]
    assert logged_entries(staging / FILES_LOG) == ["a.txt", "a.jpg", "sub.d"]
    assert (shared / "sub.d" / "c.txt").read_text() == "three"
    with pytest.raises(ValueError):
        files.path("data-000008/x.txt")  # another shard's name: never written here


def test_prune_keeps_the_shared_shard_folder_another_task_may_be_filling(tmp_path):
    layout = _layout(tmp_path)
    files, _ = _task(layout, 0)
    path = files.path(f"{SID}/deep/er/x.jpg")
    files.prune(f"{SID}/deep/er/x.jpg")  # nothing was created in it: its folders go
    files.close()
    shared = layout.task_files(SID) / SID
    assert not os.path.lexists(os.path.dirname(path)) and not (shared / "deep").exists()
    assert shared.is_dir()


def test_forgetting_a_task_removes_only_its_logged_entries(tmp_path):
    layout = _layout(tmp_path)
    first, staging0 = _task(layout, 0)
    second, staging1 = _task(layout, 1)
    first.write_text(f"{SID}/a.txt", "a")
    first.write_text(f"{SID}/f/x.txt", "x")
    second.write_text(f"{SID}/b.txt", "b")
    first.close()
    second.close()
    with open(staging0 / FILES_LOG, "ab") as log:  # hostile or cut-short lines are never paths
        log.write(b'"../b.txt"\n"f/../../b.txt"\n".."\n"b.t')
    assert forget_task_files(layout.fs, layout.task_files(SID), SID, staging0) == 2
    assert sorted(os.listdir(layout.task_files(SID) / SID)) == ["b.txt"]
    assert forget_task_files(layout.fs, layout.task_files(SID), SID, layout.task_staging(SID, 5)) == 0  # no log


def test_the_shared_folder_moves_whole_and_an_empty_one_leaves_no_shard_folder(tmp_path):
    layout = _layout(tmp_path)
    files, _ = _task(layout, 0)
    files.write_text(f"{SID}/a.txt", "a")
    files.close()
    layout.staging(SID).mkdir(parents=True)
    move_task_files(layout, SID)
    assert (layout.staged_files(SID) / SID / "a.txt").read_text() == "a"
    assert not (layout.task_files(SID) / SID).exists()

    other = "data-000008"
    (layout.task_files(other) / other).mkdir(parents=True)  # every file pruned: the folder is left empty
    move_task_files(layout, other)
    assert not (layout.task_files(other) / other).exists() and not layout.staged_files(other).exists()
    move_task_files(layout, "data-000009")  # no file at all: nothing to do


def test_the_mapped_log_grows_and_is_trimmed_to_its_lines(tmp_path):
    log = MappedLog(tmp_path / "log", size=64)
    lines = [b'"entry-%04d"\n' % i for i in range(100)]  # 1,400 bytes: the map doubles five times
    for line in lines[:50]:
        log.write(line)
    assert (tmp_path / "log").read_bytes().rstrip(b"\0") == b"".join(lines[:50])  # readable before close
    for line in lines[50:]:
        log.write(line)
    log.close()
    assert (tmp_path / "log").read_bytes() == b"".join(lines)
    assert logged_entries(tmp_path / "log") == [f"entry-{i:04d}" for i in range(100)]
