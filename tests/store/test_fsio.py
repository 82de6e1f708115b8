"""`fsio.Root`, the one module that deletes, moves or overwrites: never what the tool did not create, never
outside its root, never through a symlink (the safety issue, point 2). The end-to-end runs are in
tests/e2e/test_hostile_ownership.py."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest
from conftest import tree

from dalle3_etl.store.fsio import OwnershipError, Root

PACKAGE = Path(__file__).resolve().parents[2] / "dalle3_etl"


def test_root_refuses_paths_outside_or_at_the_root(tmp_path):
    root = Root(tmp_path / "out")
    (tmp_path / "out").mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    for path in (
        victim,
        tmp_path / "out",
        tmp_path / "out" / ".." / "victim.txt",
        tmp_path / "outside" / "x",
        Path(str(tmp_path / "out") + "2") / "x",
    ):
        with pytest.raises(OwnershipError):
            root.unlink(path)
        with pytest.raises(OwnershipError):
            root.remove_tree(path)
    assert victim.read_text() == "mine"


def test_root_never_goes_through_a_symlink_except_the_allowed_data_link(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    (elsewhere / "sub").mkdir(parents=True)
    (elsewhere / "sub" / "keep.jpg").write_bytes(b"user")
    out.mkdir()
    (out / "state").symlink_to(elsewhere)  # a link on the way: refused
    (out / "data").symlink_to(elsewhere)  # the allowed one: gone through, never removed itself
    root = Root(out, link_ok=("data",))
    with pytest.raises(OwnershipError, match="symlink"):
        root.remove_tree(out / "state" / "sub")
    with pytest.raises(OwnershipError, match="symlink"):
        root.unlink(out / "state" / "sub" / "keep.jpg")
    with pytest.raises(OwnershipError, match="symlink"):
        root.remove_tree(out / "data")  # the link itself is the user's
    assert root.unlink(out / "data" / "sub" / "keep.jpg")  # through the allowed link, a named file
    assert (out / "data").is_symlink() and (elsewhere / "sub").is_dir()


def test_make_folders_never_makes_a_folder_through_a_link_or_outside_the_root(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    out.mkdir()
    (out / "data").symlink_to(elsewhere)  # the allowed link: gone through
    root = Root(out, link_ok=("data",))
    root.make_folders(out / "data" / "a" / "b")
    assert (elsewhere / "a" / "b").is_dir()
    (out / "data" / "a" / "link").symlink_to(tmp_path)  # a user's link below it: refused
    with pytest.raises(OwnershipError, match="symlink"):
        root.make_folders(out / "data" / "a" / "link" / "made")
    assert not (tmp_path / "made").exists()
    (out / "file").write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        root.make_folders(out / "file" / "sub")
    with pytest.raises(OwnershipError):
        root.make_folders(tmp_path / "outside")
    assert not (tmp_path / "outside").exists()


def test_a_symlink_at_a_name_is_never_removed_replaced_or_followed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "user.json"
    target.write_text("user")
    (out / "multidatabackend.json").symlink_to(target)
    root = Root(out)
    with pytest.raises(OwnershipError):
        root.write_atomic(out / "multidatabackend.json", b"tool")
    with pytest.raises(OwnershipError):
        root.unlink(out / "multidatabackend.json")
    assert target.read_text() == "user" and (out / "multidatabackend.json").is_symlink()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_remove_files_removes_exactly_the_listed_regular_files(tmp_path):
    out = tmp_path / "out"
    base = out / "data" / "s0"
    (base / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.jpg").write_bytes(b"user")
    for name in ("a.jpg", "a.txt", "sub/b.jpg", "notes.md"):
        (base / name).write_bytes(b"x")
    (base / "link").symlink_to(outside)  # a user's link inside the shard's folder
    (base / "c.jpg").symlink_to(outside / "a.jpg")  # a user's link under a name the tool once wrote
    removed = Root(out, link_ok=("data",)).remove_files(
        base, ["a.jpg", "a.txt", "sub/b.jpg", "link/a.jpg", "c.jpg", "../../x", "missing.jpg"]
    )
    assert removed == 3
    assert sorted(tree(base)) == ["c.jpg", "link", "notes.md"]  # sub/ was left empty: pruned
    assert (outside / "a.jpg").read_bytes() == b"user"


def test_rename_new_and_merge_new_never_replace(tmp_path):
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "a" / "x.jpg").write_bytes(b"tool")
    (out / "b").mkdir()
    (out / "b" / "x.jpg").write_bytes(b"user")
    root = Root(out)
    with pytest.raises(FileExistsError):
        root.rename_new(out / "a", out / "b")
    with pytest.raises(FileExistsError):
        root.merge_new(out / "a", out / "b")
    assert (out / "b" / "x.jpg").read_bytes() == b"user" and (out / "a" / "x.jpg").read_bytes() == b"tool"
    (out / "a" / "x.jpg").rename(out / "a" / "y.jpg")
    root.merge_new(out / "a", out / "b")
    assert tree(out) == {"b/x.jpg": b"user", "b/y.jpg": b"tool"}


def test_every_delete_move_and_overwrite_in_the_package_goes_through_fsio():
    """A grep, so that a new `os.unlink` elsewhere fails here rather than in a user's folder."""
    direct = re.compile(r"\b(os\.(unlink|remove|rmdir|rename|replace|link)|shutil\.(rmtree|move))\(|O_TRUNC")
    method = re.compile(r"(\w+|\))\.(unlink|rmdir|rename|replace)\((.?)")
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent == PACKAGE / "store" / "fsio":  # the package every removal goes through
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            bad = direct.search(code) is not None
            for m in method.finditer(code):
                receiver, name, first = m.groups()
                if name == "replace" and (first in "\"'" or code[m.end() - 1 :].startswith("os.sep")):
                    continue  # str.replace
                if receiver in ("fs", "root") or (receiver == ")" and "Root(" in code):
                    continue  # fsio.Root
                bad = True
            if bad:
                offenders.append(f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}")
    assert offenders == []


