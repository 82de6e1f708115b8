"""Hostile inputs, end to end: member names only the file system can refuse (kept when nothing is written),
meta records that never end, shard names equal as numbers, and shard file names that cannot name output
(refused before OUT is touched, for local and hf:// inputs).

Shards are hand-made here; the member cases run from a seekable file and from a non-seekable stream."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from badinput_helpers import (
    MODES,
    convert,
    img,
    js,
    member_offsets,
    meta_record,
    pax_data,
    sample,
    snapshot,
    tar_bytes,
    write_shards,
)
from fakehub import FakeHub, hub_env, make_shard  # noqa: F401  (fixtures)

from dalle3_etl.run.pipeline import run_convert
from dalle3_etl.settings import Settings
from dalle3_etl.shard.rows import Reason
from dalle3_etl.sources.resolve import resolve_inputs


def good(*keys: str) -> list:
    return [m for k in keys for m in sample(k)]


def empty_folders(root: Path) -> list[str]:
    return [str(d.relative_to(root))[:40] for d in root.rglob("*") if d.is_dir() and not any(d.iterdir())]


# -- a name component over 255 bytes: refused by the file system when written, kept when not written ------

LONG_FILE = "x" * 300  # a file name over the 255-byte limit
LONG_FOLDER = "d" * 130 + "é" * 70 + "/k"  # a folder name of 270 bytes (UTF-8), a short file name


def long_name_shard(tmp_path: Path) -> Path:
    members = (
        good("a")
        + [
            (f"{LONG_FILE}.jpg", img()),
            (f"{LONG_FILE}.json", js()),
            (f"{LONG_FOLDER}.png", img("png")),
            (f"{LONG_FOLDER}.json", js()),
        ]
        + good("z")
    )
    (path,) = write_shards(tmp_path / "in", {"s.tar": members})
    return path


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("images, captions", [(True, True), (False, True)], ids=["images", "captions-only"])
def test_a_name_component_over_255_bytes_is_unusable_when_written(tmp_path, mode, images, captions):
    res = convert([long_name_shard(tmp_path)], tmp_path / "out", mode, images=images, captions=captions)
    assert res.filenames == ["s/a.jpg", "s/z.jpg"]
    for member in (f"{LONG_FILE}.jpg", f"{LONG_FOLDER}.png"):
        line = res.reject(member)  # one line for the sample, not unsafe: the name is fine in the tar
        assert line["reason"] == Reason.NAME_UNUSABLE and "File name too long" in line["detail"], line
        assert res.reasons(member[:-4] + ".json") == []
    assert res.result("s").ok and res.summary.exit_code == 0
    assert empty_folders(tmp_path / "out" / "data") == []  # nothing of the refused samples is left
    assert not list((tmp_path / "out" / ".dalle3-etl" / "staging").glob("*/pending/*"))


@pytest.mark.parametrize("mode", MODES)
def test_a_name_component_over_255_bytes_is_converted_when_nothing_is_written(tmp_path, mode):
    res = convert([long_name_shard(tmp_path)], tmp_path / "out", mode, images=False, captions=False)
    assert res.filenames == ["s/a.jpg", f"s/{LONG_FILE}.jpg", f"s/{LONG_FOLDER}.png", "s/z.jpg"]
    assert res.rejects == [] and res.summary.exit_code == 0
    assert [r["caption"] for r in res.rows] == ["a red fox in the snow"] * 4


# -- meta records (pax headers, GNU long names) are capped in total -----------------------------------------


def with_meta_before(data: bytes, member: str, blocks: bytes) -> bytes:
    hdr, _ = member_offsets(data)[member]
    return data[:hdr] + blocks + data[hdr:]


@pytest.mark.parametrize("mode", MODES)
def test_pax_headers_chained_past_the_cap_damage_the_shard_after_the_samples_before(tmp_path, mode):
    each = pax_data((b"k%06d" % i, b"v") for i in range(45_000))  # 585 KB: one is fine, two are over 1 MiB
    assert 1 << 19 < len(each) < 1 << 20
    data = with_meta_before(tar_bytes(good("a", "b", "c")), "b.jpg", meta_record(b"x", each) * 3)
    (path,) = write_shards(tmp_path / "in", {"s.tar": data})
    res = convert([path], tmp_path / "out", mode)
    assert res.filenames == ["s/a.jpg"]
    (damage,) = [r for r in res.rejects if r["reason"] == Reason.SHARD_UNREADABLE]
    assert "meta records before one member" in damage["detail"] and "more than the 1048576 allowed" in damage["detail"]
    assert "'a.json'" in damage["detail"]  # names the last good member
    assert res.result("s").ok and res.result("s").error and res.summary.exit_code == 1


@pytest.mark.parametrize("mode", MODES)
def test_a_large_global_pax_header_changes_nothing_in_the_output(tmp_path, mode):
    big = pax_data([(b"comment", b"c" * 300_000)] + [(b"k%06d" % i, b"v") for i in range(40_000)])
    assert len(big) < 1 << 20
    plain = tar_bytes(good("a", "b", "c"), fmt=tarfile.PAX_FORMAT)
    paths = write_shards(tmp_path / "in", {"s.tar": with_meta_before(plain, "a.jpg", meta_record(b"g", big))})
    res = convert(paths, tmp_path / "out", mode)
    (path,) = write_shards(tmp_path / "plain", {"s.tar": plain})
    assert res.rows == convert([path], tmp_path / "plain-out", mode).rows
    assert res.filenames == ["s/a.jpg", "s/b.jpg", "s/c.jpg"] and res.rejects == [] and res.summary.exit_code == 0


# -- shard order is total: names equal as numbers do not take the order they were listed in -------------


def test_shards_equal_as_numbers_come_out_in_one_order_whatever_the_input_order(tmp_path):
    names = ["data-1.tar", "data-01.tar", "data-2.tar", "data-001.tar"]
    paths = write_shards(tmp_path / "in", {name: good("a") for name in names})
    runs = []
    for i, order in enumerate((paths, paths[::-1])):
        out = tmp_path / f"out{i}"
        summary = run_convert(resolve_inputs([str(p) for p in order]), out, Settings(workers=1))
        rows = pq.read_table(out / "dalle3.parquet").column("filename").to_pylist()
        runs.append((rows, [r.shard_id for r in summary.results]))
    expected = ["data-001", "data-01", "data-1", "data-2"]
    assert runs[0] == runs[1] == ([f"{sid}/a.jpg" for sid in expected], expected)


# -- shard file names that cannot name output: refused before anything is read, written or removed ----------


def cli(*args: str):
    from typer.testing import CliRunner

    from dalle3_etl.cli import app

    return CliRunner().invoke(app, ["convert", *args])


def refused_line(result) -> str:
    """The one line a refused run prints (exit 2, no traceback)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


