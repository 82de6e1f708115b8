"""Ownership: the tool never deletes, moves or overwrites what it did not create, never outside OUT, never
through a symlink (the safety issue, point 2). `fsio.Root` is the one place that does any of it."""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import convert
from dalle3_etl.cli import app
from dalle3_etl.store.fsio import OwnershipError, Root
from dalle3_etl.devtools.synth import SynthSpec, write_corpus

PACKAGE = Path(__file__).resolve().parent.parent / "dalle3_etl"
runner = CliRunner()


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    write_corpus(root, SynthSpec(shards=3, per_shard=8, seed=5, image_bytes=400))
    return root


def tree(root: Path) -> dict[str, bytes | str]:
    """Every file (bytes) and symlink (its target) below root, without following links."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_file():
                out[rel] = path.read_bytes()
    return out


def shard_input(shards: Path, tmp_path: Path, *ids: int) -> Path:
    folder = tmp_path / ("in-" + "-".join(map(str, ids)))
    folder.mkdir()
    for i in ids:
        shutil.copy2(shards / f"data-00000{i}.tar", folder)
    return folder


def cli(*args) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})
    return result.exit_code, result.output


# --- Root, the one module ------------------------------------------------------------------------------


def test_root_refuses_paths_outside_or_at_the_root(tmp_path):
    root = Root(tmp_path / "out")
    (tmp_path / "out").mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    for path in (victim, tmp_path / "out", tmp_path / "out" / ".." / "victim.txt", tmp_path / "outside" / "x",
                 Path(str(tmp_path / "out") + "2") / "x"):
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
    removed = Root(out, link_ok=("data",)).remove_files(base, ["a.jpg", "a.txt", "sub/b.jpg", "link/a.jpg",
                                                                "c.jpg", "../../x", "missing.jpg"])
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
        if path.name == "fsio.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            bad = direct.search(code) is not None
            for m in method.finditer(code):
                receiver, name, first = m.groups()
                if name == "replace" and (first in "\"'" or code[m.end() - 1:].startswith("os.sep")):
                    continue  # str.replace
                if receiver in ("fs", "root") or (receiver == ")" and "Root(" in code):
                    continue  # fsio.Root
                bad = True
            if bad:
                offenders.append(f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}")
    assert offenders == []


# --- convert, re-run and --restart -----------------------------------------------------------------------


def test_out_data_may_be_a_symlink_the_user_made(shards, tmp_path):
    """The issue's reproduction: images moved to another folder and linked back, then more shards converted."""
    out = tmp_path / "out"
    assert convert([shard_input(shards, tmp_path, 0)], out, workers=1).exit_code == 0
    other = tmp_path / "other"
    other.mkdir()
    shutil.move(str(out / "data"), str(other / "d"))
    (out / "data").symlink_to(other / "d")
    before = tree(other / "d")
    both = shard_input(shards, tmp_path, 0, 1)
    assert convert([both], out, workers=1).exit_code == 0
    after = tree(other / "d")
    assert {k: after[k] for k in before} == before  # the first shard's files untouched
    assert any(k.startswith("data-000001/") for k in after)
    assert (out / "data").is_symlink()
    code, text = cli("verify", out)
    assert code == 0, text


