"""Issue 17: `convert DIR` where DIR is an extracted folder (the old recipe's `tar xf` output).

The same samples converted from their tar and from its extraction give the same rows, captions, rejects and
reasons; a folder's units resume like shards (SIGKILL), 1 and 2 workers write the same bytes, `verify` passes,
images are hard-linked (the input's own bytes) or copied, and nothing in the input folder changes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dalle3_etl.cli import app
from dalle3_etl.devtools.synth import SynthSpec, write_corpus
from dalle3_etl.devtools.synth.extracted import write_extracted

REPO = Path(__file__).resolve().parents[2]
SPEC = SynthSpec(shards=1, per_shard=60, seed=5, image_bytes=1500)
runner = CliRunner()


def cli(*args) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})
    return result.exit_code, result.output


def snapshot(root: Path) -> dict[str, tuple]:
    """Every name below root (links not followed) with its bytes or link target, mode and mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            body = os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else None
            out[str(path.relative_to(root))] = (body, st.st_mode, st.st_mtime_ns)
    return out


def rows(out: Path) -> list[dict]:
    return pq.read_table(out / "dalle3.parquet").to_pylist()


def rejects(out: Path) -> list[dict]:
    return [orjson.loads(line) for line in (out / "rejects.jsonl").read_bytes().splitlines()]


@pytest.fixture(scope="module")
def tar_and_folder(tmp_path_factory):
    """A synth shard and its `tar xf` extraction into a folder, each converted once."""
    base = tmp_path_factory.mktemp("extracted")
    write_corpus(base / "tars", SPEC)
    folder = base / "ex"
    folder.mkdir()
    with tarfile.open(base / "tars" / "data-000000.tar") as tf:
        tf.extractall(folder, filter="data")
    assert cli("convert", base / "tars", "-o", base / "out_tar", "-w", "1", "-q")[0] == 0
    before = snapshot(folder)
    code, output = cli("convert", folder, "-o", base / "out_ex", "-w", "1", "-q", "--unit-samples", "25")
    assert code == 0, output
    return base, folder, before


def test_same_rows_and_rejects_as_the_tar(tar_and_folder):
    """filename is `<unit id>/<path relative to the folder>` (a tar's is `<shard id>/<member name>`) and the
    `shard` column names the unit: both are compared without that prefix; everything else exactly."""
    base, folder, _ = tar_and_folder
    from_tar, from_folder = rows(base / "out_tar"), rows(base / "out_ex")
    assert len(from_tar) == len(from_folder) > 50

    def plain(row: dict) -> dict:
        row = dict(row)
        row["filename"] = row["filename"].split("/", 1)[1]
        row.pop("shard")
        return row

    assert sorted(map(plain, from_tar), key=lambda r: r["key"]) == [plain(r) for r in from_folder]
    assert {r["shard"] for r in from_folder} == {"ex-000000", "ex-000001", "ex-000002"}
    assert all(r["filename"].startswith(r["shard"] + "/") for r in from_folder)
    want = sorted((r["member"], r["reason"], r["detail"]) for r in rejects(base / "out_tar"))
    got = sorted((r["member"], r["reason"], r["detail"]) for r in rejects(base / "out_ex"))
    assert got == want and want
    for row in from_folder:  # the caption files too
        txt = (base / "out_ex" / "data" / row["filename"]).with_suffix(".txt")
        assert txt.read_text(encoding="utf-8") == row["caption"]


def test_images_are_hard_links_to_the_input_and_the_input_is_unchanged(tar_and_folder):
    base, folder, before = tar_and_folder
    row = rows(base / "out_ex")[0]
    image = base / "out_ex" / "data" / row["filename"]
    source = folder / row["filename"].split("/", 1)[1]
    assert os.path.samefile(image, source)
    assert snapshot(folder) == before


def test_verify_passes_and_restart_leaves_the_input_intact(tar_and_folder, tmp_path):
    base, folder, before = tar_and_folder
    code, output = cli("verify", base / "out_ex")
    assert code == 0, output
    out = tmp_path / "out"
    assert cli("convert", folder, "-o", out, "-w", "1", "-q", "--unit-samples", "25")[0] == 0
    assert cli("convert", folder, "-o", out, "-w", "1", "-q", "--unit-samples", "25", "--restart")[0] == 0
    assert snapshot(folder) == before  # the restart removed the links, never the user's files
    assert (out / "dalle3.parquet").read_bytes() == (base / "out_ex" / "dalle3.parquet").read_bytes()


