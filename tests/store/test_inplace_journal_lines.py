"""The caption journal's lines (store.inplace): formatted by hand for speed, byte for byte what orjson wrote before
(`{"name": <hex of the path>, "digest": <hex of content_digest>}` and a newline), for any name, not UTF-8 too; and a
caption bigger than one write still arrives whole."""

from __future__ import annotations

import os

import orjson
import pytest

from dalle3_etl.store import fsio
from dalle3_etl.store.fsio import Root, content_digest
from dalle3_etl.store.inplace import CaptionJournal, record_input_folder, remove_unit_captions
from dalle3_etl.store.layout import Layout


def test_lines_are_orjsons_bytes_and_name_every_file(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    layout = Layout(tmp_path / "out")
    layout.ensure()
    record_input_folder(layout, str(folder))
    files = [(b"a.txt", b"a caption"), (b"sub/\xff\xfe b.txt", "caption é ☃".encode()), (b'q"\\.txt', b"")]
    journal = CaptionJournal(layout, "in-000000", Root(tmp_path))
    fd = os.open(folder, os.O_RDONLY)
    sub = os.open(folder / "sub", os.O_RDONLY)
    try:
        for rel, data in files:
            journal.create(sub if rel.startswith(b"sub/") else fd, rel.rpartition(b"/")[2], rel=rel, data=data)
    finally:
        os.close(fd)
        os.close(sub)
        journal.close()
    want = b"".join(
        orjson.dumps({"name": rel.hex(), "digest": content_digest(data).hex()}) + b"\n" for rel, data in files
    )
    assert layout.in_place("in-000000").read_bytes() == want
    for rel, data in files:
        assert (folder / os.fsdecode(rel)).read_bytes() == data
    assert remove_unit_captions(layout, "in-000000") == 3  # the lines read back: every file found and removed


def test_a_short_write_is_completed(tmp_path, monkeypatch):
    """`_write_all`: one write for a small file; a write that takes part of the bytes is followed by the rest."""
    writes = []
    real_write = os.write

    def short_write(fd, data):
        writes.append(len(data))
        return real_write(fd, bytes(data[:3]))

    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        with monkeypatch.context() as patch:  # `os` itself: patched only around the one create
            patch.setattr(fsio.fds.os, "write", short_write)
            Root(tmp_path).create_new_at(fd, "c.txt", b"0123456789")
    finally:
        os.close(fd)
    assert (tmp_path / "c.txt").read_bytes() == b"0123456789"
    assert writes == [10, 7, 4, 1]


def test_a_name_taken_between_the_look_up_and_the_create_is_taken_back(tmp_path, monkeypatch):
    """A user's file put there after the look-up, with the bytes the tool meant to write: the create refuses it
    (FileExistsError) and a redo of the unit leaves it, whatever its bytes."""
    folder = tmp_path / "in"
    folder.mkdir()
    layout = Layout(tmp_path / "out")
    layout.ensure()
    record_input_folder(layout, str(folder))
    real_create = Root.create_new_at

    def user_first(self, dir_fd, name, data):
        (folder / os.fsdecode(name)).write_bytes(data)  # the user's, just before the tool's create
        real_create(self, dir_fd, name, data)

    journal = CaptionJournal(layout, "in-000000", Root(tmp_path))
    fd = os.open(folder, os.O_RDONLY)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(Root, "create_new_at", user_first)
            with pytest.raises(FileExistsError):
                journal.create(fd, b"a.txt", rel=b"a.txt", data=b"a caption")
        journal.create(fd, b"b.txt", rel=b"b.txt", data=b"b caption")
    finally:
        os.close(fd)
        journal.close()
    assert remove_unit_captions(layout, "in-000000") == 1  # b.txt, the tool's
    assert sorted(os.listdir(folder)) == ["a.txt"]
    assert (folder / "a.txt").read_bytes() == b"a caption"


def test_a_name_taken_already_is_not_listed(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"a caption")  # the user's, the very bytes the tool would write
    (folder / "l.txt").symlink_to("nowhere")
    layout = Layout(tmp_path / "out")
    layout.ensure()
    record_input_folder(layout, str(folder))
    journal = CaptionJournal(layout, "in-000000", Root(tmp_path))
    fd = os.open(folder, os.O_RDONLY)
    try:
        for name in (b"a.txt", b"l.txt"):
            with pytest.raises(FileExistsError):
                journal.create(fd, name, rel=name, data=b"a caption")
    finally:
        os.close(fd)
        journal.close()
    assert remove_unit_captions(layout, "in-000000") == 0
    assert (folder / "a.txt").read_bytes() == b"a caption" and os.path.islink(folder / "l.txt")
