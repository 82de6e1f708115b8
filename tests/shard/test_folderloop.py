"""shard.folderloop: a unit's samples taken two files at once give exactly what the member-by-member loop gives.

Each test converts the same odd extracted folder twice, once as `convert` does it (`folderloop.convert_unit`) and
once through the generic loop alone (`ShardConverter._member` for every file), and compares every byte: the
parquet, rejects.jsonl, the records' counts, the files under OUT/data and in the folder (captions in place), the
caption journals. The folder has what leaves the common case: keys with one file or three, a symlink, an empty
image, invalid and too large JSON, upper-case extensions, names that are not plain (a space, non-ASCII, not
UTF-8), a subfolder, a user's caption file, a file of no sample; and samples whose JSON parse or conversion
raises (`sample_error`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import orjson
import pytest
from folder_helpers import cli, extracted, tree

from dalle3_etl.devtools.synth import SynthSpec
from dalle3_etl.shard import convert as convert_module
from dalle3_etl.shard import folderloop
from dalle3_etl.shard.writer import SampleWriter

SPEC = SynthSpec(shards=1, per_shard=80, seed=5, image_bytes=900)
_TIMINGS = {"seconds", "finished", "started", "elapsed"}


def odd_folder(path: Path) -> Path:
    folder = extracted(path, SPEC)
    jpg = next(p for p in sorted(folder.iterdir()) if p.suffix == ".jpg").read_bytes()
    png = next(p for p in sorted(folder.iterdir()) if p.suffix == ".png").read_bytes()

    def sample(stem: str | bytes, image: bytes = jpg, ext: str = "jpg", meta: bytes | None = None, jext="json"):
        stem = os.fsencode(stem)
        meta = meta if meta is not None else orjson.dumps({"short_caption": f"a caption of {stem!r}"})
        (folder / os.fsdecode(stem + b"." + ext.encode())).write_bytes(image)
        (folder / os.fsdecode(stem + b"." + jext.encode())).write_bytes(meta)

    for early_or_late in ("000000a", "zz"):  # an early one waits while later samples come
        (folder / f"{early_or_late}_orphan.jpg").write_bytes(jpg)
        (folder / f"{early_or_late}_lonely.json").write_bytes(b'{"short_caption": "no image"}')
    sample("aa_triple")
    (folder / "aa_triple.png").write_bytes(png)
    (folder / "ab_link.json").write_bytes(b'{"short_caption": "a link"}')
    os.symlink("zz_orphan.jpg", folder / "ab_link.jpg")  # relative: copied as it is, with its mtime
    sample("ac_empty", image=b"")
    sample("ad_bad", meta=b"{not json")
    sample("ae_upper", ext="JPG", jext="JSON")
    sample("af space é")
    sample(b"ag_\xff")
    sample("ah_big", meta=orjson.dumps({"short_caption": "x" * 5000}))
    sample("ai_boom", meta=b'{"short_caption": "BOOM"}')
    sample("aj_finish")
    sample("ak_png", image=png, ext="png")
    (folder / "sub").mkdir()
    sample("sub/in_sub")
    (folder / "README.md").write_bytes(b"not a sample")
    first = sorted(p for p in folder.iterdir() if p.suffix == ".json" and p.stem.isdigit())[3]
    (folder / f"{first.stem}.txt").write_bytes(b"the user's own caption")
    return folder


@pytest.fixture
def sabotage(monkeypatch):
    """A JSON holding "BOOM" fails to parse, and the sample keyed aj_finish fails in the writer: sample_error."""
    parse = convert_module.parse_json

    def parse_json(data, settings):
        if b"BOOM" in data:
            raise RuntimeError("parse failed")
        return parse(data, settings)

    finish = SampleWriter.finish

    def failing_finish(self, entry):
        if entry.key == "aj_finish":
            raise RuntimeError("finish failed")
        return finish(self, entry)

    monkeypatch.setattr(convert_module, "parse_json", parse_json)
    monkeypatch.setattr(SampleWriter, "finish", failing_finish)


def outputs(out: Path, folder: Path) -> dict[str, object]:
    """Every file of OUT and of the folder; the run's own folder name (`pairs`, `members`) made the same."""
    here = os.fsencode(out.parent)
    got: dict[str, object] = {}
    for name, data in [*tree(out).items(), *((f"folder/{k}", v) for k, v in tree(folder).items())]:
        if name.endswith("lock"):
            continue
        data = data.replace(here, b"HERE")
        if name.startswith(".dalle3-etl/shards/"):
            record = orjson.loads(data)
            data = {k: v for k, v in record.items() if k not in _TIMINGS}
        got[name] = data
    return got


