"""`--also imagefolder`: OUT/data/metadata.jsonl, read by the real Hugging Face `datasets` imagefolder loader."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dalle3_etl.cli import app
from dalle3_etl.devtools.synth import SynthSpec, write_corpus

datasets = pytest.importorskip("datasets")
runner = CliRunner()
SPEC = SynthSpec(shards=2, per_shard=8, seed=21, image_bytes=1500)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagefolder")
    write_corpus(root / "src", SPEC)
    return root / "src"


def convert(src: Path | list[Path], out: Path, *args: str) -> None:
    inputs = [str(s) for s in src] if isinstance(src, list) else [str(src)]
    result = runner.invoke(app, ["convert", *inputs, "-o", str(out), "-q", "-w", "1", *args])
    assert result.exit_code == 0, result.output


def load(out: Path, tmp_path: Path):
    return datasets.load_dataset(
        "imagefolder", data_dir=str(out / "data"), split="train", cache_dir=str(tmp_path / "hf-cache")
    )


def parquet_rows(out: Path) -> list[dict]:
    return pq.read_table(out / "dalle3.parquet").to_pylist()


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def converted_and_loaded(corpus: Path, tmp_path: Path, *args: str) -> tuple[Path, list[dict], object]:
    """OUT converted with --also imagefolder, its parquet rows, and OUT/data as `datasets` loads it."""
    out = tmp_path / "out"
    convert(corpus, out, "--also", "imagefolder", *args)
    return out, parquet_rows(out), load(out, tmp_path)


def test_datasets_reads_every_row_with_its_caption_size_and_fields(corpus, tmp_path, offline):
    out, rows, ds = converted_and_loaded(corpus, tmp_path, "--fields", "md5_pil_hash")
    assert len(ds) == len(rows) == 16
    got = sorted((i["text"], i["width"], i["height"], i["md5_pil_hash"]) for i in ds)
    assert got == sorted((r["caption"], r["width"], r["height"], r["md5_pil_hash"]) for r in rows)
    assert all(item["image"].size == (item["width"], item["height"]) for item in ds)  # images open, sizes agree
    lines = (out / "data" / "metadata.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line)["file_name"] for line in lines] == [r["filename"] for r in rows]  # parquet order
    assert runner.invoke(app, ["verify", str(out)]).exit_code == 0  # metadata.jsonl is not a problem for verify


def test_with_extra_captions_text_is_the_list_of_captions(corpus, tmp_path, offline):
    _, rows, ds = converted_and_loaded(corpus, tmp_path, "--extra-captions", "long_caption")
    assert sorted(map(tuple, ds["text"])) == sorted(tuple(r["captions"]) for r in rows)
    assert any(len(r["captions"]) > 1 for r in rows)


def test_entry_also_imagefolder_adds_it_later_and_runs_keep_it_up_to_date(corpus, tmp_path):
    shards = sorted(corpus.glob("*.tar"))
    out = tmp_path / "out"
    convert(shards[0], out)
    manifest = (out / ".dalle3-etl" / "manifest.json").read_bytes()
    result = runner.invoke(app, ["entry", str(out), "--also", "imagefolder"])
    assert result.exit_code == 0, result.output
    assert "metadata.jsonl" in result.output.replace("\n", "")  # says what it wrote (rich wraps long paths)
    assert len((out / "data" / "metadata.jsonl").read_bytes().splitlines()) == 8
    assert (out / ".dalle3-etl" / "manifest.json").read_bytes() == manifest  # pinned settings untouched
    convert(shards, out)  # one more shard: the imagefolder follows the parquet
    lines = (out / "data" / "metadata.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line)["file_name"] for line in lines] == [r["filename"] for r in parquet_rows(out)]
    assert len(lines) == 16
    convert(shards, out, "--restart")
    assert not (out / "data" / "metadata.jsonl").exists()  # --restart removed the tool's file


def test_a_users_metadata_jsonl_is_refused_and_kept(corpus, tmp_path):
    out = tmp_path / "out"
    convert(corpus, out)
    (out / "data" / "metadata.jsonl").write_text('{"mine": 1}\n')
    result = runner.invoke(app, ["entry", str(out), "--also", "imagefolder"])
    assert result.exit_code == 2 and "was not written by dalle3-etl" in result.output
    convert(corpus, out, "--restart")
    assert (out / "data" / "metadata.jsonl").read_text() == '{"mine": 1}\n'


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--also", "webdataset"], "--also webdataset: 'webdataset': must be one of imagefolder"),
        (["--also", "imagefolder", "--no-images"], "needs the images in OUT/data"),
        (["--also", "imagefolder", "--fields", "text"], "'text' is a column of the imagefolder"),
        (["--also", "imagefolder", "--fields", "image"], "'image' is the column Hugging Face's imagefolder loader"),
    ],
)
def test_bad_also_is_refused_before_any_work(corpus, tmp_path, args, named):
    result = runner.invoke(app, ["convert", str(corpus), "-o", str(tmp_path / "out"), "-q", *args])
    assert result.exit_code == 2 and named in result.output
    assert not (tmp_path / "out").exists()


def test_a_copy_with_its_imagefolder_still_loads(corpus, tmp_path, offline):
    out = tmp_path / "out"
    convert(corpus, out, "--also", "imagefolder")
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(out, copy, symlinks=True)
    assert len(load(copy, tmp_path)) == 16  # file_name is relative to OUT/data: nothing to rewrite


def test_verify_checks_the_imagefolder_against_the_parquet(corpus, tmp_path):
    out = tmp_path / "out"
    convert(corpus, out, "--also", "imagefolder")
    result = CliRunner().invoke(app, ["verify", str(out), "--json"])
    report = orjson.loads(result.stdout)
    assert result.exit_code == 0 and next(c for c in report["checks"] if c["check"] == "imagefolder")["status"] == "ok"
    metadata = out / "data" / "metadata.jsonl"
    lines = metadata.read_bytes().splitlines(keepends=True)
    first = orjson.loads(lines[0])
    first["text"] = "another caption"
    metadata.write_bytes(orjson.dumps(first) + b"\n" + b"".join(lines[1:-1]))  # one caption changed, a line lost
    result = CliRunner().invoke(app, ["verify", str(out), "--json"])
    report = orjson.loads(result.stdout)
    assert result.exit_code == 1 and report["problems"] == ["imagefolder"]
    examples = next(c for c in report["checks"] if c["check"] == "imagefolder")["examples"]
    assert any("line 1:" in e for e in examples) and any("line(s), the parquet" in e for e in examples)
    plain = tmp_path / "plain"
    convert(corpus, plain)
    report = orjson.loads(CliRunner().invoke(app, ["verify", str(plain), "--json"]).stdout)
    assert next(c for c in report["checks"] if c["check"] == "imagefolder")["status"] == "skipped"
