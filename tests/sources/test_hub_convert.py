"""`convert hf://...` streams shards from the Hub (a loopback fake, real huggingface_hub client) and gives the
same dataset as converting the same shards from disk."""

from __future__ import annotations

import hashlib

import pytest
from conftest import convert
from fakehub import FakeHub, files_from_dir, hub_env  # noqa: F401  (fixture)
from typer.testing import CliRunner

from dalle3_etl.cli import app


@pytest.fixture
def hub_corpus(corpus, hub_env):  # noqa: F811
    root, truth = corpus
    with FakeHub(files_from_dir(root)) as hub:
        hub_env.point_to(hub)
        yield root, hub


def test_convert_from_hub_is_byte_identical_to_local(hub_corpus, converted, tmp_path):
    root, hub = hub_corpus
    local_out, _, _ = converted
    hub.cut("data/data-000001.tar", after=20_000)  # a dropped connection mid-shard is resumed with a Range request
    keep = tmp_path / "tars"
    out = tmp_path / "hub-out"
    result = CliRunner().invoke(
        app,
        [
            "convert",
            f"hf://datasets/{hub.repo_id}/data/*.tar",
            "-o",
            str(out),
            "--workers",
            "1",
            "--keep-tars",
            str(keep),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "dalle3.parquet").read_bytes() == (local_out / "dalle3.parquet").read_bytes()
    assert (out / "rejects.jsonl").read_bytes() == (local_out / "rejects.jsonl").read_bytes()
    local_files = sorted(p.relative_to(local_out / "data") for p in (local_out / "data").rglob("*") if p.is_file())
    hub_files = sorted(p.relative_to(out / "data") for p in (out / "data").rglob("*") if p.is_file())
    assert hub_files == local_files
    assert any((r.range or "").startswith("bytes=") and r.status == 206 for r in hub.gets("data/data-000001.tar"))
    # --keep-tars kept verified copies of every shard, identical to the originals
    for tar in root.glob("*.tar"):
        assert hashlib.sha256((keep / tar.name).read_bytes()).digest() == hashlib.sha256(tar.read_bytes()).digest()


def test_hub_resume_redoes_only_missing_shards(hub_corpus, converted, tmp_path):
    root, hub = hub_corpus
    local_out, _, _ = converted
    out = tmp_path / "o"
    first = convert([f"hf://datasets/{hub.repo_id}/data/data-00000[01].tar"], out, workers=1)
    assert len(first.results) == 2
    before = len(hub.log)
    second = convert([f"hf://datasets/{hub.repo_id}/data/*.tar"], out, workers=1)
    assert second.plan.skipped == ["data-000000", "data-000001"]
    assert [r.shard_id for r in second.results] == ["data-000002"]
    shard_gets = [r for r in hub.log[before:] if r.method == "GET" and r.file and r.file.endswith(".tar")]
    assert shard_gets and {r.file for r in shard_gets} == {"data/data-000002.tar"}
    assert (out / "dalle3.parquet").read_bytes() == (local_out / "dalle3.parquet").read_bytes()