def both_ways(tmp_path: Path, monkeypatch, *flags) -> tuple[dict, dict]:
    """(outputs through folderloop, outputs through the member loop alone) of the same folder and flags."""
    source = odd_folder(tmp_path / "src")
    results = []
    for way in ("pairs", "members"):
        folder = tmp_path / way / "ex"  # the same absolute depth: the records name the folder
        shutil.copytree(source, folder, symlinks=True)  # mtimes kept: the units' digests are the same
        with monkeypatch.context() as patch:
            if way == "members":
                patch.setattr(convert_module, "FolderReader", type("NotAFolderReader", (), {}))
            code, output = cli("convert", folder, "-o", tmp_path / way / "out", "-q", "-w", "1", *flags)
        assert code == 0, output
        results.append(outputs(tmp_path / way / "out", folder))
    return results[0], results[1]


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(f"[convert]\n{text}\n")
    return path


@pytest.mark.parametrize(
    "flags",
    [
        ("--link", "none", "--captions-in-place", "--unit-samples", "25"),
        ("--unit-samples", "40"),
        ("--link", "copy", "--fields", "image_name"),
    ],
    ids=["captions-in-place", "hard-links", "copies"],
)
def test_the_same_bytes_as_the_member_loop(tmp_path, monkeypatch, flags, sabotage):
    config = _config(tmp_path, "max_json_bytes = 4096")
    pairs, members = both_ways(tmp_path, monkeypatch, "--config", config, *flags)
    assert pairs == members
    rejects = [orjson.loads(line) for line in pairs["rejects.jsonl"].splitlines()]
    reasons = {line["reason"] for line in rejects}
    # the odd files did reach the cases they were made for
    assert {"image_without_json", "json_without_image", "duplicate_member", "unsafe_member", "image_invalid"} <= reasons
    assert {"json_invalid", "json_too_large", "sample_error"} <= reasons
    assert sum(line["reason"] == "sample_error" for line in rejects) == 2
    assert any("ag_" in line["member"] for line in rejects)  # not UTF-8: unsafe_member, named with its escape


def test_the_same_bytes_when_waiting_samples_are_given_up(tmp_path, monkeypatch, sabotage):
    """max_pending = 1: the orphans wait, and a sample's first file pushes the oldest out of Pairing."""
    config = _config(tmp_path, "max_pending = 1\nmax_json_bytes = 4096")
    pairs, members = both_ways(tmp_path, monkeypatch, "--config", config, "--link", "none", "--captions-in-place")
    assert pairs == members
    assert b"gave up waiting" in pairs["rejects.jsonl"]


def test_the_pair_path_is_taken_for_the_common_case(tmp_path, monkeypatch):
    """The plain samples go through `_sample`, not through the generic member handling."""
    folder = extracted(tmp_path / "ex", SPEC)
    members = []
    original = convert_module.ShardConverter._member

    def counting(self, reader, member, pairing):
        members.append(member.name)
        return original(self, reader, member, pairing)

    monkeypatch.setattr(convert_module.ShardConverter, "_member", counting)
    code, output = cli("convert", folder, "-o", tmp_path / "out", "-q", "-w", "1", "--link", "none")
    assert code == 0, output
    assert members == []  # synth's folder: every key is one image and one JSON
    assert folderloop._json_first(b"JSON", b"Png") is True and folderloop._json_first(b"jpg", b"json") is False
    assert folderloop._json_first(b"jpg", b"png") is None and folderloop._json_first(b"txt", b"json") is None
