"""`synth --extracted`: the samples of the synthetic tars as loose files, what `tar xf` of them gives."""

from __future__ import annotations

import tarfile

import pytest
from typer.testing import CliRunner

from dalle3_etl.cli import app
from dalle3_etl.devtools.synth import SynthSpec, read_truth, write_corpus
from dalle3_etl.devtools.synth.extracted import TRUTH_NAME, write_extracted

SPEC = SynthSpec(shards=2, per_shard=15, seed=9, image_bytes=700)


def files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_the_same_files_as_extracting_the_tars_and_the_same_truth(tmp_path):
    truth = write_corpus(tmp_path / "tars", SPEC)
    extracted = tmp_path / "x"
    extracted.mkdir()
    for tar in sorted((tmp_path / "tars").glob("*.tar")):
        with tarfile.open(tar) as tf:
            tf.extractall(extracted, filter="data")
    rows = write_extracted(tmp_path / "loose", SPEC)
    got = files(tmp_path / "loose")
    assert read_truth(tmp_path / "loose" / TRUTH_NAME) == rows == truth
    del got[TRUTH_NAME]
    assert got == files(extracted)


def test_written_again_it_keeps_identical_files_and_refuses_to_replace_others(tmp_path):
    write_extracted(tmp_path, SPEC)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.name != TRUTH_NAME}
    write_extracted(tmp_path, SPEC)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.name != TRUTH_NAME} == before
    victim = sorted(before)[0]
    victim.write_bytes(b"the user's")
    with pytest.raises(FileExistsError, match="not replaced"):
        write_extracted(tmp_path, SPEC)
    assert victim.read_bytes() == b"the user's"


def test_the_command_line_flag(tmp_path):
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "d"), "--extracted", "--shards", "1", "--per-shard", "5"])
    assert result.exit_code == 0, result.output
    assert not list((tmp_path / "d").glob("*.tar")) and len(list((tmp_path / "d").glob("*.json"))) == 5
