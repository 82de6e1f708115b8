"""Issue 17, `--link none`: the images stay in the extracted folder, SimpleTuner reads them there.

Nothing is written under OUT/data; `filename` is the path relative to the folder; the entry's instance_data_dir
is the folder; without `--captions-in-place` the entry uses the parquet caption strategy, with it each caption
file is created beside its image, never over a user's file (that sample is a `name_clash` reject naming it).
`--restart`, a redone unit and a resumed SIGKILLed run remove exactly the caption files the tool wrote; 1 and 2
workers and an interrupted run give the same bytes in OUT and in the folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from folder_helpers import cli, extracted
from folder_helpers import tree as files

from dalle3_etl.devtools.synth import SynthSpec
from dalle3_etl.devtools.synth.extracted import write_extracted

REPO = Path(__file__).resolve().parents[2]
SPEC = SynthSpec(shards=1, per_shard=60, seed=11, image_bytes=1200)


def convert(folder: Path, out: Path, *more) -> None:
    code, output = cli("convert", folder, "-o", out, "-q", "--unit-samples", "25", "--link", "none", *more)
    assert code == 0, output


def captions(folder: Path) -> dict[str, bytes]:
    return {k: v for k, v in files(folder).items() if k.endswith(".txt")}


def entry(out: Path) -> dict:
    return orjson.loads((out / "multidatabackend.json").read_bytes())[0]


@pytest.fixture
def folder(tmp_path) -> Path:
    return extracted(tmp_path / "ex", SPEC)


def test_without_captions_in_place_nothing_is_written_anywhere_but_the_parquet(folder, tmp_path):
    before = files(folder)
    out = tmp_path / "out"
    convert(folder, out, "-w", "1")
    assert files(folder) == before
    assert not any((out / "data").rglob("*"))
    rows = pq.read_table(out / "dalle3.parquet").to_pylist()
    assert len(rows) > 50
    for row in rows:
        assert (folder / row["filename"]).is_file()  # relative to the folder, extension included
    image = entry(out)
    assert image["instance_data_dir"] == str(folder.resolve())
    assert image["caption_strategy"] == "parquet"  # no .txt for SimpleTuner's textfile strategy
    code, output = cli("verify", out)
    assert code == 0, output


def test_captions_in_place_go_beside_each_image_and_verify_passes(folder, tmp_path):
    before = files(folder)
    out = tmp_path / "out"
    convert(folder, out, "-w", "1", "--captions-in-place")
    rows = pq.read_table(out / "dalle3.parquet").to_pylist()
    written = captions(folder)
    assert len(written) == len(rows) > 50
    for row in rows:
        stem = row["filename"].rpartition(".")[0]
        assert written[stem + ".txt"] == row["caption"].encode()
    assert {k: v for k, v in files(folder).items() if not k.endswith(".txt")} == before
    assert not any((out / "data").rglob("*"))
    assert entry(out)["caption_strategy"] == "textfile"
    code, output = cli("verify", out)
    assert code == 0, output
    convert(folder, out, "-w", "1", "--captions-in-place")  # nothing to redo: the captions change no unit
    assert captions(folder) == written
    code, output = cli("status", out)
    assert code == 0 and "pending 0" in output, output


def test_a_users_caption_file_is_a_name_clash_and_survives_restart(folder, tmp_path):
    user = folder / "000003.txt"
    user.write_bytes(b"the user's own caption")
    out = tmp_path / "out"
    convert(folder, out, "-w", "1", "--captions-in-place")
    lines = [orjson.loads(x) for x in (out / "rejects.jsonl").read_bytes().splitlines()]
    clash = [x for x in lines if x["reason"] == "name_clash"]
    assert len(clash) == 1 and "000003.txt" in clash[0]["detail"], clash
    assert user.read_bytes() == b"the user's own caption"
    code, output = cli("convert", folder, "-o", out, "-q", "--unit-samples", "25", "--link", "none", "--restart")
    assert code == 0, output
    assert captions(folder) == {"000003.txt": b"the user's own caption"}  # the tool's went, the user's stayed


def test_a_users_caption_file_holding_the_tools_bytes_survives_a_redo_and_restart(folder, tmp_path):
    """The user's 000003.txt holds exactly the caption the tool would write: it is still not the tool's."""
    convert(folder, tmp_path / "probe", "-w", "1")  # no caption file written: the caption from the parquet
    rows = pq.read_table(tmp_path / "probe" / "dalle3.parquet").to_pylist()
    text = next(row["caption"] for row in rows if row["filename"] == "000003.jpg").encode()
    user = folder / "000003.txt"
    user.write_bytes(text)
    out = tmp_path / "out"
    convert(folder, out, "-w", "1", "--captions-in-place")
    assert b"000003.txt" in (out / "rejects.jsonl").read_bytes()  # its sample: a name_clash
    json_path = folder / "000010.json"  # the same unit redone
    info = orjson.loads(json_path.read_bytes())
    info["short_caption"] = "a red bicycle against a wall"
    json_path.write_bytes(orjson.dumps(info))
    convert(folder, out, "-w", "1", "--captions-in-place")
    assert user.read_bytes() == text
    code, output = cli("convert", folder, "-o", out, "-q", "--unit-samples", "25", "--link", "none", "--restart")
    assert code == 0, output
    assert captions(folder) == {"000003.txt": text}


def test_restart_of_a_second_out_from_the_same_folder_spares_the_first_outs_captions(folder, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    convert(folder, one, "-w", "1", "--captions-in-place")
    written = captions(folder)
    convert(folder, two, "-w", "1", "--captions-in-place")  # every name taken by OUT1's: all name_clash
    assert len((two / "rejects.jsonl").read_bytes().splitlines()) >= len(written)
    code, output = cli("convert", folder, "-o", two, "-q", "--unit-samples", "25", "--link", "none", "--restart")
    assert code == 0, output
    assert captions(folder) == written
    code, output = cli("verify", one)
    assert code == 0, output


def test_restart_spares_a_caption_file_the_user_edited(folder, tmp_path):
    out = tmp_path / "out"
    convert(folder, out, "-w", "1", "--captions-in-place")
    edited = folder / "000000.txt"
    edited.write_bytes(b"edited by hand")
    code, output = cli("convert", folder, "-o", out, "-q", "--unit-samples", "25", "--link", "none", "--restart")
    assert code == 0, output
    assert captions(folder) == {"000000.txt": b"edited by hand"}


def test_a_redone_unit_rewrites_its_captions_only(folder, tmp_path):
    out = tmp_path / "out"
    convert(folder, out, "-w", "1", "--captions-in-place")
    first = captions(folder)
    json_path = folder / "000030.json"
    info = orjson.loads(json_path.read_bytes())
    info["short_caption"] = "a red bicycle against a wall"
    json_path.write_bytes(orjson.dumps(info))
    convert(folder, out, "-w", "1", "--captions-in-place")
    second = captions(folder)
    assert second.pop("000030.txt") == b"a red bicycle against a wall"
    first.pop("000030.txt")
    assert second == first
    code, output = cli("verify", out)
    assert code == 0, output


def test_one_and_two_workers_give_the_same_bytes(folder, tmp_path):
    other = tmp_path / "ex2" / "ex"
    shutil.copytree(folder, other, symlinks=True)
    convert(folder, tmp_path / "one", "-w", "1", "--captions-in-place")
    convert(other, tmp_path / "two", "-w", "2", "--captions-in-place")
    for name in ("dalle3.parquet", "rejects.jsonl"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert files(folder) == files(other)


def test_sigkill_then_resume_gives_the_same_bytes_in_out_and_in_the_folder(folder, tmp_path):
    reference = tmp_path / "ref" / "ex"
    shutil.copytree(folder, reference, symlinks=True)
    convert(reference, tmp_path / "ref_out", "-w", "1", "--captions-in-place")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "DALLE3_ETL_TEST_CRASH"}
    env["DALLE3_ETL_TEST_CRASH"] = "sample:ex-000001:10"  # mid-unit: ten caption files of it written
    args = [sys.executable, "-m", "dalle3_etl", "convert", str(folder), "-o", str(out), "-w", "1", "-q"]
    args += ["--unit-samples", "25", "--link", "none", "--captions-in-place"]
    proc = subprocess.run(args, cwd=REPO, env=env, start_new_session=True, capture_output=True, timeout=180)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(captions(folder)) > 25  # the first unit's, and some of the second's
    convert(folder, out, "-w", "2", "--captions-in-place")
    for name in ("dalle3.parquet", "rejects.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / "ref_out" / name).read_bytes()
    assert files(folder) == files(reference)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--captions-in-place"], "needs link = none"),
        (["--link", "none", "--dedup", "md5_pil_hash"], "leave out --dedup"),
        (["--link", "none", "--flat"], "leave out --flat"),
        (["--link", "none", "--captions-in-place", "--caption-field", "txt"], "read as captions"),
    ],
)
def test_settings_that_cannot_go_with_it_are_refused_with_exit_2(folder, tmp_path, flags, message):
    before = files(folder)
    code, output = cli("convert", folder, "-o", tmp_path / "out", *flags)
    assert code == 2 and message in " ".join(output.split()), output
    assert not (tmp_path / "out").exists() and files(folder) == before


def test_two_folders_are_refused(folder, tmp_path):
    second = tmp_path / "second"
    write_extracted(second, SPEC)
    code, output = cli("convert", folder, second, "-o", tmp_path / "out", "--link", "none")
    assert code == 2 and "one extracted folder at a time" in " ".join(output.split()), output


def test_dry_run_counts_the_caption_files_and_no_image(folder, tmp_path):
    before = files(folder)
    args = ("convert", folder, "-o", tmp_path / "dry", "--dry-run", "--json", "--unit-samples", "25")
    code, output = cli(*args, "--link", "none", "--captions-in-place")
    assert code == 0, output
    written = orjson.loads(output)["bytes"]
    convert(folder, tmp_path / "out", "-w", "1", "--captions-in-place")
    assert written["images"] == 0
    assert written["captions"] == sum(len(v) for v in captions(folder).values()) > 0
    assert not (tmp_path / "dry").exists()
    assert {k: v for k, v in files(folder).items() if not k.endswith(".txt")} == before


def test_entry_rewrites_keep_the_input_folder_and_caches_under_out(folder, tmp_path):
    out = tmp_path / "out"
    convert(folder, out, "-w", "1")
    code, output = cli("entry", out, "--id", "mine")
    assert code == 0, output
    image = entry(out)
    assert image["instance_data_dir"] == str(folder.resolve())
    assert Path(image["cache_dir_vae"]).parent == out.resolve() / "cache" / "vae" / "mine"  # one per generation
    code, output = cli("entry", out, "--mount-path", "/mnt/st")
    assert code == 0, output
    image = entry(out)
    assert image["instance_data_dir"] == str(folder.resolve())  # the folder is not moved with OUT
    assert image["parquet"]["path"] == "/mnt/st/dalle3.parquet"
    assert Path(image["cache_dir_vae"]).parent == Path("/mnt/st/cache/vae/mine")
    code, output = cli("verify", out, "--mount-path", "/mnt/st")
    assert code == 0, output


def test_rejected_images_left_in_the_folder_make_the_entry_read_captions_from_the_parquet(folder, tmp_path):
    """A filtered (or damaged) sample's image stays in the input folder with no caption file; SimpleTuner's
    textfile strategy would stop at start-up on it, its parquet strategy skips it (no row)."""
    out = tmp_path / "out"
    convert(folder, out, "-w", "1", "--captions-in-place", "--min-side", "1024", "--extra-captions", "long_caption")
    rows = pq.read_table(out / "dalle3.parquet").to_pylist()
    rejected = [orjson.loads(x)["member"] for x in (out / "rejects.jsonl").read_bytes().splitlines()]
    assert rejected and rows
    written = captions(folder)
    for member in rejected:
        if not member.endswith(".json"):
            assert (folder / member).is_file() and member.rpartition(".")[0] + ".txt" not in written
    image = entry(out)
    assert (image["caption_strategy"], image["parquet"]["caption_column"]) == ("parquet", "captions")
    assert len(written) == len(rows)  # the caption files are still written, for trainers reading them
    code, output = cli("verify", out)
    assert code == 0 and "image_without_row" in output and "have no row" in output, output


def test_verify_fails_an_older_textfile_entry_over_rejected_images_and_entry_fixes_it(folder, tmp_path):
    out = tmp_path / "out"
    convert(folder, out, "-w", "1", "--captions-in-place", "--min-side", "1024")
    entries = orjson.loads((out / "multidatabackend.json").read_bytes())
    entries[0]["caption_strategy"] = "textfile"  # what an earlier version wrote
    (out / "multidatabackend.json").write_bytes(orjson.dumps(entries))
    code, output = cli("verify", out)
    assert code == 1 and "missing_caption_file" in output and "dalle3-etl entry OUT" in output, output
    code, output = cli("entry", out)
    assert code == 0, output
    assert entry(out)["caption_strategy"] == "parquet"
    code, output = cli("verify", out)
    assert code == 0, output
