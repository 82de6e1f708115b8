"""Hub input and download, against the loopback fake Hub (tests/fakehub.py) with the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import re

import pytest
from fakehub import FakeHub, fake_hub, hub_env, make_shard  # noqa: F401  (fixtures)
from typer.testing import CliRunner

from dalle3_etl.sources.base import SourceError
from dalle3_etl.sources.hub import stream, transfer
from dalle3_etl.sources.hub.download import download
from dalle3_etl.sources.hub.errors import HubIntegrityError, HubNotFoundError, HubTransferError, ShardSelectionError
from dalle3_etl.sources.hub.resolve import (
    _expand_braces,
    _glob_regex,
    resolve_hub_input,
    resolve_hub_inputs,
    with_keep_dir,
)
from dalle3_etl.sources.hub.selection import parse_shard_selection
from dalle3_etl.sources.hub.stream import HubShardSource, open_verified_stream
from dalle3_etl.sources.resolve import resolve_inputs

S0, S1, S2 = (f"data/data-{i:06d}.tar" for i in range(3))


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch):
    monkeypatch.setattr(transfer, "RETRY_WAIT", 0.01)
    monkeypatch.setattr(stream, "CHUNK_SIZE", 8192)  # small files, several chunks each


def shard_files(d):
    return sorted(p.name for p in (d / "data").iterdir())


def read_n(f, n: int) -> bytes:
    """Read exactly n bytes (raw streams return short reads)."""
    parts, got = [], 0
    while got < n:
        chunk = f.read(n - got)
        assert chunk, "unexpected end of stream"
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def cli():
    from dalle3_etl.cli import app  # the project CLI: `download` is one of its commands

    return app


# -- shard selection ---------------------------------------------------------------------------------


def test_parse_shard_selection():
    assert parse_shard_selection("0-9,12") == [*range(10), 12]
    assert parse_shard_selection(" 3 , 1-2,2 ") == [1, 2, 3]
    assert parse_shard_selection("68") == [68]
    for bad, says in [
        ("", "empty"),
        ("1,,2", "empty item"),
        ("a", "'a'"),
        ("5-2", "backwards"),
        ("-3", "'-3'"),
        ("1-", "'1-'"),
        ("1000000", "out of range"),
    ]:
        with pytest.raises(ShardSelectionError, match=says):
            parse_shard_selection(bad)


# -- download ----------------------------------------------------------------------------------------


def test_download_subset(fake_hub, tmp_path):
    results = download(fake_hub.repo_id, tmp_path / "dl", shards="0-1", progress=False)
    assert [r.filename for r in results] == [S0, S1]
    assert all(r.ok and r.error is None for r in results), results
    assert shard_files(tmp_path / "dl") == ["data-000000.tar", "data-000001.tar"]
    for r in results:
        assert r.path.read_bytes() == fake_hub.files[r.filename]
        assert r.sha256 == r.expected_sha256 == fake_hub.sha256(r.filename)
    assert not (tmp_path / "dl" / "README.md").exists()
    # A second run finds both verified and unchanged: no file transfer, no hashing.
    fake_hub.clear_log()
    again = download(fake_hub.repo_id, tmp_path / "dl", shards="0-1", progress=False)
    assert all(r.ok and r.cached for r in again)
    assert fake_hub.gets() == []


def test_download_all_and_pinned_revision(fake_hub, tmp_path):
    first = fake_hub.commit
    fake_hub.push({"data/data-000003.tar": make_shard(3)})
    results = download(fake_hub.repo_id, tmp_path / "now", progress=True)
    assert [r.filename for r in results] == [S0, S1, S2, "data/data-000003.tar"] and all(r.ok for r in results)
    old = download(fake_hub.repo_id, tmp_path / "old", revision=first, progress=False)
    assert [r.filename for r in old] == [S0, S1, S2]


@pytest.mark.parametrize("fake_hub", ["direct", "cdn"], indirect=True)
def test_download_resumes_a_cut_transfer(fake_hub, tmp_path, monkeypatch):
    import huggingface_hub.constants

    # The client writes the body in DOWNLOAD_CHUNK_SIZE pieces (10 MiB) and resumes from what it wrote: with files
    # this small, use 8 KiB pieces so the resume point is inside the file.
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 8192)
    cut_at = 6 * 8192
    fake_hub.cut(S0, after=cut_at)
    (result,) = download(fake_hub.repo_id, tmp_path / "dl", shards="0", progress=False)
    assert result.ok, result.error
    assert (tmp_path / "dl" / S0).read_bytes() == fake_hub.files[S0]
    gets = fake_hub.gets(S0)
    assert [(g.range, g.status) for g in gets] == [(None, 200), (f"bytes={cut_at}-", 206)]
    assert all(g.path.startswith("/cdn/") == fake_hub.cdn for g in gets)  # cdn: served after the Hub's redirect
    assert gets[0].body_bytes == cut_at and gets[1].body_bytes == len(fake_hub.files[S0]) - cut_at
    assert shard_files(tmp_path / "dl") == ["data-000000.tar"]  # no partial file left behind


@pytest.mark.parametrize("fake_hub", ["direct", "cdn"], indirect=True)
def test_download_catches_corrupted_file(fake_hub, tmp_path):
    fake_hub.corrupt(S1)
    results = download(fake_hub.repo_id, tmp_path / "dl", shards="0-1", workers=2, progress=False)
    ok, bad = results
    assert ok.ok and not bad.ok
    actual = hashlib.sha256(fake_hub._corrupt[S1]).hexdigest()
    assert S1 in bad.error and fake_hub.sha256(S1) in bad.error and actual in bad.error
    assert bad.sha256 == actual and bad.path is None
    assert shard_files(tmp_path / "dl") == ["data-000000.tar", "data-000001.tar.corrupt"]
    assert bad.moved_to == tmp_path / "dl" / "data" / "data-000001.tar.corrupt"
    # The local-dir shards are usable as-is: the corrupt file is not a shard.
    assert [s.shard_id for s in resolve_inputs([str(tmp_path / "dl" / "data")])] == ["data-000000"]

    # The CLI says which file, and exits 1; once the Hub serves good bytes again, a rerun fixes it.
    runner = CliRunner()
    args = ["download", "--repo", fake_hub.repo_id, "--shards", "0-1", "--local-dir", str(tmp_path / "dl"), "-q"]
    res = runner.invoke(cli(), args)
    assert res.exit_code == 1, res.output
    assert "data/data-000001.tar" in res.output and "sha256 mismatch" in res.output and actual in res.output
    fake_hub.heal()
    res = runner.invoke(cli(), args[:-1])
    assert res.exit_code == 0, res.output
    assert "2 of 2 file(s) verified" in res.output
    assert (tmp_path / "dl" / S1).read_bytes() == fake_hub.files[S1]


def test_download_detects_a_damaged_local_file(fake_hub, tmp_path):
    download(fake_hub.repo_id, tmp_path / "dl", shards="2", progress=False)
    path = tmp_path / "dl" / S2
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))  # same size, new mtime: hashed again, caught
    fake_hub.clear_log()
    (r,) = download(fake_hub.repo_id, tmp_path / "dl", shards="2", progress=False)
    assert not r.ok and "sha256 mismatch" in r.error and r.moved_to is None
    # Not this run's download: left as it is (not replaced, not moved), and said so.
    assert f"{path} was there before this run and is left as it is" in r.error
    assert path.read_bytes() == bytes(data) and shard_files(tmp_path / "dl") == ["data-000002.tar"]
    assert fake_hub.gets() == []


def test_download_cli_usage_errors(fake_hub, tmp_path):
    runner = CliRunner()
    base = ["download", "--repo", fake_hub.repo_id, "--local-dir", str(tmp_path / "dl")]
    res = runner.invoke(cli(), base + ["--shards", "3-1"])
    assert res.exit_code == 2 and "backwards" in res.output
    res = runner.invoke(cli(), ["download", "--repo", fake_hub.repo_id])
    assert res.exit_code == 2 and "--local-dir" in res.output
    res = runner.invoke(cli(), base + ["--shards", "1-5"])
    assert res.exit_code == 2 and "no shard(s) 3-5" in res.output and "it has 0-2" in res.output
    res = runner.invoke(cli(), base + ["--revision", "nope"])
    assert res.exit_code == 2 and "revision not found" in res.output
    res = runner.invoke(cli(), ["download", "--repo", "someone/else", "--local-dir", str(tmp_path / "dl")])
    assert res.exit_code == 2 and "repository not found" in res.output
    assert not (tmp_path / "dl").exists()  # nothing was started


def test_an_unreachable_hub_ends_download_with_1_and_convert_with_2(hub_env, tmp_path):
    """download: the Hub may come back, a transfer failure (1); convert: refused before any work (2)."""
    from types import SimpleNamespace

    from dalle3_etl.cli import app

    with FakeHub({S0: make_shard(0)}) as gone:
        endpoint, repo_id, uri = gone.endpoint, gone.repo_id, gone.uri(S0)
    hub_env.point_to(SimpleNamespace(endpoint=endpoint))  # nothing listens there any more: connection refused
    runner = CliRunner()
    res = runner.invoke(app, ["download", "--repo", repo_id, "--local-dir", str(tmp_path / "dl")])
    assert res.exit_code == 1 and "error: " in res.output and "the Hub could not be reached" in res.output, res.output
    assert not (tmp_path / "dl").exists()
    res = runner.invoke(app, ["convert", uri, "-o", str(tmp_path / "out"), "--workers", "1"])
    assert res.exit_code == 2 and "the Hub could not be reached" in res.output, res.output


# -- hf:// sources -----------------------------------------------------------------------------------


def test_resolve_glob_pins_commit(fake_hub):
    sources = resolve_hub_input(fake_hub.uri("data/*.tar"))
    assert [s.shard_id for s in sources] == ["data-000000", "data-000001", "data-000002"]
    for s in sources:
        data = fake_hub.files[s.path_in_repo]
        assert isinstance(s, HubShardSource) and s.commit == fake_hub.commit
        assert s.size == len(data) and s.sha256 == hashlib.sha256(data).hexdigest()
        assert s.uri == f"hf://datasets/{fake_hub.repo_id}@{fake_hub.commit}/{s.path_in_repo}"
        # No commit in the fingerprint: adding shards upstream (a new commit) must not redo unchanged ones.
        assert s.fingerprint == {
            "uri": f"hf://datasets/{fake_hub.repo_id}/{s.path_in_repo}",
            "size": s.size,
            "sha256": s.sha256,
        }
    picked = resolve_hub_input(fake_hub.uri("data/data-00000[0-1].tar", revision="main"))
    assert [s.shard_id for s in picked] == ["data-000000", "data-000001"]
    assert [s.shard_id for s in resolve_hub_input(fake_hub.uri("data"))] == [s.shard_id for s in sources]
    (one,) = resolve_hub_input(fake_hub.uri(S2, revision=fake_hub.commit))
    assert one == sources[2]
    fake_hub.push({"data/data-000003.tar": make_shard(3), S1: make_shard(1, seed=5)})
    later = resolve_hub_input(fake_hub.uri("data/*.tar"))
    assert len(later) == 4 and later[0].commit == fake_hub.commit != sources[0].commit
    assert later[0].fingerprint == sources[0].fingerprint and later[2].fingerprint == sources[2].fingerprint
    assert later[1].fingerprint != sources[1].fingerprint  # its bytes changed
    # Through the project's input resolution, mixed with nothing else (pinned to the first commit).
    assert resolve_inputs([fake_hub.uri("data/data-00000?.tar", revision=sources[0].commit)]) == sources
    for arg, says in [
        (fake_hub.uri("data/*.zip"), "matches no .tar"),
        (fake_hub.uri("data/x.tar"), "no such file"),
        (fake_hub.uri("data/*.tar", revision="nope"), "revision not found"),
        ("hf://datasets/a/b/data/*.tar", "repository not found"),
        (f"hf://datasets/{fake_hub.repo_id}", "give a path"),
    ]:
        with pytest.raises(SourceError, match=says):
            resolve_hub_input(arg)


def test_brace_and_glob_syntax(fake_hub):
    assert _expand_braces("d-{00..02}.tar") == ["d-00.tar", "d-01.tar", "d-02.tar"]
    assert _expand_braces("{a,b{1..2}}x") == ["ax", "b1x", "b2x"]
    assert _expand_braces("{x}{}") == ["{x}{}"]
    assert _glob_regex("data/*.tar").match("data/data-000001.tar")
    assert not _glob_regex("*.tar").match("data/data-000001.tar")
    assert _glob_regex("**/*.tar").match("data/data-000001.tar")
    assert _glob_regex("data/data-00000[!0].tar").match("data/data-000001.tar")

    ids = lambda srcs: [s.shard_id for s in srcs]  # noqa: E731
    assert ids(resolve_hub_input(fake_hub.uri("data/data-0000{00..01}.tar"))) == ["data-000000", "data-000001"]
    assert ids(resolve_hub_input(fake_hub.uri("data/data-00000{0,2}.tar"))) == ["data-000000", "data-000002"]
    assert ids(resolve_hub_input(fake_hub.uri("**/data-*2.tar"))) == ["data-000002"]
    with pytest.raises(HubNotFoundError, match="no such file or folder in the repo: data/data-000003.tar"):
        resolve_hub_input(fake_hub.uri("data/data-0000{00..03}.tar"))
    # Several arguments on one revision are pinned to one commit, resolved once.
    fake_hub.clear_log()
    srcs = resolve_hub_inputs([fake_hub.uri(S0), fake_hub.uri(S1), fake_hub.uri("data/*.tar")])
    assert ids(srcs) == ["data-000000", "data-000001", "data-000002"]
    assert sum(1 for e in fake_hub.log if e.path == f"/api/datasets/{fake_hub.repo_id}") == 1


def test_open_streams_the_pinned_bytes(fake_hub):
    (src,) = resolve_hub_input(fake_hub.uri(S0))
    old = fake_hub.files[S0]
    fake_hub.push({S0: make_shard(0, seed=99)})  # main moves on; the source stays on its commit
    with src.open() as f:
        assert not f.seekable() and f.readable()
        with pytest.raises(OSError):
            f.seek(10)
        parts = []
        while chunk := f.read(7_777):
            parts.append(chunk)
        assert f.verified and f.digest == src.sha256
    assert b"".join(parts) == old


@pytest.mark.parametrize("fake_hub", ["direct", "cdn"], indirect=True)
def test_open_resumes_a_dropped_connection(fake_hub):
    (src,) = resolve_hub_input(fake_hub.uri(S1))
    fake_hub.cut(S1, after=30_000, times=2)
    with src.open() as f:
        assert f.read() == fake_hub.files[S1]
    gets = fake_hub.gets(S1)
    assert [(g.range, g.status) for g in gets] == [(None, 200), ("bytes=30000-", 206), ("bytes=60000-", 206)]
    assert all(g.path.startswith("/cdn/") == fake_hub.cdn for g in gets)


def test_keep_dir_gets_the_file_only_after_a_verified_read(fake_hub, tmp_path):
    keep = tmp_path / "keep"
    (src,) = resolve_inputs([fake_hub.uri(S2)], keep_dir=keep)
    assert src.keep_dir == str(keep.resolve())
    data = fake_hub.files[S2]
    f = src.open()
    head = read_n(f, 20_000)
    (part,) = keep.iterdir()
    assert re.fullmatch(r"data-000002\.tar\.[0-9a-f]{8}\.part", part.name)  # a new file of the tool's own
    rest = f.read()
    assert head + rest == data
    assert sorted(p.name for p in keep.iterdir()) == ["data-000002.tar"]
    f.close()
    assert (keep / "data-000002.tar").read_bytes() == data

    # Opening it again reads the verified copy, not the network.
    fake_hub.clear_log()
    with src.open() as f:
        assert f.read() == data
    assert fake_hub.gets() == []

    # A reader that leaves on an error keeps nothing.
    (other,) = with_keep_dir(resolve_hub_input(fake_hub.uri(S0)), keep)
    with pytest.raises(RuntimeError):
        with other.open() as f:
            f.read(1000)
            raise RuntimeError("reader failed")
    assert sorted(p.name for p in keep.iterdir()) == ["data-000002.tar"]


def test_close_verifies_a_tar_read_to_its_end_marker(fake_hub, tmp_path, monkeypatch):
    """A tar reader stops at the end-of-archive blocks; closing without error still reads the tail and checks it."""
    monkeypatch.setattr(stream, "DRAIN_LIMIT", 16_384)
    keep = tmp_path / "keep"
    (src,) = with_keep_dir(resolve_hub_input(fake_hub.uri(S0)), keep)
    with src.open() as f:
        read_n(f, src.size - 3000)
    assert (keep / "data-000000.tar").read_bytes() == fake_hub.files[S0]
    fake_hub.corrupt(S0, fake_hub.files[S0][:-1] + b"\x01")  # damage in the part the reader never asked for
    (keep / "data-000000.tar").unlink()
    with pytest.raises(HubIntegrityError, match="data/data-000000.tar: sha256 mismatch"):
        with src.open() as f:
            read_n(f, src.size - 3000)
    assert list(keep.iterdir()) == []
    # Stopping far from the end is not verified (and not kept), and raises nothing.
    with src.open() as f:
        f.read(1000)
    assert list(keep.iterdir()) == []


@pytest.mark.parametrize("fake_hub", ["direct", "cdn"], indirect=True)
def test_stream_sha256_mismatch_is_a_clear_error(fake_hub, tmp_path):
    keep = tmp_path / "keep"
    fake_hub.corrupt(S1)
    (src,) = with_keep_dir(resolve_hub_input(fake_hub.uri(S1)), keep)
    f = src.open()
    with pytest.raises(HubIntegrityError) as err:
        f.read()
    msg = str(err.value)
    assert "data/data-000001.tar" in msg and src.sha256 in msg
    assert hashlib.sha256(fake_hub._corrupt[S1]).hexdigest() in msg
    f.close()
    assert list(keep.iterdir()) == []  # neither the file nor its .part


def test_kept_copy_damaged_on_disk_is_caught(fake_hub, tmp_path):
    keep = tmp_path / "keep"
    (src,) = with_keep_dir(resolve_hub_input(fake_hub.uri(S2)), keep)
    with src.open() as f:
        f.finish()
    kept = keep / "data-000002.tar"
    damaged = kept.read_bytes()[:-1] + b"\x07"
    kept.write_bytes(damaged)
    with pytest.raises(HubIntegrityError, match="kept copy") as err:
        with src.open() as f:
            f.read()
    assert f"{kept} is left as it is" in str(err.value)
    assert sorted(p.name for p in keep.iterdir()) == ["data-000002.tar"]  # not moved, not replaced
    assert kept.read_bytes() == damaged
    kept.unlink()  # the user moves it away
    with src.open() as f:  # downloaded again
        assert f.read() == fake_hub.files[S2]
    assert kept.read_bytes() == fake_hub.files[S2]


def test_stream_gives_up_after_repeated_drops(fake_hub, monkeypatch):
    (src,) = resolve_hub_input(fake_hub.uri(S0))
    fake_hub.cut(S0, after=0, times=100)
    with pytest.raises(HubTransferError, match="data/data-000000.tar: gave up after 3 attempts at byte 0"):
        with open_verified_stream(src, max_retries=2) as f:
            f.read()


def test_hub_sources_pickle(fake_hub):
    import pickle

    sources = resolve_hub_input(fake_hub.uri("data/*.tar"))
    again = pickle.loads(pickle.dumps(sources))
    assert again == sources and again[0].endpoint == fake_hub.endpoint


@pytest.mark.parametrize("fake_hub", ["cdn"], indirect=True)
def test_token_from_hf_token_goes_to_the_hub_not_the_cdn(fake_hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests")
    (src,) = resolve_hub_input(fake_hub.uri(S0))
    with src.open() as f:
        f.finish()
    download(fake_hub.repo_id, tmp_path / "dl", shards="1", progress=False)
    auth: dict[tuple[str, str], set] = {}
    for e in fake_hub.log:
        auth.setdefault((e.method, e.path.split("/")[1]), set()).add(e.headers.get("authorization"))
    bearer = {"Bearer hf_fake_token_for_tests"}
    assert auth[("GET", "api")] == auth[("GET", "datasets")] == auth[("HEAD", "datasets")] == bearer
    assert auth[("GET", "cdn")] == {None}
