"""`Root.move_entries`: a split shard's task folders put together (one rename per entry, nothing replaced)."""

from __future__ import annotations

import pytest
from conftest import tree

from dalle3_etl.store.fsio import OwnershipError, Root


def test_entries_are_moved_and_the_source_folder_removed(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / "x.jpg").write_bytes(b"x")
    (tmp_path / "a" / "sub" / "y.jpg").write_bytes(b"y")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.jpg").write_bytes(b"z")
    Root(tmp_path).move_entries(tmp_path / "a", tmp_path / "b")
    assert tree(tmp_path) == {"b/x.jpg": b"x", "b/sub/y.jpg": b"y", "b/z.jpg": b"z"}


def test_a_name_already_in_the_target_refuses_before_anything_moves(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for name in ("1.jpg", "2.jpg"):
        (tmp_path / "a" / name).write_bytes(b"tool")
    (tmp_path / "b" / "2.jpg").write_bytes(b"user")
    with pytest.raises(FileExistsError):
        Root(tmp_path).move_entries(tmp_path / "a", tmp_path / "b")
    assert tree(tmp_path) == {"a/1.jpg": b"tool", "a/2.jpg": b"tool", "b/2.jpg": b"user"}


def test_a_symlinked_folder_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "real").mkdir()
    (tmp_path / "b").symlink_to(tmp_path / "real")
    with pytest.raises((OwnershipError, OSError)):
        Root(tmp_path).move_entries(tmp_path / "a", tmp_path / "b")
    with pytest.raises(OwnershipError):
        Root(tmp_path / "a").move_entries(tmp_path / "a", tmp_path / "elsewhere")
