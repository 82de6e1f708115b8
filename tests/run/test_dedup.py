"""--dedup FIELD: the first sample with a value is kept (shard order, then member order), every later one is a
`duplicate` reject naming it; within a shard, across shards, with 1 and 2 workers, file or stream input;
the key table's memory on 1.2 M keys."""

from __future__ import annotations

import io
import os
import random
import re
import tracemalloc
from pathlib import Path

import orjson
import pytest
from badinput_helpers import check_output, convert, outcome, sample, source, tar_bytes, write_shards
from rich.console import Console
from typer.testing import CliRunner

from dalle3_etl.check.stats import compute_stats
from dalle3_etl.check.status import shard_states
from dalle3_etl.check.verify import verify
from dalle3_etl.cli import app
from dalle3_etl.run.dedup import KeyTable
from dalle3_etl.run.pipeline import run_convert
from dalle3_etl.run.report import summary_table
from dalle3_etl.settings import Settings, SettingsError, load_settings
from dalle3_etl.shard.rows import REASONS, Reason
from dalle3_etl.store.layout import StateError

H = "md5_pil_hash"
TWO = Settings(workers=2, dedup=H)


def s(key: str, digest: str | None = None, **fields) -> list[tuple[str, bytes]]:
    """A sample whose JSON has md5_pil_hash = digest (left out when None)."""
    return sample(key, **({H: digest} if digest is not None else {}), **fields)


def files(out: Path) -> dict[str, bytes]:
    root = out / "data"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def dup_lines(result) -> list[tuple[str, str, str]]:
    return [(r["shard"], r["member"], r["detail"]) for r in result.rejects if r["reason"] == "duplicate"]


def test_within_a_shard_the_first_is_kept_and_later_ones_are_rejects_naming_it(tmp_path):
    paths = write_shards(
        tmp_path / "in",
        {"data-000000.tar": [*s("a", "h1"), *s("b", "h2"), *s("c", "h1"), *s("d"), *s("e", "h1"), *s("f")]},
    )
    res = convert(paths, tmp_path / "out", dedup=H)
    assert res.filenames == ["data-000000/a.jpg", "data-000000/b.jpg", "data-000000/d.jpg", "data-000000/f.jpg"]
    assert dup_lines(res) == [
        ("data-000000", "c.jpg", "same md5_pil_hash as data-000000/a.jpg"),
        ("data-000000", "e.jpg", "same md5_pil_hash as data-000000/a.jpg"),
    ]
    assert not any(name.startswith(("data-000000/c.", "data-000000/e.")) for name in files(res.out))
    assert res.result("data-000000").notes["dedup_field_missing"] == 2  # d and f: kept and counted
    assert verify(res.out).ok


def test_across_shards_rejects_follow_the_shards_own_in_member_order(tmp_path):
    shards = {
        "data-000000.tar": [*s("x", "h1"), *s("y", "h2")],
        "data-000001.tar": [
            *s("p", "h1", caption=""),  # no caption: its own reject, and it takes no key
            *s("q", "h1"),  # a duplicate of data-000000's x: written by its worker, dropped by the merge
            *s("r", "h3"),
            *s("t", "h3"),  # a repeat within the shard: never written
            *s("u", "h2"),
        ],
    }
    res = convert(write_shards(tmp_path / "in", shards), tmp_path / "out", dedup=H)
    assert res.filenames == ["data-000000/x.jpg", "data-000000/y.jpg", "data-000001/r.jpg"]
    assert [(r["member"], r["reason"]) for r in res.rejects if r["shard"] == "data-000001"] == [
        ("p.jpg", "no_caption"),
        ("q.jpg", "duplicate"),
        ("t.jpg", "duplicate"),
        ("u.jpg", "duplicate"),
    ]
    assert dup_lines(res) == [
        ("data-000001", "q.jpg", "same md5_pil_hash as data-000000/x.jpg"),
        ("data-000001", "t.jpg", "same md5_pil_hash as data-000001/r.jpg"),
        ("data-000001", "u.jpg", "same md5_pil_hash as data-000000/y.jpg"),
    ]
    assert sorted(files(res.out)) == [
        "data-000000/x.jpg",
        "data-000000/x.txt",
        "data-000000/y.jpg",
        "data-000000/y.txt",
        "data-000001/r.jpg",
        "data-000001/r.txt",
    ]
    assert verify(res.out).ok


def test_a_repeat_of_a_cross_shard_duplicate_names_the_first_occurrence_in_the_earlier_shard(tmp_path):
    shards = {"data-000000.tar": s("x", "h1"), "data-000001.tar": [*s("y", "h1"), *s("w", "h1")]}
    res = convert(write_shards(tmp_path / "in", shards), tmp_path / "out", dedup=H)
    assert res.filenames == ["data-000000/x.jpg"]
    assert dup_lines(res) == [
        ("data-000001", "y.jpg", "same md5_pil_hash as data-000000/x.jpg"),
        ("data-000001", "w.jpg", "same md5_pil_hash as data-000000/x.jpg"),
    ]


