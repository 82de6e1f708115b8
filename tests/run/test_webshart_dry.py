"""`convert --dry-run --webshart` refuses what `convert --webshart` refuses (exit 2, the same line, nothing
written), and runs on what it accepts."""

from __future__ import annotations

import gzip

from typer.testing import CliRunner

from dalle3_etl.cli import app
from dalle3_etl.devtools.synth import SynthSpec, write_corpus

runner = CliRunner()


def cli(*args) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})
    return result.exit_code, result.output


def test_dry_run_refuses_a_compressed_shard_like_convert(tmp_path):
    shards = tmp_path / "shards"
    write_corpus(shards, SynthSpec(shards=1, per_shard=8, seed=1, image_bytes=700))
    gz = tmp_path / "gz"
    gz.mkdir()
    (gz / "data-000000.tar.gz").write_bytes(gzip.compress((shards / "data-000000.tar").read_bytes()))
    out = tmp_path / "out"
    dry = cli("convert", gz, "-o", out, "--webshart", "--dry-run")
    real = cli("convert", gz, "-o", out, "--webshart")
    assert dry[0] == real[0] == 2
    assert "--webshart" in dry[1] and dry[1] == real[1]
    assert not out.exists()
    code, log = cli("convert", shards, "-o", out, "--webshart", "--dry-run", "-w", "1")
    assert code == 0, log
    assert not out.exists()