# file name -> (how the message shows it, why it is refused)
HOSTILE_NAMES = {
    "...tar": ("/...tar'", "shard id '..'"),
    "..tar": ("/..tar'", "shard id '.'"),
    ".tar": ("/.tar'", "it is empty"),
    ".hidden.tar": ("/.hidden.tar'", "starts with '.'"),
    "back\\slash.tar": ("/back\\slash.tar'", "path separator"),
    "esc\x1b[31m.tar": ("/esc\\x1b[31m.tar'", "control character"),
    "del\x7f.tar": ("/del\\x7f.tar'", "control character"),
    "c1\x85.tar": ("/c1\\x85.tar'", "control character"),
    "new\nline.tar": ("/new\\nline.tar'", "control character"),
    "caf\udce9.tar": ("/caf\\xe9.tar'", "not valid UTF-8"),  # the byte 0xe9 alone: Latin-1, not UTF-8
    "x" * 201 + ".tar": ("x" * 201 + ".tar'", "201 bytes long (limit 200)"),
    "é" * 101 + ".tar.gz": ("é" * 101 + ".tar.gz'", "202 bytes long (limit 200)"),
}


@pytest.mark.parametrize("name", list(HOSTILE_NAMES), ids=lambda n: ascii(n).strip("'")[:15])
def test_a_shard_file_name_that_cannot_name_output_is_refused_and_out_is_untouched(tmp_path, name):
    shown, why = HOSTILE_NAMES[name]
    inputs = tmp_path / "in"
    write_shards(inputs, {"good.tar": good("a")})
    out = tmp_path / "out"
    assert cli(str(inputs), "-o", str(out), "--workers", "1").exit_code == 0
    (inputs / name).write_bytes(tar_bytes(good("b")))
    before = snapshot(out)
    found = cli(str(inputs), "-o", str(out), "--workers", "1")  # found in a folder
    if name.startswith("."):  # hidden: a folder scan leaves it out, as a shell glob does
        assert found.exit_code == 0 and "Resuming: 1 shard(s)" in found.output, found.output
    else:
        line = refused_line(found)
        assert shown in line and why in line and "rename the file" in line, line
        assert snapshot(out) == before  # nothing converted, nothing removed (the '..' shard removed OUT/data/..)
    line = refused_line(cli(str(inputs / name), "-o", str(tmp_path / "new"), "--workers", "1"))  # named
    assert shown in line and why in line, line
    assert not (tmp_path / "new").exists()


