"""Helpers of the extracted-folder tests (--link none, --link symlink): the CLI in process, a folder's files."""

from __future__ import annotations

import os
from pathlib import Path

from typer.testing import CliRunner

from dalle3_etl.cli import app
from dalle3_etl.devtools.synth import SynthSpec
from dalle3_etl.devtools.synth.extracted import write_extracted

runner = CliRunner()


def cli(*args) -> tuple[int, str]:
    """Exit code and output of `dalle3-etl ARGS`."""
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})
    return result.exit_code, result.output


def tree(root: Path) -> dict[str, bytes]:
    """Every file below root with its bytes; a symlink as `-> target` (never followed)."""
    got = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            got[str(path.relative_to(root))] = b"-> " + os.fsencode(os.readlink(path))
        elif path.is_file():
            got[str(path.relative_to(root))] = path.read_bytes()
    return got


def extracted(path: Path, spec: SynthSpec) -> Path:
    """A synth extracted folder (its truth file left out: it is not an input file)."""
    write_extracted(path, spec)
    (path / ".truth.jsonl").unlink()
    return path
