"""The bench removes only inside the folder it made a thing in: a path outside it, or reached through a symlink,
is refused and left as it was."""

from __future__ import annotations

import pytest

from dalle3_etl.devtools.bench.config import _rmtree
from dalle3_etl.store.fsio import OwnershipError


def test_removes_a_folder_inside_its_work_folder(tmp_path):
    work = tmp_path / "work"
    (work / "convert-full" / "data").mkdir(parents=True)
    (work / "convert-full" / "data" / "a.txt").write_text("x")
    _rmtree(work / "convert-full", work)
    assert not (work / "convert-full").exists() and work.is_dir()


def test_refuses_a_path_outside_its_work_folder(tmp_path):
    work, users = tmp_path / "work", tmp_path / "users-data"
    work.mkdir()
    users.mkdir()
    (users / "keep.txt").write_text("mine")
    for wrong in (users, work / ".." / "users-data", work):
        with pytest.raises(OwnershipError):
            _rmtree(wrong, work)
    assert (users / "keep.txt").read_text() == "mine"


def test_refuses_to_go_through_a_symlink(tmp_path):
    work, users = tmp_path / "work", tmp_path / "users-data"
    work.mkdir()
    (users / "sub").mkdir(parents=True)
    (users / "sub" / "keep.txt").write_text("mine")
    (work / "link").symlink_to(users, target_is_directory=True)
    with pytest.raises(OwnershipError):
        _rmtree(work / "link" / "sub", work)
    assert (users / "sub" / "keep.txt").read_text() == "mine"
