"""`--keep-tars DIR` never writes through, renames, replaces or moves what it did not create there: its temporary is
a new file of its own, a file already at a kept name is reused only once verified and otherwise left as it is.
Against the loopback fake Hub (tests/fakehub.py) serving shards made by `devtools.synth`."""

from __future__ import annotations

import os

import pytest
from fakehub import FakeHub, files_from_dir, hub_env  # noqa: F401  (fixture)
from typer.testing import CliRunner

from dalle3_etl.cli import app
from dalle3_etl.devtools.synth import SynthSpec, write_corpus
from dalle3_etl.sources.hub import stream
from dalle3_etl.sources.hub.errors import HubError, HubIntegrityError
from dalle3_etl.sources.resolve import resolve_inputs

S0, S1 = "data/data-000000.tar", "data/data-000001.tar"


@pytest.fixture
def hub(hub_env, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(stream, "CHUNK_SIZE", 4096)  # several chunks a shard: a read can stop half way
    root = tmp_path / "shards"
    write_corpus(root, SynthSpec(shards=2, per_shard=4, seed=3, image_bytes=4000))
    with FakeHub(files_from_dir(root)) as served:
        hub_env.point_to(served)
        yield served


def run(hub, keep, out, *extra):
    args = ["convert", hub.uri("data/*.tar"), "-o", str(out), "--workers", "1", "--keep-tars", str(keep), *extra]
    return CliRunner().invoke(app, args, env={"COLUMNS": "10000"})  # a message on one line


def test_a_link_at_the_part_name_is_never_written_through_nor_renamed(hub, tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (keep / "data-000000.tar.part").symlink_to(victim)
    res = run(hub, keep, tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert victim.read_text() == "precious"
    assert os.readlink(keep / "data-000000.tar.part") == str(victim)  # still the user's link, where it was
    assert not (keep / "data-000000.tar").is_symlink()
    assert (keep / "data-000000.tar").read_bytes() == hub.files[S0]
    assert (keep / "data-000001.tar").read_bytes() == hub.files[S1]
    assert sorted(p.name for p in keep.iterdir()) == ["data-000000.tar", "data-000000.tar.part", "data-000001.tar"]


@pytest.mark.parametrize("what", ["other size", "folder", "dangling link"])
def test_a_kept_name_taken_by_something_else_is_refused_before_any_work(hub, tmp_path, what):
    keep = tmp_path / "keep"
    keep.mkdir()
    taken = keep / "data-000000.tar"
    if what == "other size":
        taken.write_bytes(b"my own file")
    elif what == "folder":
        taken.mkdir()
        (taken / "x").write_text("mine")
    else:
        taken.symlink_to(tmp_path / "nothing")
    hub.clear_log()
    res = run(hub, keep, tmp_path / "out")
    assert res.exit_code == 2, res.output
    assert f"--keep-tars: in the way, left as it is: {taken} (" in res.output and "left as it is" in res.output
    assert [g for g in hub.gets() if g.file and g.file.endswith(".tar")] == []  # nothing read
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in keep.iterdir()) == ["data-000000.tar"]
    if what == "other size":
        assert taken.read_bytes() == b"my own file"
    elif what == "folder":
        assert (taken / "x").read_text() == "mine"
    else:
        assert taken.is_symlink() and not (tmp_path / "nothing").exists()


def test_a_same_size_file_that_is_not_the_shard_fails_that_shard_and_is_left(hub, tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    mine = b"U" * len(hub.files[S0])
    (keep / "data-000000.tar").write_bytes(mine)
    (keep / "data-000000.tar.corrupt").write_text("older file")
    res = run(hub, keep, tmp_path / "out")
    assert res.exit_code == 1, res.output
    assert "sha256 mismatch reading kept copy" in res.output
    assert f"{keep / 'data-000000.tar'} is left as it is" in res.output
    assert (keep / "data-000000.tar").read_bytes() == mine  # neither replaced nor moved
    assert (keep / "data-000000.tar.corrupt").read_text() == "older file"
    assert (keep / "data-000001.tar").read_bytes() == hub.files[S1]  # the other shard went on
    assert sorted(p.name for p in keep.iterdir()) == ["data-000000.tar", "data-000000.tar.corrupt", "data-000001.tar"]


def test_a_verified_copy_already_there_is_reused_without_the_network(hub, tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "data-000000.tar").write_bytes(hub.files[S0])
    hub.clear_log()
    res = run(hub, keep, tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert [g.file for g in hub.gets() if g.file and g.file.endswith(".tar")] == [S1]


def test_a_kept_name_taken_while_reading_is_left_as_it_is(hub, tmp_path):
    keep = tmp_path / "keep"
    (src,) = resolve_inputs([hub.uri(S0)], keep_dir=keep)
    final = keep / "data-000000.tar"
    # Someone else's different file appears at the kept name while the shard is read: not replaced.
    with src.open() as f:
        f.read(1000)
        final.write_bytes(b"U" * src.size)
        with pytest.raises(HubError, match="appeared while the file was read"):
            f.finish()
    assert final.read_bytes() == b"U" * src.size
    assert sorted(p.name for p in keep.iterdir()) == ["data-000000.tar"]  # the tool's temporary is gone
    # The same bytes appearing there (another run keeping the same shard) are fine.
    final.unlink()
    with src.open() as f:
        f.read(1000)
        final.write_bytes(hub.files[S0])
        f.finish()
    assert final.read_bytes() == hub.files[S0] and sorted(p.name for p in keep.iterdir()) == ["data-000000.tar"]
    # Something that is not a file of the shard's size appearing before the read starts: refused, left as it is.
    final.unlink()
    final.write_bytes(b"mine")
    with pytest.raises(HubError, match="left as it is"):  # HubLocalFileError
        src.open()
    assert final.read_bytes() == b"mine"


def test_a_failed_read_removes_only_the_tools_own_temporary(hub, tmp_path):
    keep = tmp_path / "keep"
    (src,) = resolve_inputs([hub.uri(S0)], keep_dir=keep)
    with pytest.raises(RuntimeError):
        with src.open() as f:
            f.read(1000)
            (part,) = keep.glob("data-000000.tar*.part")
            part.unlink()
            part.write_text("user's file, under that name now")  # not the file the tool created
            raise RuntimeError("reader failed")
    assert part.read_text() == "user's file, under that name now"
    assert not (keep / "data-000000.tar").exists()


def test_a_damaged_copy_read_by_a_task_is_left_as_it_is(hub, tmp_path):
    """A split shard's task reads the kept copy block by block: a bad block fails it, the file is not moved."""
    from dataclasses import replace

    from dalle3_etl.settings import Settings
    from dalle3_etl.shard.hubsplit import scan_hub
    from dalle3_etl.sources.hub.ranges import BlockHashes, fetch_range

    keep = tmp_path / "keep"
    (src,) = resolve_inputs([hub.uri(S0)], keep_dir=keep)
    points = scan_hub(src, Settings(task_bytes=src.size // 3))
    assert points
    src = replace(src, blocks=BlockHashes.from_json(points.blocks, src.size))
    damaged = bytearray(hub.files[S0])
    damaged[points[0] + 3] ^= 0x01
    (keep / "data-000000.tar").write_bytes(bytes(damaged))
    (keep / "data-000000.tar.corrupt").write_text("older file")
    with pytest.raises(HubIntegrityError, match="is left as it is"):
        fetch_range(src, src.blocks, points[0], points[1], tmp_path / "spool")
    assert (keep / "data-000000.tar").read_bytes() == bytes(damaged)
    assert (keep / "data-000000.tar.corrupt").read_text() == "older file"


def test_ctrl_c_of_a_pool_run_leaves_no_temporary_in_the_keep_dir(hub, tmp_path):
    """The pool's workers are stopped at once on Ctrl-C; each removes the .part files it was writing first."""
    import signal
    import subprocess
    import sys
    import time

    keep, out = tmp_path / "keep", tmp_path / "out"
    keep.mkdir()
    for path in (S0, S1):
        hub.cut(path, after=20_000, times=20)  # a dropped connection is resumed after a pause: reads take a while
    args = [sys.executable, "-m", "dalle3_etl", "convert", hub.uri("data/*.tar"), "-o", str(out), "-q"]
    args += ["--workers", "2", "--keep-tars", str(keep)]
    proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not list(keep.glob("*.part")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert list(keep.glob("*.part")), "no read under way to interrupt"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 130, output
    assert list(keep.glob("*.part")) == []
    hub.heal()
    res = run(hub, keep, out)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in keep.iterdir()) == ["data-000000.tar", "data-000001.tar"]
