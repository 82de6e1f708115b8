"""Ownership end to end: convert, re-run and --restart never delete, move or overwrite what the tool did not
create, never outside OUT, never through a symlink (the safety issue, point 2). `fsio.Root` is the one place
that does any of it; its own tests are tests/store/test_fsio.py."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import convert, tree
from typer.testing import CliRunner

from dalle3_etl.cli import app
from dalle3_etl.devtools.synth import SynthSpec, write_corpus

runner = CliRunner()


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    write_corpus(root, SynthSpec(shards=3, per_shard=8, seed=5, image_bytes=400))
    return root


def shard_input(shards: Path, tmp_path: Path, *ids: int) -> Path:
    folder = tmp_path / ("in-" + "-".join(map(str, ids)))
    folder.mkdir()
    for i in ids:
        shutil.copy2(shards / f"data-00000{i}.tar", folder)
    return folder


def cli(*args) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})
    return result.exit_code, result.output


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
    from dalle3_etl.settings import Settings
    from dalle3_etl.shard.commit import forget_shard
    from dalle3_etl.store.layout import Layout

    out = tmp_path / "out"
    assert convert([shard_input(shards, tmp_path, 0)], out, workers=1).exit_code == 0
    layout = Layout(out)
    layout.part("data-000000").write_bytes(b"not a parquet")
    before = tree(out / "data")
    forget_shard(layout, "data-000000", Settings())
    assert tree(out / "data") == before and not layout.record("data-000000").exists()
    assert layout.claim("data-000000").exists()


# --- links and files of the user's where the tool writes its own (review of stop 23) -------------------------


def test_restart_leaves_webshart_indexes_alone_when_the_output_never_wrote_them(shards, tmp_path):
    inputs = shard_input(shards, tmp_path, 0)
    out = tmp_path / "out"
    assert convert([inputs], out, workers=1).exit_code == 0
    mine = {out / "webshart" / "data-000000.json": b'{"mine": 1}', out / "webshart" / "other.json": b"keep"}
    for path, data in mine.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    code, text = cli("convert", inputs, "-o", out, "-w", "1", "--restart")
    assert code == 0, text
    assert {p: p.read_bytes() for p in mine} == mine


def test_a_users_file_at_a_new_parquet_name_is_refused_not_replaced(shards, tmp_path):
    inputs = shard_input(shards, tmp_path, 0)
    out = tmp_path / "out"
    assert convert([inputs], out, workers=1).exit_code == 0
    (out / "mine.parquet").write_bytes(b"user data")
    config = tmp_path / "pn.toml"
    config.write_text('[convert]\nparquet_name = "mine.parquet"\n')
    before = tree(out)
    code, text = cli("convert", inputs, "-o", out, "-w", "1", "--restart", "--config", config)
    assert code == 2 and "mine.parquet exists and was not written by dalle3-etl" in text, text
    assert "Traceback" not in text and tree(out) == before  # refused before --restart removed anything


@pytest.mark.parametrize("name", ["multidatabackend.json", "dalle3.parquet", "rejects.jsonl"])
def test_a_symlink_at_one_of_the_tools_files_is_refused_before_any_work(shards, tmp_path, name):
    inputs = shard_input(shards, tmp_path, 0)
    out = tmp_path / "out"
    assert convert([inputs], out, workers=1).exit_code == 0
    moved = tmp_path / ("moved-" + name)
    shutil.move(str(out / name), moved)
    (out / name).symlink_to(moved)
    kept = moved.read_bytes()
    for more in ([], ["--restart"], ["--dry-run"], ["--dry-run", "--restart"]):  # a dry run refuses it the same way
        code, text = cli("convert", inputs, "-o", out, "-w", "1", *more)
        assert code == 2 and f"{name} is a symlink" in text and "Traceback" not in text, text
    assert (out / name).is_symlink() and moved.read_bytes() == kept
    assert cli("status", out)[0] == 0 and "pending 0" in cli("status", out)[1]  # nothing of the output lost


def test_a_dangling_link_at_metadata_jsonl_is_refused_before_converting(shards, tmp_path):
    inputs = shard_input(shards, tmp_path, 0, 1)
    out = tmp_path / "out"
    assert convert([shard_input(shards, tmp_path, 0)], out, workers=1).exit_code == 0
    (out / "data" / "metadata.jsonl").symlink_to(tmp_path / "nowhere")
    code, text = cli("convert", inputs, "-o", out, "-w", "1", "--also", "imagefolder")
    assert code == 2 and "metadata.jsonl is a symlink" in text and "Traceback" not in text, text
    assert not (out / "data" / "data-000001").exists()  # refused before any work


def test_restart_over_a_shard_folder_linked_from_elsewhere_is_refused_before_removing_anything(shards, tmp_path):
    inputs = shard_input(shards, tmp_path, 0, 1)
    out = tmp_path / "out"
    assert convert([inputs], out, workers=1).exit_code == 0
    moved = tmp_path / "moved"
    shutil.move(str(out / "data" / "data-000000"), moved)
    (out / "data" / "data-000000").symlink_to(moved)
    before, files = tree(out), tree(moved)
    code, text = cli("convert", inputs, "-o", out, "-w", "1", "--restart")
    assert code == 2 and "data-000000 is a symlink" in text and "Traceback" not in text, text
    assert tree(out) == before and tree(moved) == files
    code, text = cli("status", out)
    assert code == 0 and "pending 0" in text, text


def test_flat_never_makes_a_folder_through_a_users_link_in_out_data(tmp_path):
    import io
    import random
    import tarfile

    import orjson

    from dalle3_etl.devtools.synth.images import make_image

    def shard(path: Path, name: str, caption: str) -> None:
        with tarfile.open(path, "w") as tf:
            for member, data in (
                (name + ".jpg", make_image("jpeg", 64, 64, 500, random.Random(1))),
                (name + ".json", orjson.dumps({"short_caption": caption, "width": 64, "height": 64})),
            ):
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))

    inputs, elsewhere, out = tmp_path / "in", tmp_path / "elsewhere", tmp_path / "out"
    inputs.mkdir()
    elsewhere.mkdir()
    shard(inputs / "s1.tar", "top", "a")
    shard(inputs / "s2.tar", "sub/deep/a", "b")
    code, text = cli("convert", inputs / "s1.tar", "-o", out, "--flat", "-w", "1", "-q")
    assert code == 0, text
    (out / "data" / "sub").symlink_to(elsewhere)
    code, text = cli("convert", inputs / "s1.tar", inputs / "s2.tar", "-o", out, "--flat", "-w", "1", "-q")
    assert code == 0 and "Traceback" not in text, text
    assert list(elsewhere.iterdir()) == []  # nothing made outside OUT
    rejects = [orjson.loads(line) for line in (out / "rejects.jsonl").read_bytes().splitlines()]
    assert [(r["member"], r["reason"]) for r in rejects] == [("sub/deep/a.jpg", "name_clash")]
    assert "sub/deep/a.jpg" not in pq.read_table(out / "dalle3.parquet").column("filename").to_pylist()


def test_entry_over_a_symlinked_entry_file_says_so_in_one_line(shards, tmp_path):
    out = tmp_path / "out"
    assert convert([shard_input(shards, tmp_path, 0)], out, workers=1).exit_code == 0
    moved = tmp_path / "mine.json"
    shutil.move(str(out / "multidatabackend.json"), moved)
    (out / "multidatabackend.json").symlink_to(moved)
    kept = moved.read_bytes()
    code, text = cli("entry", out, "--id", "other")
    assert code == 1 and "multidatabackend.json is a symlink" in text and "Traceback" not in text, text
    assert moved.read_bytes() == kept
