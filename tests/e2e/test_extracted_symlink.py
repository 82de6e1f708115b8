"""Issue 17, `--link symlink`: each image in OUT/data is a symlink to the absolute input file.

verify passes; a redone unit and `--restart` remove the unit's links and never their targets (fsio removes a
link only when the part lists its name and the output was made with symlinks); 1 and 2 workers give the same
bytes and the same links.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
from folder_helpers import cli, extracted, tree

from dalle3_etl.devtools.synth import SynthSpec

SPEC = SynthSpec(shards=1, per_shard=50, seed=13, image_bytes=1200)


def convert(folder: Path, out: Path, *more) -> None:
    code, output = cli("convert", folder, "-o", out, "-q", "--unit-samples", "20", "--link", "symlink", *more)
    assert code == 0, output


def test_images_are_links_to_the_input_and_verify_passes(tmp_path):
    folder = extracted(tmp_path / "ex", SPEC)
    before = tree(folder)
    out = tmp_path / "out"
    convert(folder, out, "-w", "1")
    links = {k: v for k, v in tree(out / "data").items() if v.startswith(b"-> ")}
    assert len(links) > 40
    for rel, target in links.items():
        target = Path(os.fsdecode(target[3:]))
        assert target.is_absolute() and target.parent == folder
        assert target.name == rel.split("/", 1)[1]
    assert tree(folder) == before
    code, output = cli("verify", out)
    assert code == 0, output


def test_redo_and_restart_remove_the_links_never_their_targets(tmp_path):
    folder = extracted(tmp_path / "ex", SPEC)
    out = tmp_path / "out"
    convert(folder, out, "-w", "1")
    json_path = folder / "000025.json"
    info = orjson.loads(json_path.read_bytes())
    info["short_caption"] = "a green door"
    json_path.write_bytes(orjson.dumps(info))
    before = tree(folder)
    convert(folder, out, "-w", "1")  # that unit is redone: its links go, then come again
    assert tree(folder) == before
    assert (out / "data" / "ex-000001" / "000025.txt").read_text() == "a green door"
    code, output = cli("verify", out)
    assert code == 0, output
    code, output = cli("convert", folder, "-o", out, "-q", "--unit-samples", "20", "--restart")  # now hard links
    assert code == 0, output
    assert tree(folder) == before
    assert not any(p.is_symlink() for p in (out / "data").rglob("*"))


def test_one_and_two_workers_give_the_same_bytes_and_links(tmp_path):
    folder = extracted(tmp_path / "ex", SPEC)
    convert(folder, tmp_path / "one", "-w", "1")
    convert(folder, tmp_path / "two", "-w", "2")
    for name in ("dalle3.parquet", "rejects.jsonl"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert tree(tmp_path / "one" / "data") == tree(tmp_path / "two" / "data")