def test_missing_null_and_blank_values_are_kept_and_counted_other_json_values_are_keys(tmp_path):
    shards = {
        "data-000000.tar": [
            *s("a"),
            *sample("b", **{H: None}),
            *s("c", "  "),
            *sample("d", **{H: [1, 2]}),
            *sample("e", **{H: [1, 2]}),
            *sample("f", **{H: 7}),
            *s("g", "7"),  # the JSON text of 7: the same key
        ]
    }
    res = convert(write_shards(tmp_path / "in", shards), tmp_path / "out", dedup=H)
    assert [f.split("/")[1] for f in res.filenames] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "f.jpg"]
    assert [m for _, m, _ in dup_lines(res)] == ["e.jpg", "g.jpg"]
    assert res.result("data-000000").notes["dedup_field_missing"] == 3


@pytest.mark.parametrize("mode", ["file", "stream"])
def test_one_and_two_workers_give_the_same_bytes(tmp_path, mode):
    rng = random.Random(5)
    shards = {
        f"data-{i:06d}.tar": [m for k in range(30) for m in s(f"{i}-{k:02d}", f"h{rng.randrange(25)}")]
        for i in range(4)
    }
    paths = write_shards(tmp_path / "in", shards)
    one = convert(paths, tmp_path / "one", mode=mode, dedup=H)
    two = outcome(tmp_path / "two", run_convert([source(p, mode) for p in paths], tmp_path / "two", TWO))
    assert (one.out / "dalle3.parquet").read_bytes() == (two.out / "dalle3.parquet").read_bytes()
    assert (one.out / "rejects.jsonl").read_bytes() == (two.out / "rejects.jsonl").read_bytes()
    assert files(one.out) == files(two.out)
    assert len(one.rows) == 25 and len(dup_lines(one)) == 120 - 25


def test_verify_status_stats_and_the_summary_count_the_duplicates(tmp_path):
    shards = {"data-000000.tar": [*s("x", "h1"), *s("x2", "h1")], "data-000001.tar": [*s("y", "h1"), *s("z", "h2")]}
    res = convert(write_shards(tmp_path / "in", shards), tmp_path / "out", dedup=H)
    assert verify(res.out).ok  # shard_rows: data-000001's record says 2 rows, the merge dropped 1
    states = shard_states(res.out)
    assert (states["data-000000"]["samples"], states["data-000000"]["rejects"]) == (1, 1)
    assert (states["data-000001"]["samples"], states["data-000001"]["rejects"]) == (1, 1)
    assert compute_stats(res.out).rejects == {"duplicate": 2}
    assert res.summary.duplicates == 2
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(summary_table(res.summary))
    assert re.search(r"duplicates left out \(--dedup, whole output\) +│ +2 │", console.export_text())


def test_parquet_only_output_drops_the_rows_and_holds_no_files(tmp_path):
    shards = {"data-000000.tar": s("x", "h1"), "data-000001.tar": [*s("y", "h1"), *s("z", "h2")]}
    res = convert(write_shards(tmp_path / "in", shards), tmp_path / "out", dedup=H, images=False, captions=False)
    assert res.filenames == ["data-000000/x.jpg", "data-000001/z.jpg"]
    assert files(res.out) == {}
    assert not (res.out / ".dalle3-etl" / "held").exists()


def test_a_shard_redone_with_other_content_brings_held_files_back(tmp_path):
    """data-000001's y repeats data-000000's x; data-000000 changes, so y is a first occurrence again."""
    inp = tmp_path / "in"
    paths = write_shards(inp, {"data-000000.tar": s("x", "h1"), "data-000001.tar": [*s("y", "h1"), *s("z", "h2")]})
    out = tmp_path / "out"
    res = convert(paths, out, dedup=H)
    assert "data-000001/y.jpg" not in files(out) and len(res.rows) == 2
    old_y = (out / ".dalle3-etl" / "held" / "data-000001" / "y.jpg").read_bytes()
    (inp / "data-000000.tar").write_bytes(tar_bytes(s("x", "h9")))
    os.utime(inp / "data-000000.tar", ns=(1, 1))  # a changed input (size and mtime)
    res = convert(paths, out, dedup=H)
    assert res.filenames == ["data-000000/x.jpg", "data-000001/y.jpg", "data-000001/z.jpg"]
    assert files(out)["data-000001/y.jpg"] == old_y
    assert dup_lines(res) == []
    assert not (out / ".dalle3-etl" / "held" / "data-000001").exists()
    fresh = convert(paths, tmp_path / "fresh", dedup=H)
    assert (out / "dalle3.parquet").read_bytes() == (fresh.out / "dalle3.parquet").read_bytes()
    assert (out / "rejects.jsonl").read_bytes() == (fresh.out / "rejects.jsonl").read_bytes()
    assert files(out) == files(fresh.out)
    check_output(out)