def test_copy_mode_writes_copies_with_the_same_bytes(tar_and_folder, tmp_path):
    base, folder, _ = tar_and_folder
    out = tmp_path / "out"
    assert cli("convert", folder, "-o", out, "-w", "1", "-q", "--unit-samples", "25", "--link", "copy")[0] == 0
    for row in rows(out):
        image, source = out / "data" / row["filename"], folder / row["filename"].split("/", 1)[1]
        assert not os.path.samefile(image, source) and image.read_bytes() == source.read_bytes()
    assert (out / "dalle3.parquet").read_bytes() == (base / "out_ex" / "dalle3.parquet").read_bytes()
    code, output = cli("convert", folder, "-o", out, "-w", "1", "-q", "--unit-samples", "25")
    assert code == 2 and "link" in output  # pinned: a resume with other link mode is refused


def test_one_and_two_workers_give_the_same_bytes(tar_and_folder, tmp_path):
    base, folder, _ = tar_and_folder
    out = tmp_path / "out"
    assert cli("convert", folder, "-o", out, "-w", "2", "-q", "--unit-samples", "25")[0] == 0
    for name in ("dalle3.parquet", "rejects.jsonl", "multidatabackend.json"):
        want = (base / "out_ex" / name).read_bytes().replace(str(base / "out_ex").encode(), b"OUT")
        assert (out / name).read_bytes().replace(str(out).encode(), b"OUT") == want


def test_link_and_both_input_kinds_are_refused_with_exit_2(tar_and_folder, tmp_path):
    base, folder, _ = tar_and_folder
    code, output = cli("convert", base / "tars", "-o", tmp_path / "o1", "--link", "copy")
    assert code == 2 and "--link copy: only for an extracted folder" in output
    assert not (tmp_path / "o1" / "dalle3.parquet").exists()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "data-000000.tar").write_bytes((base / "tars" / "data-000000.tar").read_bytes())
    (mixed / "a.jpg").write_bytes(b"\xff\xd8\xff")
    code, output = cli("convert", mixed, "-o", tmp_path / "o2")
    assert code == 2 and "both tar shards ('data-000000.tar') and image files ('a.jpg')" in output


def test_a_changed_file_redoes_its_unit_only(tar_and_folder, tmp_path):
    base, _, _ = tar_and_folder
    folder = tmp_path / "ex"
    write_extracted(folder, SPEC)
    out = tmp_path / "out"
    assert cli("convert", folder, "-o", out, "-w", "1", "-q", "--unit-samples", "25")[0] == 0
    last = sorted(p for p in folder.iterdir() if p.suffix == ".json")[-1]
    os.utime(last, ns=(1, 1))
    code, output = cli("convert", folder, "-o", out, "-w", "1", "--unit-samples", "25")
    assert code == 0 and "Resuming: 2 shard(s) already complete" in output, output


def test_sigkill_then_rerun_gives_the_uninterrupted_output(tar_and_folder, tmp_path):
    base, folder, before = tar_and_folder
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "DALLE3_ETL_TEST_CRASH"}
    env["DALLE3_ETL_TEST_CRASH"] = "sample:ex-000001:10"
    args = [sys.executable, "-m", "dalle3_etl", "convert", str(folder), "-o", str(out), "-w", "2", "-q"]
    proc = subprocess.run(
        [*args, "--unit-samples", "25"], cwd=REPO, env=env, start_new_session=True, capture_output=True, timeout=180
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (out / "dalle3.parquet").exists()
    code, output = cli("convert", folder, "-o", out, "-w", "1", "-q", "--unit-samples", "25")
    assert code == 0, output
    for name in ("dalle3.parquet", "rejects.jsonl"):
        assert (out / name).read_bytes() == (base / "out_ex" / name).read_bytes()
    assert sorted(p.relative_to(out / "data") for p in (out / "data").rglob("*")) == sorted(
        p.relative_to(base / "out_ex" / "data") for p in (base / "out_ex" / "data").rglob("*")
    )
    assert snapshot(folder) == before


def test_dry_run_counts_what_the_real_run_wrote_and_writes_nothing(tar_and_folder, tmp_path):
    base, folder, before = tar_and_folder
    code, output = cli("convert", folder, "-o", tmp_path / "dry", "--dry-run", "--json", "--unit-samples", "25")
    assert code == 0, output
    funnel = orjson.loads(output)
    assert funnel["samples"]["kept"] == len(rows(base / "out_ex"))
    assert sum(funnel["samples"]["rejected"].values()) == len(rejects(base / "out_ex"))
    assert not (tmp_path / "dry").exists() and snapshot(folder) == before