def test_a_linked_shard_is_named_by_its_link_and_resumed_by_what_it_links_to(tmp_path):
    """A Hugging Face cache: snapshots/<rev>/data/data-000000.tar -> ../../../blobs/<sha>."""
    cache = tmp_path / "cache"
    (cache / "blobs").mkdir(parents=True)

    def snapshot_of(rev: str, blob: str, keys: tuple[str, ...]) -> Path:
        if not (cache / "blobs" / blob).exists():
            (cache / "blobs" / blob).write_bytes(tar_bytes(good(*keys)))
        folder = cache / "snapshots" / rev / "data"
        folder.mkdir(parents=True)
        (folder / "data-000000.tar").symlink_to(Path("../../..") / "blobs" / blob)
        return folder

    out = tmp_path / "out"
    r1 = snapshot_of("r1", "5e1f0a", ("a", "b"))
    assert cli(str(r1), "-o", str(out), "--workers", "1").exit_code == 0
    assert pq.read_table(out / "dalle3.parquet").column("filename").to_pylist() == [
        "data-000000/a.jpg",
        "data-000000/b.jpg",
    ]
    assert sorted(p.name for p in (out / "data").iterdir()) == ["data-000000"]
    # a new revision that links the same blob: the same input, nothing to redo
    r2 = snapshot_of("r2", "5e1f0a", ("a", "b"))
    for order in ([r1, r2], [r2, r1]):  # the same file twice is one shard, named the same whatever the order
        assert [s.uri for s in resolve_inputs([str(p) for p in order])] == [str(r1 / "data-000000.tar")]
    kept = [out / "data", out / ".dalle3-etl" / "shards"]
    before = [snapshot(folder) for folder in kept]
    for again in (r2, cache / "snapshots"):  # alone, and both revisions at once (the same file reached twice)
        result = cli(str(again), "-o", str(out), "--workers", "1")
        assert result.exit_code == 0 and "1 shard(s) already complete, skipped" in result.output, result.output
        assert [snapshot(folder) for folder in kept] == before
    # a revision whose blob changed: converted again; next to the old revision: two files, one shard id
    r3 = snapshot_of("r3", "9c2d7b", ("c",))
    line = refused_line(cli(str(cache / "snapshots"), "-o", str(out), "--workers", "1"))
    assert "share shard id 'data-000000'" in line and "/r3/data/data-000000.tar'" in line
    assert cli(str(r3), "-o", str(out), "--workers", "1").exit_code == 0
    assert pq.read_table(out / "dalle3.parquet").column("filename").to_pylist() == ["data-000000/c.jpg"]


@pytest.mark.parametrize(
    "first, second", [("Data-7.tar", "data-7.tar"), ("caf\u00e9.tar", "cafe\u0301.tar")], ids=["case", "nfc-nfd"]
)
def test_shard_ids_equal_but_for_case_or_normalisation_are_refused_naming_both(tmp_path, first, second):
    write_shards(tmp_path / "in", {first: good("a"), second: good("b")})
    if len(list((tmp_path / "in").iterdir())) < 2:
        pytest.skip("this file system already takes the two names for one")
    line = refused_line(cli(str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--workers", "1"))
    assert f"/{first}'" in line and f"/{second}'" in line and "letter case or Unicode normalisation" in line
    assert not (tmp_path / "out").exists()


def test_hub_shard_names_are_checked_like_local_ones(hub_env, tmp_path):
    files = {"data/data-000000.tar": make_shard(0, samples=2), "data/...tar": make_shard(1, samples=2)}
    with FakeHub(files) as hub:
        hub_env.point_to(hub)
        line = refused_line(cli(hub.uri("data"), "-o", str(tmp_path / "out"), "--workers", "1"))
        assert f"{hub.repo_id}@" in line and "/data/...tar'" in line and "shard id '..'" in line, line
        assert not (tmp_path / "out").exists()
        assert cli(hub.uri("data/data-000000.tar"), "-o", str(tmp_path / "out"), "--workers", "1").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "out" / "data").iterdir()) == ["data-000000"]
