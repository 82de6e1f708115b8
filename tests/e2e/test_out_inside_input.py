"""OUT inside the folder it is made from (`convert syn -o syn/out`): the listing of the input folder skips OUT, so
the identical re-run (a resume after a kill, a second look) is not refused as a folder holding both tars and images,
redoes nothing and gives the same bytes; a folder of tar shards and an extracted folder alike."""

from __future__ import annotations

from pathlib import Path

import pytest
from folder_helpers import cli, extracted

from dalle3_etl.devtools.synth import SynthSpec, write_corpus

SPEC = SynthSpec(shards=2, per_shard=12, seed=5, image_bytes=900)
MERGED = ("dalle3.parquet", "rejects.jsonl", "multidatabackend.json")


def convert(folder: Path, out: Path, *more) -> None:
    code, output = cli("convert", folder, "-o", out, "-q", "-w", "1", *more)
    assert code == 0, output


def state(out: Path) -> tuple[dict[str, tuple[bytes, int]], dict[str, bytes]]:
    """(each unit's files, its images and records, with their mtimes: a unit redone rewrites them), (the merged
    files' bytes: rewritten by every run, the same bytes when nothing changed)."""
    units = {}
    for top in ("data", ".dalle3-etl/parts", ".dalle3-etl/shards", ".dalle3-etl/rejects"):
        for path in sorted((out / top).rglob("*")):
            if path.is_file():
                units[str(path.relative_to(out))] = (path.read_bytes(), path.stat().st_mtime_ns)
    return units, {name: (out / name).read_bytes() for name in MERGED}


def test_tar_shards_convert_again_into_an_out_inside_their_folder(tmp_path):
    folder = tmp_path / "syn"
    write_corpus(folder, SPEC)
    out = folder / "out"
    convert(folder, out)
    units, merged = state(out)
    assert any(name.startswith("data/data-000001/") for name in units)
    convert(folder, out)  # was: exit 2, "holds both tar shards ... and image files ('out/data/...')"
    assert state(out) == (units, merged)
    code, output = cli("status", out)
    assert code == 0 and "pending 0" in output, output


@pytest.mark.parametrize("link", [["--link", "hard"], ["--link", "copy"], ["--link", "none", "--captions-in-place"]])
def test_an_extracted_folder_converts_again_into_an_out_inside_it(tmp_path, link):
    folder = extracted(tmp_path / "ex", SynthSpec(shards=1, per_shard=30, seed=7, image_bytes=900))
    out = folder / "out"
    convert(folder, out, "--unit-samples", "10", *link)
    units, merged = state(out)
    convert(folder, out, "--unit-samples", "10", *link)  # OUT's files (parquet, images) are no members of a unit
    assert state(out) == (units, merged)
    code, output = cli("status", out)
    assert code == 0 and "pending 0" in output, output
    code, output = cli("verify", out)
    assert code == 0, output
