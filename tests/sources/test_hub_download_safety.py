"""`download` never replaces, moves or writes through what it did not download: a file already at a shard's name is
only checked (reused when it is the Hub's file, else left as it is), one of another size is refused before any
download, and a bad download of its own is set aside without replacing an existing ``.corrupt``. Against the
loopback fake Hub (tests/fakehub.py) serving shards made by `devtools.synth`."""

from __future__ import annotations

import pytest
from fakehub import FakeHub, files_from_dir, hub_env  # noqa: F401  (fixture)
from typer.testing import CliRunner

from dalle3_etl.cli import app
from dalle3_etl.devtools.synth import SynthSpec, write_corpus
from dalle3_etl.sources.hub.download import download

S0, S1 = "data/data-000000.tar", "data/data-000001.tar"


@pytest.fixture
def hub(hub_env, tmp_path):  # noqa: F811
    root = tmp_path / "shards"
    write_corpus(root, SynthSpec(shards=2, per_shard=4, seed=5, image_bytes=2000))
    with FakeHub(files_from_dir(root)) as served:
        hub_env.point_to(served)
        yield served


def run(hub, dl):
    args = ["download", "--repo", hub.repo_id, "--local-dir", str(dl), "-q"]
    return CliRunner().invoke(app, args, env={"COLUMNS": "10000"})


def shard_gets(hub):
    return [g.file for g in hub.gets() if g.file and g.file.endswith(".tar")]


@pytest.mark.parametrize("what", ["other size", "folder", "dangling link"])
def test_a_shard_name_taken_by_something_else_is_refused_before_any_download(hub, tmp_path, what):
    dl = tmp_path / "dl"
    (dl / "data").mkdir(parents=True)
    taken = dl / S0
    if what == "other size":
        taken.write_bytes(b"my own file")
    elif what == "folder":
        taken.mkdir()
    else:
        taken.symlink_to(tmp_path / "nothing")
    hub.clear_log()
    res = run(hub, dl)
    assert res.exit_code == 2, res.output
    assert f"download: in the way, left as it is: {taken} (" in res.output and "left as it is" in res.output
    assert shard_gets(hub) == []  # nothing downloaded
    assert sorted(p.name for p in (dl / "data").iterdir()) == ["data-000000.tar"]
    if what == "other size":
        assert taken.read_bytes() == b"my own file"
    elif what == "folder":
        assert taken.is_dir()
    else:
        assert taken.is_symlink() and not (tmp_path / "nothing").exists()


def test_a_same_size_file_not_downloaded_by_the_run_is_left_as_it_is(hub, tmp_path):
    dl = tmp_path / "dl"
    (dl / "data").mkdir(parents=True)
    mine = b"U" * len(hub.files[S0])
    (dl / S0).write_bytes(mine)
    (dl / "data" / "data-000000.tar.corrupt").write_text("older file")
    hub.clear_log()
    res = run(hub, dl)
    assert res.exit_code == 1, res.output
    assert "data/data-000000.tar: sha256 mismatch" in res.output
    assert f"{dl / S0} was there before this run and is left as it is" in res.output
    assert (dl / S0).read_bytes() == mine  # neither replaced nor moved
    assert (dl / "data" / "data-000000.tar.corrupt").read_text() == "older file"
    assert (dl / S1).read_bytes() == hub.files[S1]  # the other shard went on
    assert shard_gets(hub) == [S1]


def test_a_bad_download_is_set_aside_without_replacing_a_corrupt_file(hub, tmp_path):
    dl = tmp_path / "dl"
    (dl / "data").mkdir(parents=True)
    (dl / "data" / "data-000001.tar.corrupt").write_text("older file")
    hub.corrupt(S1)
    ok, bad = download(hub.repo_id, dl, progress=False)
    assert ok.ok and not bad.ok and "sha256 mismatch" in bad.error
    assert bad.moved_to == dl / "data" / "data-000001.tar.corrupt.1"
    assert f"moved it to {bad.moved_to}" in bad.error
    assert (dl / "data" / "data-000001.tar.corrupt").read_text() == "older file"
    assert bad.moved_to.read_bytes() == hub._corrupt[S1]
    assert not (dl / S1).exists()
    hub.heal()
    assert all(r.ok for r in download(hub.repo_id, dl, progress=False))  # downloaded again once the Hub is fine


def test_a_verified_file_already_there_is_reused_without_downloading(hub, tmp_path):
    dl = tmp_path / "dl"
    (dl / "data").mkdir(parents=True)
    (dl / S0).write_bytes(hub.files[S0])  # e.g. copied from a --keep-tars folder
    hub.clear_log()
    first, second = download(hub.repo_id, dl, progress=False)
    assert first.ok and second.ok and not first.cached
    assert shard_gets(hub) == [S1]
    hub.clear_log()
    assert all(r.ok and r.cached for r in download(hub.repo_id, dl, progress=False))  # marked verified
    assert shard_gets(hub) == []


def test_a_symlink_in_the_clients_download_state_is_refused(hub, tmp_path):
    """The client appends to ``.cache/huggingface/download/...incomplete`` and writes its metadata through links."""
    dl = tmp_path / "dl"
    state = dl / ".cache" / "huggingface" / "download" / "data"
    state.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (state / "data-000000.tar.metadata").symlink_to(victim)
    res = run(hub, dl)
    assert res.exit_code == 2, res.output
    assert f"{state / 'data-000000.tar.metadata'} (a symlink" in res.output
    assert victim.read_text() == "precious" and not (dl / S0).exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (state / "data-000000.tar.metadata").unlink()
    (dl / ".cache" / "huggingface" / "download").rename(tmp_path / "moved")
    (dl / ".cache" / "huggingface" / "download").symlink_to(elsewhere)
    res = run(hub, dl)
    assert res.exit_code == 2 and "a symlink" in res.output, res.output
    assert list(elsewhere.iterdir()) == []
