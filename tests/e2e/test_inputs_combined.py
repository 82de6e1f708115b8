"""The new inputs together: an extracted img2dataset folder (`.txt` captions read from loose files) gives the
rows its tars give, and `--webshart` refuses an extracted folder (there is no tar to index) before any work."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from dalle3_etl.cli import app
from dalle3_etl.devtools.synth import SynthSpec, write_img2dataset_corpus
from dalle3_etl.devtools.synth.extracted import write_extracted

runner = CliRunner()


def cli(*args) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})
    return result.exit_code, result.output


def table(out: Path) -> list[dict]:
    return pq.read_table(out / "dalle3.parquet").to_pylist()


def test_extracted_img2dataset_folder_gives_the_rows_of_its_tars(tmp_path):
    tars = tmp_path / "tars"
    truth = write_img2dataset_corpus(tars, shards=1, per_shard=30, seed=4)
    folder = tmp_path / "extracted"
    folder.mkdir()
    with tarfile.open(tars / "00000.tar") as tf:
        tf.extractall(folder, filter="data")
    code, log = cli("convert", tars, "-o", tmp_path / "from-tar", "--caption-field", "txt", "-w", "1", "-q")
    assert code == 0, log
    code, log = cli("convert", folder, "-o", tmp_path / "from-folder", "--caption-field", "txt", "-w", "1", "-q")
    assert code == 0, log
    from_tar, from_folder = table(tmp_path / "from-tar"), table(tmp_path / "from-folder")
    assert len(from_tar) == len([t for t in truth if t.caption is not None]) > 0
    # the filename's first folder is the shard or the unit; the rest of every row is the same
    strip = [({**r, "filename": r["filename"].split("/", 1)[1]} | {"shard": None}) for r in from_tar]
    assert strip == [({**r, "filename": r["filename"].split("/", 1)[1]} | {"shard": None}) for r in from_folder]
    assert [r["caption"] for r in from_folder] == [t.caption for t in truth if t.caption is not None]


def test_webshart_refuses_an_extracted_folder_before_any_work(tmp_path):
    folder = tmp_path / "extracted"
    write_extracted(folder, SynthSpec(shards=1, per_shard=10, seed=2, image_bytes=800))
    out = tmp_path / "out"
    code, log = cli("convert", folder, "-o", out, "--webshart")
    assert code == 2
    assert "extracted folder, not a tar" in log and "Traceback" not in log
    assert not out.exists()