def test_exdev_fallback_copies_when_rename_crosses_file_systems(tmp_path, monkeypatch):
    out = tmp_path / "out"
    (out / "a" / "deep").mkdir(parents=True)
    (out / "a" / "deep" / "x.jpg").write_bytes(b"img")
    real_rename = os.rename

    def rename(src, dst, *args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "rename", rename)
    Root(out).rename_new(out / "a", out / "b")
    monkeypatch.setattr(os, "rename", real_rename)
    assert tree(out) == {"b/deep/x.jpg": b"img"}


def test_replace_never_renames_a_symlink_source(tmp_path):
    """`replace` moves the tool's own file: a link put under the source's name is not renamed (nor followed)."""
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (out / "x.part").symlink_to(victim)
    with pytest.raises(OwnershipError, match="symlink"):
        Root(out).replace(out / "x.part", out / "x")
    assert (out / "x.part").is_symlink() and not os.path.lexists(out / "x") and victim.read_text() == "precious"


def test_open_new_move_new_and_set_aside_never_take_or_replace_a_name(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    root = Root(out)
    (out / "link").symlink_to(victim)
    (out / "dangling").symlink_to(tmp_path / "nothing")
    for taken in ("link", "dangling"):
        with pytest.raises(FileExistsError):
            os.close(root.open_new(out / taken))  # never opened through a link, never created at its target
    assert victim.read_text() == "precious" and not (tmp_path / "nothing").exists()
    fd = root.open_new(out / "mine.part")
    os.write(fd, b"tool")
    created = os.fstat(fd)
    os.close(fd)
    (out / "user").write_text("user")
    for taken in ("user", "link", "dangling"):
        with pytest.raises(FileExistsError):
            root.move_new(out / "mine.part", out / taken)
    assert (out / "user").read_text() == "user" and victim.read_text() == "precious"
    root.move_new(out / "mine.part", out / "mine", same_as=created)
    assert (out / "mine").read_bytes() == b"tool" and not (out / "mine.part").exists()
    # Only the very file the tool made is moved or removed under its name.
    (out / "other").write_text("user's, same name later")
    with pytest.raises(OwnershipError, match="no longer the file"):
        root.move_new(out / "other", out / "other2", same_as=created)
    with pytest.raises(OwnershipError, match="no longer the file"):
        root.unlink(out / "other", same_as=created)
    assert (out / "other").read_text() == "user's, same name later"
    # set_aside takes the first free name after <name><suffix>.
    (out / "mine.corrupt").write_text("older")
    (out / "mine.corrupt.1").symlink_to(victim)
    assert root.set_aside(out / "mine", ".corrupt") == out / "mine.corrupt.2"
    assert (out / "mine.corrupt").read_text() == "older" and (out / "mine.corrupt.1").is_symlink()
    assert (out / "mine.corrupt.2").read_bytes() == b"tool" and not (out / "mine").exists()
    with pytest.raises(OwnershipError, match="symlink"):
        root.move_new(out / "link", out / "moved")  # a link is not the tool's file
    assert (out / "link").is_symlink() and not os.path.lexists(out / "moved")