def _other_filesystem() -> Path | None:
    """A folder on another file system than the tests' temporary folder (/dev/shm is tmpfs), or None."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tempfile.gettempdir()).st_dev:
        return None
    return Path(tempfile.mkdtemp(dir=shm, prefix="dalle3-etl-test-"))


def test_out_data_linked_to_another_file_system(shards, tmp_path):
    other = _other_filesystem()
    if other is None:
        pytest.skip("no second file system here (/dev/shm on tmpfs is used where it exists)")
    try:
        reference = tmp_path / "ref"
        inputs = shard_input(shards, tmp_path, 0, 1)
        assert convert([inputs], reference, workers=1).exit_code == 0
        out = tmp_path / "out"
        out.mkdir()
        (out / "data").symlink_to(other)
        (out / ".dalle3-etl").mkdir()  # an output folder the user prepared: the data link is theirs
        assert convert([inputs], out, workers=2).exit_code == 0
        assert tree(other) == tree(reference / "data")
        (other / "mine.txt").write_text("user")
        assert convert([inputs], out, workers=1, flat=False, restart_run=True).exit_code == 0
        assert (other / "mine.txt").read_text() == "user"
        assert {k: v for k, v in tree(other).items() if k != "mine.txt"} == tree(reference / "data")
    finally:
        shutil.rmtree(other)


def test_restart_removes_the_tools_output_and_keeps_the_users(shards, tmp_path):
    inputs = shard_input(shards, tmp_path, 0, 1)
    out = tmp_path / "out"
    assert convert([inputs], out, workers=1).exit_code == 0
    user = {
        out / "notes.md": b"my notes",
        out / "cache" / "vae" / "dalle3" / "x.pt": b"simpletuner cache",
        out / "data" / "mine.png": b"my own image",
        out / "data" / "aspect_ratio_bucket_indices_dalle3.json": b"{}",
        out / "data" / "data-000000" / "extra.txt": b"my caption notes",
    }
    for path, data in user.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    code, text = cli("convert", inputs, "-o", out, "-w", "1", "--no-captions", "--restart")
    assert code == 0, text
    assert {p: p.read_bytes() for p in user} == user
    fresh = tmp_path / "fresh"
    assert convert([inputs], fresh, workers=1, captions=False).exit_code == 0
    assert (out / "dalle3.parquet").read_bytes() == (fresh / "dalle3.parquet").read_bytes()
    ours = {k: v for k, v in tree(out / "data").items() if Path(out / "data" / k) not in user}
    assert ours == tree(fresh / "data")  # no caption file of the first run is left


def test_a_user_folder_with_a_shards_name_is_never_written_into_nor_removed(shards, tmp_path):
    out = tmp_path / "out"
    assert convert([shard_input(shards, tmp_path, 0)], out, workers=1).exit_code == 0
    mine = out / "data" / "data-000001"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"user photo")
    before = tree(out)
    code, text = cli("convert", shard_input(shards, tmp_path, 0, 1), "-o", out, "-w", "1")
    assert code == 2, text
    assert "data-000001" in text and "not written by dalle3-etl" in text and "Traceback" not in text
    assert tree(out) == before


def test_a_redone_shard_keeps_a_users_file_in_its_folder(shards, tmp_path):
    inputs = shard_input(shards, tmp_path, 0)
    out = tmp_path / "out"
    assert convert([inputs], out, workers=1).exit_code == 0
    first = tree(out / "data")
    (out / "data" / "data-000000" / "my-notes.md").write_bytes(b"user")
    shard = inputs / "data-000000.tar"
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))  # "changed": redone
    code, text = cli("convert", inputs, "-o", out, "-w", "1")
    assert code == 0 and "Resuming" not in text, text
    assert (out / "data" / "data-000000" / "my-notes.md").read_bytes() == b"user"
    assert {k: v for k, v in tree(out / "data").items() if not k.endswith("my-notes.md")} == first


def test_a_user_symlink_in_a_shard_folder_is_neither_followed_nor_removed(shards, tmp_path):
    inputs = shard_input(shards, tmp_path, 0)
    out = tmp_path / "out"
    assert convert([inputs], out, workers=1).exit_code == 0
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.jpg").write_bytes(b"precious")
    first = pq.read_table(out / "dalle3.parquet").column("filename")[0].as_py()  # data-000000/<key>.<ext>
    image = out / "data" / first
    image.unlink()
    image.symlink_to(victim / "keep.jpg")  # the user replaced one of the tool's images by a link
    code, text = cli("convert", inputs, "-o", out, "-w", "1", "--restart")
    assert (victim / "keep.jpg").read_bytes() == b"precious"
    assert code == 1 and "exists already" in text  # the link is the user's now: not replaced, the shard fails
    assert image.is_symlink()


def test_a_failed_commit_never_removes_what_it_could_not_list(shards, tmp_path, monkeypatch):
    """A part that cannot be read means the files cannot be listed: the folder stays as it is."""
    from dalle3_etl.shard.commit import forget_shard
    from dalle3_etl.settings import Settings
    from dalle3_etl.store.layout import Layout

    out = tmp_path / "out"
    assert convert([shard_input(shards, tmp_path, 0)], out, workers=1).exit_code == 0
    layout = Layout(out)
    layout.part("data-000000").write_bytes(b"not a parquet")
    before = tree(out / "data")
    forget_shard(layout, "data-000000", Settings())
    assert tree(out / "data") == before and not layout.record("data-000000").exists()
    assert layout.claim("data-000000").exists()


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
