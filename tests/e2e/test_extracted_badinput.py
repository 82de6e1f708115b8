"""Bad input in an extracted folder: every problem is a reject naming the file, the good samples are converted,
nothing in the input folder is followed, changed or removed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from badinput_helpers import img
from typer.testing import CliRunner

from dalle3_etl.cli import app

runner = CliRunner()


def sample(folder: Path, key: str, caption: str = "a cat", image: bool = True, meta: bool = True) -> None:
    path = folder / key
    path.parent.mkdir(parents=True, exist_ok=True)
    if image:
        path.with_name(path.name + ".png").write_bytes(img("png", 8, 6))
    if meta:
        path.with_name(path.name + ".json").write_bytes(orjson.dumps({"short_caption": caption}))


def convert(folder: Path, out: Path, *options) -> tuple[int, str]:
    result = runner.invoke(app, ["convert", str(folder), "-o", str(out), "-w", "1", *map(str, options)])
    return result.exit_code, result.output


def rejected(out: Path) -> dict[str, str]:
    lines = [orjson.loads(x) for x in (out / "rejects.jsonl").read_bytes().splitlines()]
    return {r["member"]: r["reason"] for r in lines}


def test_partners_missing_links_hidden_files_and_subfolders(tmp_path):
    folder = tmp_path / "in"
    sample(folder, "good")
    sample(folder, "no_json", meta=False)
    sample(folder, "no_image", image=False)
    sample(folder, "sub/deep")  # a subfolder: key sub/deep
    sample(folder, "named.png/inner")  # a subfolder named like an image file of key "named"
    (tmp_path / "outside.png").write_bytes(img("png", 4, 4))
    (folder / "out_link.png").symlink_to(tmp_path / "outside.png")
    (folder / "out_link.json").write_bytes(orjson.dumps({"short_caption": "x"}))
    (folder / "in_link.png").symlink_to(folder / "good.png")
    (folder / ".DS_Store").write_bytes(b"junk")
    (folder / "._good.png").write_bytes(b"resource fork")
    (folder / ".hidden").mkdir()
    sample(folder, ".hidden/h")
    before = sorted(str(p) for p in folder.rglob("*"))
    out = tmp_path / "out"
    code, output = convert(folder, out, "-q")
    assert code == 0, output
    keys = [r["key"] for r in pq.read_table(out / "dalle3.parquet").to_pylist()]
    assert keys == ["good", "named.png/inner", "sub/deep"]
    assert rejected(out) == {
        "in_link.png": "unsafe_member",
        "no_image.json": "json_without_image",
        "no_json.png": "image_without_json",
        "out_link.png": "unsafe_member",  # its JSON partner goes with it, on this one line
    }
    assert sorted(str(p) for p in folder.rglob("*")) == before
    assert not any(p.name == "outside.png" for p in out.rglob("*"))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads a file of mode 000")
def test_an_unreadable_file_is_a_reject_naming_it(tmp_path):
    folder = tmp_path / "in"
    sample(folder, "a")
    sample(folder, "b")
    (folder / "b.png").chmod(0)
    try:
        code, output = convert(folder, tmp_path / "out", "-q")
    finally:
        (folder / "b.png").chmod(0o644)
    assert code == 0, output
    line = orjson.loads((tmp_path / "out" / "rejects.jsonl").read_bytes())
    assert (line["member"], line["reason"]) == ("b.png", "member_unreadable")
    assert "cannot be read" in line["detail"]


@pytest.mark.skipif(sys.platform == "darwin", reason="APFS refuses names that are not UTF-8")
def test_a_name_that_is_not_utf8_is_rejected_and_shown_escaped(tmp_path):
    folder = tmp_path / "in"
    sample(folder, "ok")
    bad = os.fsencode(folder) + b"/caf\xe9"
    with open(bad + b".png", "wb") as fh:
        fh.write(img("png", 4, 4))
    with open(bad + b".json", "wb") as fh:
        fh.write(b'{"short_caption": "x"}')
    code, output = convert(folder, tmp_path / "out", "-q")
    assert code == 0, output
    assert rejected(tmp_path / "out") == {"caf\\xe9.json": "unsafe_member", "caf\\xe9.png": "unsafe_member"}


@pytest.mark.parametrize("options", [(), ("--link", "none", "--captions-in-place")], ids=["copy", "in-place"])
def test_a_name_with_a_c1_control_character_is_rejected_and_nothing_named_after_it(tmp_path, options):
    """U+009B (CSI) in a file name: an `unsafe_member` reject like ESC, no image in OUT and no caption file in the
    input folder named after it."""
    folder = tmp_path / "in"
    sample(folder, "ok")
    sample(folder, "csi\u009b2J")
    before = sorted(os.listdir(folder))
    out = tmp_path / "out"
    code, output = convert(folder, out, "-q", *options)
    assert code == 0, output
    assert rejected(out) == {"csi\u009b2J.json": "unsafe_member", "csi\u009b2J.png": "unsafe_member"}
    assert [r["key"] for r in pq.read_table(out / "dalle3.parquet").to_pylist()] == ["ok"]
    made = sorted(os.listdir(folder)) if options else sorted(p.name for p in (out / "data").rglob("*"))
    assert made == (sorted([*before, "ok.txt"]) if options else ["in-000000", "ok.png", "ok.txt"])


def test_a_file_that_vanishes_after_the_listing(tmp_path, monkeypatch):
    from dalle3_etl.shard import folderstream

    folder = tmp_path / "in"
    sample(folder, "a")
    sample(folder, "b")
    real_open = folderstream.FolderReader._open

    def vanishing(self, rel, name, offset):
        if rel == b"b.png":
            os.unlink(folder / "b.png")
        return real_open(self, rel, name, offset)

    monkeypatch.setattr(folderstream.FolderReader, "_open", vanishing)
    code, output = convert(folder, tmp_path / "out", "-q")
    assert code == 0, output
    line = orjson.loads((tmp_path / "out" / "rejects.jsonl").read_bytes())
    assert (line["member"], line["reason"]) == ("b.png", "member_unreadable")
    assert "listed, then removed" in line["detail"]


def test_a_file_the_system_refuses_to_open_is_a_reject_also_as_root(tmp_path, monkeypatch):
    """What chmod 000 gives a user, made for root too: the open of that one input file fails with EACCES."""
    import errno

    from dalle3_etl.shard import folderstream

    folder = tmp_path / "in"
    sample(folder, "a")
    sample(folder, "b")
    real_open = os.open

    def refusing(path, flags, mode=0o777, *, dir_fd=None):
        if dir_fd is not None and path == b"b.json":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(folderstream.os, "open", refusing)
    code, output = convert(folder, tmp_path / "out", "-q")
    monkeypatch.undo()
    assert code == 0, output
    lines = [orjson.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_bytes().splitlines()]
    assert [(r["member"], r["reason"]) for r in lines] == [("b.json", "member_unreadable")]
    assert lines[0]["detail"] == "cannot be read: Permission denied"  # b.png goes with it, no line of its own
    assert [r["key"] for r in pq.read_table(tmp_path / "out" / "dalle3.parquet").to_pylist()] == ["a"]
