"""`entry --mount-path` then `verify --mount-path` on a --webshart output: the index folder is checked as the
training machine will see it (under the mount path); a wrong mount path fails with the command that fixes it."""

from __future__ import annotations

from pathlib import Path

import orjson
from typer.testing import CliRunner

from dalle3_etl.cli import app
from dalle3_etl.devtools.synth import SynthSpec, write_corpus

runner = CliRunner()


def cli(*args) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})
    return result.exit_code, result.output


def test_verify_checks_a_webshart_entry_written_for_a_mount_path(tmp_path):
    shards = tmp_path / "shards"
    write_corpus(shards, SynthSpec(shards=2, per_shard=12, seed=3, image_bytes=900))
    (shards / "truth.jsonl").unlink()
    out = tmp_path / "out"
    assert cli("convert", shards, "-o", out, "--webshart", "-w", "1", "-q")[0] == 0
    mount = Path("/mnt/training/dalle3")
    assert cli("entry", out, "--mount-path", mount)[0] == 0
    entry = orjson.loads((out / "multidatabackend.json").read_bytes())[0]
    assert entry["metadata"] == str(mount / "webshart") and entry["source"] == str(shards)

    code, log = cli("verify", out, "--mount-path", mount)
    assert code == 0, log
    code, log = cli("verify", out, "--mount-path", "/mnt/elsewhere")
    assert code == 1 and "--mount-path /mnt/elsewhere" in log and "/mnt/elsewhere/webshart" in log
    code, log = cli("verify", out)  # checked for this machine: the entry names folders that are not here
    assert code == 1 and "metadata" in log
    assert cli("entry", out)[0] == 0
    code, log = cli("verify", out)
    assert code == 0, log
