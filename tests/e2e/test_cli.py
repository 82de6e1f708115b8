"""The command line through typer's CliRunner and as a real subprocess."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
from typer.testing import CliRunner

from dalle3_etl.cli import app

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("convert", "synth", "status"):
        assert command in result.output
    result = runner.invoke(app, ["convert", "--help"])
    assert result.exit_code == 0 and "--no-images" in result.output and "--workers" in result.output


def test_missing_input_is_a_usage_error_naming_it(tmp_path):
    result = runner.invoke(app, ["convert", str(tmp_path / "nope.tar"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "nope.tar" in result.output and "no such file" in result.output
    assert not (tmp_path / "o").exists()


def test_synth_then_convert_then_status(tmp_path):
    result = runner.invoke(
        app, ["synth", str(tmp_path / "in"), "--shards", "2", "--per-shard", "15", "--image-bytes", "400"]
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "o"
    result = runner.invoke(app, ["convert", str(tmp_path / "in" / "*.tar"), "-o", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "rows in parquet" in result.output and str(out) in result.output
    assert len(pd.read_parquet(out / "dalle3.parquet")) > 0
    result = runner.invoke(app, ["status", str(out)])
    assert result.exit_code == 0 and "done 2" in result.output


def test_real_subprocess_with_config_and_no_terminal(tmp_path, corpus):
    root, truth = corpus
    out = tmp_path / "o"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dalle3_etl",
            "convert",
            str(root),
            "-o",
            str(out),
            "--config",
            "config/default.toml",
            "--workers",
            "2",
            "--no-images",
        ],
        capture_output=True,
        text=True,
        cwd=__import__("pathlib").Path(__file__).parents[2],
    )
    assert proc.returncode == 0, proc.stderr
    assert "SimpleTuner-ready output" in proc.stdout
    assert len(pd.read_parquet(out / "dalle3.parquet")) == sum(1 for t in truth if t.caption is not None)


def test_output_dir_that_is_not_ours_is_refused(tmp_path, corpus):
    root, _ = corpus
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "precious.txt").write_text("keep")
    result = runner.invoke(app, ["convert", str(root), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "not empty" in result.output
    assert (tmp_path / "o" / "precious.txt").read_text() == "keep"


def test_unknown_executor_is_a_usage_error_and_writes_nothing(tmp_path, corpus):
    result = runner.invoke(app, ["convert", str(corpus[0]), "-o", str(tmp_path / "o"), "--executor", "cloud"])
    assert result.exit_code == 2, result.output
    assert "'cloud'" in result.output and "local" in result.output and "ray" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()
