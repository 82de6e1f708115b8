"""`convert --dry-run --link none --captions-in-place` foresees what the real run meets in the input folder: a file
already at a caption's name is that sample's `name_clash`, unless it is a caption file an interrupted run of the
same output wrote (its unit's journal lists it and it still holds those bytes: the real run removes it first)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from folder_helpers import cli, extracted

from dalle3_etl.devtools.synth import SynthSpec

REPO = Path(__file__).resolve().parents[2]
SPEC = SynthSpec(shards=1, per_shard=60, seed=11, image_bytes=1200)
OPTIONS = ("--unit-samples", "25", "--link", "none", "--captions-in-place")


@pytest.fixture
def folder(tmp_path) -> Path:
    return extracted(tmp_path / "ex", SPEC)


def dry(folder: Path, out: Path) -> dict:
    code, output = cli("convert", folder, "-o", out, "--dry-run", "--json", *OPTIONS)
    assert code == 0, output
    return orjson.loads(output)["samples"]


def real(folder: Path, out: Path) -> tuple[int, dict[str, int]]:
    code, output = cli("convert", folder, "-o", out, "-q", "-w", "1", *OPTIONS)
    assert code == 0, output
    reasons: dict[str, int] = {}
    for line in (out / "rejects.jsonl").read_bytes().splitlines():
        reason = orjson.loads(line)["reason"]
        reasons[reason] = reasons.get(reason, 0) + 1
    return pq.read_metadata(out / "dalle3.parquet").num_rows, reasons


def test_a_users_file_at_a_caption_name_is_foreseen_as_the_real_runs_clash(folder, tmp_path):
    (folder / "000003.txt").write_bytes(b"the user's own caption")
    (folder / "000040.txt").mkdir()  # a folder there too
    foreseen = dry(folder, tmp_path / "out")
    assert foreseen["rejected"].get("name_clash") == 2
    kept, reasons = real(folder, tmp_path / "out")
    assert foreseen["kept"] == kept and foreseen["rejected"] == reasons


def test_caption_files_of_an_interrupted_run_are_not_clashes_but_a_users_edit_of_one_is(folder, tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "DALLE3_ETL_TEST_CRASH"}
    env["DALLE3_ETL_TEST_CRASH"] = "sample:ex-000001:10"  # mid-unit: ten caption files of it written
    args = [sys.executable, "-m", "dalle3_etl", "convert", str(folder), "-o", str(out), "-w", "1", "-q", *OPTIONS]
    proc = subprocess.run(args, cwd=REPO, env=env, start_new_session=True, capture_output=True, timeout=180)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = sorted(p for p in folder.glob("*.txt"))
    assert len(left) > 25  # the first unit's (complete) and some of the second's (to be redone)
    clean = dry(folder, out)
    assert "name_clash" not in clean["rejected"]  # the real run removes its own files before redoing the unit
    edited = left[-1]  # one of the cut unit's files, changed by the user since: the real run keeps it
    edited.write_bytes(b"edited by hand")
    foreseen = dry(folder, out)
    assert foreseen["rejected"].get("name_clash") == 1
    kept, reasons = real(folder, out)
    assert edited.read_bytes() == b"edited by hand"
    assert foreseen["rejected"] == reasons