def test_dedup_is_pinned_and_checked_like_every_output_setting(tmp_path):
    paths = write_shards(tmp_path / "in", {"data-000000.tar": s("x", "h1")})
    convert(paths, tmp_path / "out", dedup=H)
    with pytest.raises(StateError, match=r"dedup: was 'md5_pil_hash', now ''  \(--dedup\)"):
        convert(paths, tmp_path / "out")
    with pytest.raises(SettingsError, match="cannot be combined with flat"):
        Settings(dedup=H, flat=True)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[convert]\ndedup = "sha512_hash"\n')
    assert load_settings(cfg).dedup == "sha512_hash"
    cfg.write_text("[convert]\ndedup = 5\n")
    with pytest.raises(SettingsError, match=r"\[convert\] dedup = 5: expected a string"):
        load_settings(cfg)
    assert Settings(dedup="").dedup == ""  # off, as by default


def test_an_output_made_before_dedup_existed_resumes_without_it_and_refuses_it(tmp_path):
    paths = write_shards(tmp_path / "in", {"data-000000.tar": s("x", "h1"), "data-000001.tar": s("y", "h1")})
    out = convert(paths, tmp_path / "out").out
    manifest = out / ".dalle3-etl" / "manifest.json"
    data = orjson.loads(manifest.read_bytes())
    assert "dedup" not in data["settings"]  # pinned only when set: the manifest an earlier version wrote
    manifest.write_bytes(orjson.dumps(data))
    assert len(convert(paths, out).rows) == 2  # resumed: the missing setting is its default
    with pytest.raises(StateError, match=r"dedup: was '', now 'md5_pil_hash'"):
        convert(paths, out, dedup=H)


def test_the_command_line_refuses_dedup_with_flat_before_any_work(tmp_path):
    paths = write_shards(tmp_path / "in", {"data-000000.tar": s("x", "h1")})
    result = CliRunner().invoke(
        app, ["convert", str(paths[0]), "-o", str(tmp_path / "out"), "--dedup", H, "--flat"], env={"COLUMNS": "300"}
    )
    assert result.exit_code == 2
    assert "--dedup" in result.output and "--flat" in result.output
    assert not (tmp_path / "out").exists()


def test_the_readme_documents_the_flag_and_the_duplicate_reason():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    bad_input = readme[readme.index("## Bad input") :]
    assert "| `--dedup FIELD` |" in readme
    assert f"| `{Reason.DUPLICATE}` |" in bad_input and REASONS[Reason.DUPLICATE]
    assert orjson.dumps({"reason": Reason.DUPLICATE}) == b'{"reason":"duplicate"}'


# -- the driver's key table --------------------------------------------------------------------------


def test_the_key_table_finds_every_key_again_after_growing():
    table = KeyTable(capacity=16)
    rng = random.Random(3)
    keys = [rng.randbytes(16) for _ in range(5000)]
    for key in keys:
        assert table.add_keys(key) == []
    assert (table.size, table.rows) == (5000, 5000) and table.mask + 1 == 16384
    assert table.add_keys(b"".join(keys[10:20])) == [(j, 10 + j) for j in range(10)]  # the first row stays
    assert table.add_keys(keys[5] + keys[7], valid=[False, True]) == [(1, 7)]  # a row without a key: not looked up
    assert [table.get(key) for key in keys[:3]] == [0, 1, 2]
    assert table.get(rng.randbytes(16)) is None
    assert (table.size, table.rows) == (5000, 5012)


def test_the_key_table_holds_1_2_million_keys_in_40_mb():
    """16 bytes a row and a 4-byte index slot per 1.3 to 2.6 distinct keys: 28 MB for 1.2 M (a Python set of
    the same keys as 16-byte `bytes` takes 92 MB, measured the same way). Only memory is measured, never time."""
    rng = random.Random(1)
    keys = rng.randbytes(16 * 1_200_000)
    tracemalloc.start()
    try:
        table = KeyTable()
        for start in range(0, len(keys), 16 * 65536):  # in batches, as parts are read
            assert table.add_keys(keys[start : start + 16 * 65536]) == []
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert table.size == 1_200_000
    assert table.nbytes < 30_000_000 and current < 36_000_000, (table.nbytes, current)
    assert peak < 40_000_000, peak
    assert table.add_keys(keys[: 16 * 1000]) == [(j, j) for j in range(1000)]


@pytest.mark.parametrize("cut_short", ["moving-out", "moving-back"])
def test_a_move_cut_short_across_file_systems_keeps_the_whole_copy(tmp_path, cut_short):
    """OUT/data on another disk: a move is a copy, then the source removed; a crash between leaves both,
    one of them maybe partial. The next merge keeps the whole one where its decision wants it."""
    paths = write_shards(tmp_path / "in", {"data-000000.tar": s("x", "h1"), "data-000001.tar": s("y", "h1")})
    res = convert(paths, tmp_path / "out", dedup=H)
    held = res.out / ".dalle3-etl" / "held" / "data-000001" / "y.jpg"
    shown = res.out / "data" / "data-000001" / "y.jpg"
    whole = held.read_bytes()
    if cut_short == "moving-out":  # the copy into held/ was cut short: data/ still has the whole file
        held.rename(shown)
        held.write_bytes(whole[:100])
    else:  # a copy back into data/ was cut short (an earlier shard changed, then changed back)
        shown.write_bytes(whole[:100])
    res = convert(paths, res.out, dedup=H)
    assert held.read_bytes() == whole and not shown.exists()
    assert verify(res.out).ok
