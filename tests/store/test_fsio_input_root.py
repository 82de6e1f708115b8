"""fsio for an input folder (--link none --captions-in-place) and for --link symlink's links.

`create_new_at` never replaces anything (a file, a dangling link) and never writes through a link;
`remove_files(contents=...)` removes a listed file only while it holds the bytes the tool wrote;
`remove_files(symlinks=True)` removes a listed link as a link, its target untouched; the caption journal lists a
file before it is created, so a create that failed (a user's file there) leaves that file alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dalle3_etl.store.fsio import Root, content_digest
from dalle3_etl.store.inplace import (
    CaptionJournal,
    forget_input_folder,
    input_folder,
    record_input_folder,
    remove_unit_captions,
)
from dalle3_etl.store.layout import Layout


def open_dir(path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY)


def test_create_new_at_makes_a_new_file_and_replaces_nothing(tmp_path):
    root = Root(tmp_path)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "taken.txt").write_bytes(b"user")
    os.symlink(tmp_path / "nowhere", folder / "dangling.txt")
    fd = open_dir(folder)
    try:
        root.create_new_at(fd, "new.txt", b"caption")
        for name in ("taken.txt", "dangling.txt"):
            with pytest.raises(FileExistsError):
                root.create_new_at(fd, name, b"caption")
    finally:
        os.close(fd)
    assert (folder / "new.txt").read_bytes() == b"caption"
    assert (folder / "taken.txt").read_bytes() == b"user"
    assert not (tmp_path / "nowhere").exists()  # the dangling link was not written through


def test_remove_files_with_contents_removes_only_the_bytes_the_tool_wrote(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"mine")
    (folder / "sub" / "b.txt").write_bytes(b"edited by the user")
    (folder / "c.txt").write_bytes(b"not listed")
    contents = {"a.txt": content_digest(b"mine"), "sub/b.txt": content_digest(b"mine too")}
    removed = Root(tmp_path).remove_files(folder, sorted(contents), prune=False, contents=contents)
    assert removed == 1
    assert not (folder / "a.txt").exists()
    assert (folder / "sub" / "b.txt").read_bytes() == b"edited by the user"
    assert (folder / "c.txt").exists() and (folder / "sub").is_dir()


def test_remove_files_never_goes_through_a_linked_subfolder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.txt").write_bytes(b"mine")
    folder = tmp_path / "in"
    folder.mkdir()
    os.symlink(outside, folder / "sub")
    contents = {"sub/a.txt": content_digest(b"mine")}
    assert Root(tmp_path).remove_files(folder, ["sub/a.txt"], prune=False, contents=contents) == 0
    assert (outside / "a.txt").exists()


def test_remove_files_removes_a_listed_symlink_only_when_asked_and_never_its_target(tmp_path):
    target = tmp_path / "input.jpg"
    target.write_bytes(b"image")
    data = tmp_path / "out" / "data" / "u"
    data.mkdir(parents=True)
    os.symlink(target, data / "a.jpg")
    root = Root(tmp_path / "out")
    assert root.remove_files(data, ["a.jpg"], prune=False) == 0  # a link is not the tool's by default
    assert (data / "a.jpg").is_symlink()
    assert root.remove_files(data, ["a.jpg"], symlinks=True) == 1
    assert not os.path.lexists(data / "a.jpg") and not data.exists()
    assert target.read_bytes() == b"image"


def test_symlink_new_never_replaces(tmp_path):
    root = Root(tmp_path)
    (tmp_path / "taken.jpg").write_bytes(b"x")
    root.symlink_new(str(tmp_path / "t"), tmp_path / "link.jpg")
    assert os.readlink(tmp_path / "link.jpg") == str(tmp_path / "t")
    with pytest.raises(FileExistsError):
        root.symlink_new(str(tmp_path / "t"), tmp_path / "taken.jpg")
    assert (tmp_path / "taken.jpg").read_bytes() == b"x"


def out_and_folder(tmp_path) -> tuple[Layout, Path]:
    """An output made with --link none from the folder `in`."""
    folder = tmp_path / "in"
    folder.mkdir()
    layout = Layout(tmp_path / "out")
    layout.ensure()
    record_input_folder(layout, str(folder))
    return layout, folder


def test_journal_lists_before_creating_and_removal_spares_a_users_file(tmp_path):
    layout, folder = out_and_folder(tmp_path)
    (folder / "b.txt").write_bytes(b"the user's")
    journal = CaptionJournal(layout, "in-000000", Root(tmp_path))
    fd = open_dir(folder)
    try:
        journal.create(fd, b"a.txt", rel=b"a.txt", data=b"caption a")
        with pytest.raises(FileExistsError):  # refused, and not listed: the user's file
            journal.create(fd, b"b.txt", rel=b"b.txt", data=b"caption b")
    finally:
        os.close(fd)
        journal.close()
    assert len(layout.in_place("in-000000").read_bytes().splitlines()) == 1
    assert remove_unit_captions(layout, "in-000000") == 1
    assert not (folder / "a.txt").exists()
    assert (folder / "b.txt").read_bytes() == b"the user's"
    assert not layout.in_place("in-000000").exists()


def test_a_journal_line_cut_by_a_crash_is_skipped(tmp_path):
    layout, folder = out_and_folder(tmp_path)
    (folder / "a.txt").write_bytes(b"x")
    layout.in_place("u").parent.mkdir(parents=True)
    layout.in_place("u").write_bytes(b'{"name": "612e7478", "dig')
    assert remove_unit_captions(layout, "u") == 0
    assert (folder / "a.txt").exists()


def test_input_folder_is_kept_resolved_and_another_one_is_refused(tmp_path):
    from dalle3_etl.errors import UsageError

    folder = tmp_path / "in"
    folder.mkdir()
    os.symlink(folder, tmp_path / "alias")
    layout = Layout(tmp_path / "out")
    layout.ensure()
    assert input_folder(layout) is None
    record_input_folder(layout, str(tmp_path / "alias"))
    assert input_folder(layout) == folder.resolve()
    record_input_folder(layout, str(folder))  # the same folder: fine
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(UsageError, match="--link none"):
        record_input_folder(layout, str(other))
    forget_input_folder(layout)
    assert input_folder(layout) is None
