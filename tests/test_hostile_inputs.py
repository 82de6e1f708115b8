"""Hostile inputs, end to end: member names only the file system can refuse, and shards whose meta records
never end (the shard file names that must be refused up front are in the second half).

Shards are hand-made here; most cases run from a seekable file and from a non-seekable stream."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from badinput_helpers import MODES, convert, img, js, sample, write_shards
from dalle3_etl.pipeline import run_convert
from dalle3_etl.records import Reason
from dalle3_etl.settings import Settings
from dalle3_etl.sources import natural_key, resolve_inputs


def good(*keys: str) -> list:
    return [m for k in keys for m in sample(k)]


def empty_folders(root: Path) -> list[str]:
    return [str(d.relative_to(root))[:40] for d in root.rglob("*") if d.is_dir() and not any(d.iterdir())]


# -- a name component over 255 bytes: refused by the file system when written, kept when not written ------

LONG_FILE = "x" * 300  # a file name over the 255-byte limit
LONG_FOLDER = "d" * 130 + "é" * 70 + "/k"  # a folder name of 270 bytes (UTF-8), a short file name


def long_name_shard(tmp_path: Path) -> Path:
    members = good("a") + [(f"{LONG_FILE}.jpg", img()), (f"{LONG_FILE}.json", js()),
                           (f"{LONG_FOLDER}.png", img("png")), (f"{LONG_FOLDER}.json", js())] + good("z")
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


# -- shard order is total: names equal as numbers do not take the order they were listed in -------------

def test_natural_key_is_a_total_order():
    names = ["data-1", "data-01", "data-001", "data-2", "data-10", "data-1a", "data-01a", "data", "a1", "a01b2",
             "a1b02", "\u00b2", "\u0663", "x\u0661\u0660"]  # superscript two; Arabic-Indic 3, 10
    expected = sorted(names, key=natural_key)
    assert expected[expected.index("data-001"):][:5] == ["data-001", "data-01", "data-1", "data-01a", "data-1a"]
    rng = random.Random(5)
    for _ in range(50):
        rng.shuffle(names)
        assert sorted(names, key=natural_key) == expected
    for a, b in itertools.combinations(names, 2):
        assert natural_key(a) != natural_key(b), (a, b)


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
